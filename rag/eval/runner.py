"""Run pipelines over data sets, resumably, and score what they produce.

Predictions are appended to `<out>/<name>/predictions.jsonl` after every batch (flushed and
fsynced), so an interrupted run resumes where it stopped: examples already in the file are not
run again, and a half-written last line is dropped. Code tasks run their samples' hidden tests
in the sandbox; a program that hangs or crashes counts as failed and the run goes on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from tqdm.auto import tqdm

from rag.errors import PipelineError, RagError
from rag.eval.datasets import CodeTask, QAExample
from rag.eval.metrics import mrr_at, pass_at_k, qa_scores, recall_at, stage_seconds
from rag.models import model_fingerprint
from rag.pipeline import Pipeline
from rag.state import State
from rag.storage import atomic_write_json, load_json
from rag.types import Usage
from rag.verifiers.code import run_unit_tests
from rag.verifiers.sandbox import Sandbox

P = TypeVar("P", bound=BaseModel)
Item = TypeVar("Item", QAExample, CodeTask)  # what a runner answers: each has an `id`
# Runs a pipeline over batches of inputs, yielding (batch index, states) as each batch finishes,
# in any order: in this process (`in_process`) or elsewhere (`rag.distributed.evaluation`).
BatchRunner = Callable[[Pipeline, list[list[Any]]], Iterator[tuple[int, list[State]]]]


def in_process(pipeline: Pipeline, batches: list[list[Any]]) -> Iterator[tuple[int, list[State]]]:
    for index, batch in enumerate(batches):
        yield index, pipeline.run(batch)


class QAPrediction(BaseModel):
    id: str
    answer: str
    scores: dict[str, float]
    retrieved: list[str] = Field(default_factory=list, description="doc ids of the final hits, best first")
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)


class CodePrediction(BaseModel):
    id: str
    answer: str = Field(description="the program the pipeline answered with")
    answer_passed: bool
    programs: list[str] = Field(description="every sampled program (the answer alone without samples)")
    passed: list[bool]
    statuses: list[str]
    logprobs: list[float | None] = Field(default_factory=list, description="mean per token, per program")
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def load_cache(path: Path, model: type[P]) -> dict[str, P]:
    """Predictions saved so far, by id; a torn last line (an interrupted write) is dropped."""
    done: dict[str, P] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = model.model_validate_json(line)
        except ValidationError:
            continue
        done[item.id] = item  # type: ignore[attr-defined]
    return done


def stored_scores(folder: Path, ids: Sequence[str], metric: str = "em") -> list[float]:
    """One metric of a configuration's stored QA predictions, in the order of `ids`: what a
    paired comparison of two configurations reads."""
    stored = load_cache(folder / "predictions.jsonl", QAPrediction)
    return [stored[i].scores[metric] for i in ids]


def _append(path: Path, items: Sequence[BaseModel]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for item in items:
            f.write(item.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Where two JSON-like values differ, as `path: old -> new` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where or '(whole)'}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}"]


def check_same_config(folder: Path, config: dict[str, Any]) -> None:
    """Refuse to resume predictions that another configuration produced, naming what changed."""
    path = folder / "config.json"
    if path.exists():
        changed = _differences(load_json(path), config)
        if changed:
            raise RagError(
                f"{folder} holds predictions of a different configuration (see {path}); changed: "
                + "; ".join(changed[:5]) + ". Use another output folder or delete this one"
            )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, config)


def _model_references(spec: Any) -> set[str]:
    if isinstance(spec, dict):
        found = {spec["model"]} if isinstance(spec.get("model"), str) else set()
        return found.union(*(_model_references(v) for v in spec.values()))
    if isinstance(spec, list):
        return set().union(*(_model_references(v) for v in spec))
    return set()


def pipeline_fingerprint(pipeline: Pipeline) -> dict[str, Any]:
    """The whole spec plus what identifies each model's weights: what a resumed run must match."""
    spec = pipeline.to_dict()  # an in-memory index raises here, saying how to save it
    return {"pipeline": spec,
            "models": {ref: model_fingerprint(ref) for ref in sorted(_model_references(spec))}}


def _resumed(
    pipeline: Pipeline, items: Sequence[Item], folder: Path, model: type[P],
    query: Callable[[Item], str | State], predict: Callable[[Item, State], P],
    postfix: Callable[[list[P]], dict[str, str]], batch_size: int, progress: bool,
    runner: BatchRunner,
) -> list[P]:
    """The one resumable loop of every runner: refuse another configuration's folder, skip the
    items already predicted, save each batch's predictions as it comes back (whichever `runner`
    ran it), and return the predictions in the items' order."""
    check_same_config(folder, pipeline_fingerprint(pipeline))
    cache = folder / "predictions.jsonl"
    done = load_cache(cache, model)
    todo = [item for item in items if item.id not in done]
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=folder.name,
               disable=not progress)
    batches = list(_batches(todo, batch_size))
    for index, states in runner(pipeline, [[query(item) for item in b] for b in batches]):
        batch = batches[index]
        fresh = [predict(item, state) for item, state in zip(batch, states, strict=True)]
        _append(cache, fresh)
        done.update({p.id: p for p in fresh})  # type: ignore[attr-defined]
        bar.update(len(batch))
        bar.set_postfix(postfix(list(done.values())))
    bar.close()
    return [done[item.id] for item in items]


