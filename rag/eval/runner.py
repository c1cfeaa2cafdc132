"""Run pipelines over data sets, resumably, and score what they produce.

Predictions are appended to `<out>/<name>/predictions.jsonl` after every batch (flushed and
fsynced), so an interrupted run resumes where it stopped: examples already in the file are not
run again, and a half-written last line is dropped. Code tasks run their samples' hidden tests
in the sandbox; a program that hangs or crashes counts as failed and the run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from tqdm.auto import tqdm

from rag.errors import RagError
from rag.eval.datasets import CodeTask, QAExample
from rag.eval.metrics import mrr_at, pass_at_k, qa_scores, recall_at, stage_seconds
from rag.generators.base import Generator
from rag.pipeline import Pipeline
from rag.storage import atomic_write_json, load_json
from rag.selectors.base import Selector
from rag.types import Demo, SamplingParams, Usage
from rag.verifiers.code import program_for, run_unit_tests, solve_prompt
from rag.verifiers.sandbox import Sandbox

P = TypeVar("P", bound=BaseModel)


class QAPrediction(BaseModel):
    id: str
    answer: str
    scores: dict[str, float]
    retrieved: list[str] = Field(default_factory=list, description="doc ids of the final hits, best first")
    stage_seconds: dict[str, float] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)


class CodePrediction(BaseModel):
    id: str
    programs: list[str]
    passed: list[bool]
    statuses: list[str]
    logprobs: list[float | None] = Field(default_factory=list, description="mean per token, per program")


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


def _append(path: Path, items: Sequence[BaseModel]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for item in items:
            f.write(item.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_same_config(folder: Path, config: dict[str, Any]) -> None:
    """Refuse to resume predictions that another configuration produced."""
    path = folder / "config.json"
    if path.exists() and load_json(path) != config:
        raise RagError(
            f"{folder} holds predictions of a different configuration (see {path}); "
            "use another output folder or delete this one"
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, config)


def _pipeline_config(pipeline: Pipeline) -> dict[str, Any]:
    try:
        return pipeline.to_dict()
    except RagError:  # an in-memory index has no spec to record: describe it by its stages
        return {"stages": [stage.name for stage in pipeline.stages]}


def run_qa(
    pipeline: Pipeline, examples: Sequence[QAExample], folder: Path, batch_size: int = 16,
    progress: bool = True,
) -> list[QAPrediction]:
    """Answer every example (resuming from `folder`), with running EM and F1 on the bar."""
    check_same_config(folder, _pipeline_config(pipeline))
    cache = folder / "predictions.jsonl"
    done = load_cache(cache, QAPrediction)
    todo = [e for e in examples if e.id not in done]
    bar = tqdm(total=len(examples), initial=len(examples) - len(todo), desc=folder.name,
               disable=not progress)
    for batch in _batches(todo, batch_size):
        states = pipeline.run([e.question for e in batch])
        fresh = []
        for example, state in zip(batch, states, strict=True):
            answer = state.answer
            if answer is None:
                raise RagError("the pipeline writes no answer: its last stage must generate one")
            fresh.append(QAPrediction(
                id=example.id, answer=answer.text, scores=qa_scores(answer.text, example.answers),
                retrieved=[h.chunk.doc_id for h in state.hits],  # in ranked order, unlike the prompt's
                stage_seconds=stage_seconds([answer.trace]), usage=answer.usage,
            ))
        _append(cache, fresh)
        done.update({p.id: p for p in fresh})
        bar.update(len(batch))
        scored = list(done.values())
        bar.set_postfix(em=f"{sum(p.scores['em'] for p in scored) / len(scored):.3f}",
                        f1=f"{sum(p.scores['f1'] for p in scored) / len(scored):.3f}")
    bar.close()
    return [done[e.id] for e in examples]


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


def leave_one_out_demos(selector: Selector, tasks: Sequence[CodeTask], pool: Sequence[CodeTask],
                        shots: int) -> dict[str, list[Demo]]:
    """Each task's `shots` demonstrations chosen from the other solved tasks of `pool`.

    Selectors never return a pool entry with the query's own input, so a task is never its
    own demonstration even when it is in the pool.
    """
    selector.fit([t.as_demo() for t in pool])
    return {t.id: chosen for t, chosen in zip(tasks, selector.select([t.prompt for t in tasks], shots))}


def run_code(
    generator: Generator, tasks: Sequence[CodeTask], folder: Path, samples: int = 1,
    temperature: float = 0.0, max_tokens: int = 384, sandbox: Sandbox | None = None,
    batch_size: int = 16, progress: bool = True, demos: Mapping[str, Sequence[Demo]] | None = None,
) -> list[CodePrediction]:
    """Sample programs per task and run each task's hidden tests on them in the sandbox.

    `demos` gives solved demonstrations per task id, shown as earlier turns of the chat.
    """
    sandbox = sandbox or Sandbox()
    demos = demos or {}
    check_same_config(folder, {"generator": generator.model_name, "samples": samples,
                               "temperature": temperature, "max_tokens": max_tokens,
                               "demos": {t: [d.id for d in ds] for t, ds in sorted(demos.items())}})
    cache = folder / "predictions.jsonl"
    done = load_cache(cache, CodePrediction)
    todo = [t for t in tasks if t.id not in done]
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, n=samples, seed=0)
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc=folder.name, disable=not progress)
    for batch in _batches(todo, batch_size):
        prompts = [solve_prompt(t.prompt, demos.get(t.id, ())) for t in batch]
        fresh = []
        for task, generation in zip(batch, generator.generate(prompts, params), strict=True):
            programs = [program_for(task.prompt, c.text, task.entry_point) for c in generation.completions]
            results = run_unit_tests(sandbox, programs, task.test, task.entry_point)
            fresh.append(CodePrediction(
                id=task.id, programs=programs, passed=[r.passed for r in results],
                statuses=[r.status for r in results],
                logprobs=[c.logprob / max(len(c.token_ids), 1) if c.logprob is not None else None
                          for c in generation.completions],
            ))
        _append(cache, fresh)
        done.update({p.id: p for p in fresh})
        bar.update(len(batch))
        scored = list(done.values())
        bar.set_postfix(pass1=f"{sum(pass_at_k(len(p.passed), sum(p.passed), 1) for p in scored) / len(scored):.3f}")
    bar.close()
    return [done[t.id] for t in tasks]


def summarize_code(predictions: Sequence[CodePrediction], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    n = len(predictions)
    samples = min((len(p.passed) for p in predictions), default=0)
    summary: dict[str, Any] = {"examples": n, "samples": samples}
    for k in ks:
        if 1 <= k <= samples:
            summary[f"pass@{k}"] = sum(pass_at_k(len(p.passed), sum(p.passed), k) for p in predictions) / n
    statuses: dict[str, int] = {}
    for p in predictions:
        for status in p.statuses:
            statuses[status] = statuses.get(status, 0) + 1
    summary["statuses"] = statuses
    return summary