def _mean(predictions: Sequence[Any], value: Callable[[Any], float]) -> str:
    return f"{sum(value(p) for p in predictions) / len(predictions):.3f}"


def _qa_prediction(example: QAExample, state: State) -> QAPrediction:
    answer = state.answer
    if answer is None:
        raise RagError("the pipeline writes no answer: its last stage must generate one")
    return QAPrediction(
        id=example.id, answer=answer.text, scores=qa_scores(answer.text, example.answers),
        retrieved=[h.chunk.doc_id for h in state.hits],  # in ranked order, unlike the prompt's
        stage_seconds=stage_seconds([answer.trace]), usage=answer.usage,
    )


def run_qa(
    pipeline: Pipeline, examples: Sequence[QAExample], folder: Path, batch_size: int = 16,
    progress: bool = True, runner: BatchRunner = in_process,
) -> list[QAPrediction]:
    """Answer every example (resuming from `folder`), with running EM and F1 on the bar."""
    return _resumed(
        pipeline, examples, folder, QAPrediction,
        lambda e: State(query=e.question, history=e.history) if e.history else e.question,
        _qa_prediction,
        lambda done: {"em": _mean(done, lambda p: p.scores["em"]),
                      "f1": _mean(done, lambda p: p.scores["f1"])},
        batch_size, progress, runner)


def summarize_qa(examples: Sequence[QAExample], predictions: Sequence[QAPrediction]) -> dict[str, Any]:
    """Mean EM / F1 / acc, retrieval recall of the gold document, latency and tokens per query."""
    n = len(predictions)
    summary: dict[str, Any] = {"examples": n}
    for metric in ("em", "f1", "acc"):
        summary[metric] = sum(p.scores[metric] for p in predictions) / n if n else 0.0
    golds = [e.gold_doc for e in examples]
    if n and all(golds) and any(p.retrieved for p in predictions):
        ranked = [p.retrieved for p in predictions]
        summary["recall@k"] = {k: recall_at(ranked, golds, k) for k in range(1, max(map(len, ranked)) + 1)}
        summary["mrr"] = mrr_at(ranked, golds, max(map(len, ranked)))
    stages: dict[str, float] = {}
    for p in predictions:
        for stage, seconds in p.stage_seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds / n
    summary["stage_seconds"] = stages
    summary["seconds_per_query"] = sum(stages.values())
    summary["prompt_tokens"] = sum(p.usage.prompt_tokens for p in predictions) / n if n else 0.0
    summary["completion_tokens"] = sum(p.usage.completion_tokens for p in predictions) / n if n else 0.0
    return summary


def _code_prediction(task: CodeTask, state: State, sandbox: Sandbox) -> CodePrediction:
    """Run the task's hidden tests on every sampled program and on the answer."""
    answer = state.answer
    if answer is None:
        raise RagError("the code pipeline writes no answer")
    programs, code = state.programs, answer.text
    codes = [p.code for p in programs]
    to_run = codes if code in codes else [*codes, code]
    verdicts = dict(zip(to_run, run_unit_tests(sandbox, to_run, task.test, task.entry_point)))
    return CodePrediction(
        id=task.id, answer=code, answer_passed=verdicts[code].passed, programs=codes,
        passed=[verdicts[c].passed for c in codes], statuses=[verdicts[c].status for c in codes],
        logprobs=[p.mean_logprob if p.logprob is not None else None for p in programs],
        stage_seconds=stage_seconds([answer.trace]), usage=answer.usage,
    )


def run_code(
    pipeline: Pipeline, tasks: Sequence[CodeTask], folder: Path, batch_size: int = 16,
    progress: bool = True, sandbox: Sandbox | None = None, runner: BatchRunner = in_process,
) -> list[CodePrediction]:
    """Answer every task with the pipeline (resuming from `folder`) and run the hidden tests on
    its answer and on every program it sampled, in the sandbox. The pipeline must write the
    `programs` it sampled (`extract_programs`): the programs scored are the pipeline's own."""
    if "programs" not in pipeline.writes:
        raise PipelineError(
            "a code pipeline must write `programs`: add an `extract_programs` stage after "
            "`generate` (rag.recipes.code_generation builds one); no stage of this one writes it")
    sandbox = sandbox or Sandbox()
    return _resumed(
        pipeline, tasks, folder, CodePrediction,
        lambda t: State(query=t.prompt, entry_point=t.entry_point),
        lambda task, state: _code_prediction(task, state, sandbox),
        lambda done: {"pass1": _mean(done, lambda p: p.answer_passed)},
        batch_size, progress, runner)


def summarize_code(predictions: Sequence[CodePrediction], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    n = len(predictions)
    samples = min((len(p.passed) for p in predictions), default=0)
    summary: dict[str, Any] = {"examples": n, "samples": samples,
                               "answer_pass": sum(p.answer_passed for p in predictions) / n if n else 0.0}
    for k in ks:
        if 1 <= k <= samples:
            summary[f"pass@{k}"] = sum(pass_at_k(len(p.passed), sum(p.passed), k) for p in predictions) / n
    statuses: dict[str, int] = {}
    for p in predictions:
        for status in p.statuses:
            statuses[status] = statuses.get(status, 0) + 1
    summary["statuses"] = statuses
    return summary
