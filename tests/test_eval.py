"""The evaluation harness: metrics by hand, strict data files, resumable runs, safe code runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.errors import DatasetError, PipelineError, RagError
from rag.eval.datasets import CodeTask, QAExample, humaneval, read_qa_jsonl
from rag.eval.harness import evaluate_qa
from rag.eval.metrics import accuracy, exact_match, qa_scores, token_f1
from rag.eval.runner import QAPrediction, load_cache, run_code, run_qa, summarize_code
from rag.generators.base import Generator
from rag.pipeline import Pipeline, Stage
from rag.selectors import write_demos
from rag.state import View
from rag.registry import ComponentConfig, build, register
from rag.types import Chunk, Citation, Completion, Generation, Hit, Usage
from rag.verifiers import Sandbox


def test_qa_metrics_by_hand():
    assert exact_match("The Eiffel-Tower!", ["eiffeltower"]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["Eiffel Tower"]) == 0.0
    assert token_f1("Barack Obama was president", ["Obama"]) == pytest.approx(0.4)
    assert token_f1("yes", ["no"]) == 0.0 and token_f1("no", ["no"]) == 1.0
    assert token_f1("no way", ["no"]) == 0.0  # yes/no/noanswer only count when they match exactly
    assert accuracy("It is the Eiffel Tower in Paris", ["eiffel tower", "x"]) == 1.0
    assert qa_scores("Paris", ["London", "paris"]) == {"em": 1.0, "f1": 1.0, "acc": 1.0}


def test_a_malformed_dataset_line_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "qa.jsonl"
    good = json.dumps({"id": "1", "question": "q?", "golden_answers": ["a"]})
    for bad, message in [('{"id": "2", "question": "q?", golden}', "invalid JSON"),
                         ('{"id": "2", "question": "q?", "golden_answers": []}', "golden_answers"),
                         ('{"id": "2", "golden_answers": ["a"]}', "question"),
                         (good, "duplicate id")]:
        path.write_text("\n".join([good, "", bad]) + "\n")
        with pytest.raises(DatasetError, match=rf"qa.jsonl:3: .*{message}"):
            read_qa_jsonl(path)
    path.write_text(good + "\n")
    assert read_qa_jsonl(path)[0].answers == ["a"]


@register("stage", "test_eval_answer")
class ParrotAnswer(Stage):
    """Answers with the question's last word and cites a document named after its first;
    fails on demand after `fail_after` batches, like an interrupted run."""

    reads = ("query",)
    writes = ("hits", "sources", "generation", "text")
    batches = 0
    fail_after: int | None = None

    class Config(ComponentConfig):
        pass

    def run(self, batch: list[View]) -> list[dict]:
        if ParrotAnswer.fail_after is not None and ParrotAnswer.batches >= ParrotAnswer.fail_after:
            raise KeyboardInterrupt
        ParrotAnswer.batches += 1
        out = []
        for s in batch:
            words = s.query.rstrip("?").split()
            hits = [Hit(chunk=Chunk(id=f"{doc}#0", doc_id=doc, text=doc, start=0, end=len(doc)),
                        score=1.0 - rank, retriever="parrot") for rank, doc in enumerate([words[0], "other"])]
            # The prompt shows the best passage last: recall must follow the hits' rank, not this.
            sources = [Citation(number=i + 1, chunk_id=h.chunk.id, doc_id=h.chunk.doc_id)
                       for i, h in enumerate(reversed(hits))]
            generation = Generation(completions=[Completion(text=words[-1])],
                                    usage=Usage(prompt_tokens=len(words)))
            out.append({"hits": hits, "sources": sources, "generation": generation,
                        "text": words[-1]})
        return out


EXAMPLES = [QAExample(id=str(i), question=f"d{i} what is item {i if i % 3 else 'x'}?", answers=[str(i)],
                      gold_doc=f"d{i}" if i % 5 else "other") for i in range(10)]


def test_a_resumed_run_gives_the_same_results_as_an_uninterrupted_one(tmp_path):
    pipeline = Pipeline([{"type": "test_eval_answer"}])
    whole = run_qa(pipeline, EXAMPLES, tmp_path / "whole", batch_size=3, progress=False)
    ParrotAnswer.batches, ParrotAnswer.fail_after = 0, 2
    with pytest.raises(KeyboardInterrupt):
        run_qa(pipeline, EXAMPLES, tmp_path / "resumed", batch_size=3, progress=False)
    cache = tmp_path / "resumed" / "predictions.jsonl"
    assert len(load_cache(cache, QAPrediction)) == 6
    with cache.open("a") as f:
        f.write('{"id": "9", "answer": "tor')  # a write torn by the interruption
    ParrotAnswer.batches, ParrotAnswer.fail_after = 0, None
    resumed = run_qa(pipeline, EXAMPLES, tmp_path / "resumed", batch_size=3, progress=False)
    assert ParrotAnswer.batches == 2  # only the 4 missing examples ran
    assert [p.model_dump(exclude={"stage_seconds"}) for p in resumed] == \
        [p.model_dump(exclude={"stage_seconds"}) for p in whole]
    assert sum(p.scores["em"] for p in whole) == 6  # every example whose number is not a multiple of 3


def test_report_has_results_table_and_plots(tmp_path):
    pipelines = {"parrot": Pipeline([{"type": "test_eval_answer"}]),
                 "parrot-again": Pipeline([{"type": "test_eval_answer"}])}
    summaries = evaluate_qa(pipelines, EXAMPLES, tmp_path, dataset="toy", progress=False)
    assert summaries["parrot"]["em"] == pytest.approx(0.6)
    assert summaries["parrot"]["recall@k"] == {1: pytest.approx(0.8), 2: pytest.approx(1.0)}
    assert summaries["parrot"]["prompt_tokens"] == pytest.approx(5.0)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["configurations"]) == {"parrot", "parrot-again"}
    report = (tmp_path / "report.md").read_text()
    assert "| parrot | 0.6 |" in report and "quality.png" in report
    for png in ("quality.png", "latency.png", "recall.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_rag_eval_command_compares_pipeline_files(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"id": e.id, "question": e.question, "golden_answers": e.answers})
                              for e in EXAMPLES) + "\n")
    for name in ("a", "b"):
        Pipeline([{"type": "test_eval_answer"}]).save(tmp_path / f"{name}.yaml")
    args = ["eval", "--dataset", str(data), "--out", str(tmp_path / "out"), "--limit", "5",
            "--pipeline", str(tmp_path / "a.yaml"), "--pipeline", str(tmp_path / "b.yaml")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "a: {" in result.output and (tmp_path / "out" / "report.md").exists()
    bad = CliRunner().invoke(app, ["eval", "--dataset", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path),
                                   "--pipeline", str(tmp_path / "a.yaml")])
    assert bad.exit_code == 2 and "no QA data set" in bad.output


@register("generator", "test_scripted_coder")
class ScriptedCoder(Generator):
    """Returns fixed replies: a right program, one that hangs, one that kills its process."""

    REPLIES = ["```python\ndef inc(x):\n    return x + 1\n```",
               "```python\ndef inc(x):\n    while True:\n        pass\n```",
               "```python\nimport os\nos._exit(1)\n```"]

    def generate(self, prompts: Sequence, params=None) -> list[Generation]:
        return [Generation(completions=[Completion(text=r) for r in self.REPLIES], usage=Usage())
                for _ in prompts]


INC = CodeTask(id="inc", prompt='def inc(x):\n    """Add one."""\n', entry_point="inc",
               test="def check(candidate):\n    assert candidate(1) == 2\n")


def test_hanging_and_crashing_programs_count_as_failures_and_the_run_goes_on(tmp_path):
    tasks = [INC, INC.model_copy(update={"id": "inc2"})]
    pipeline = Pipeline([{"type": "code_prompt"},
                         {"type": "generate", "generator": {"type": "test_scripted_coder"}},
                         {"type": "extract_programs"}, {"type": "pick", "method": "first"}])
    predictions = run_code(pipeline, tasks, tmp_path, sandbox=Sandbox(timeout_s=3, cpu_seconds=1),
                           progress=False)
    assert [p.passed for p in predictions] == [[True, False, False]] * 2
    assert all(p.answer_passed for p in predictions)
    assert predictions[0].statuses[1] == "timeout" and predictions[0].statuses[2] == "error"
    summary = summarize_code(predictions)
    assert summary["pass@1"] == pytest.approx(1 / 3) and summary["statuses"]["ok"] == 2
    assert summary["answer_pass"] == 1.0


def test_predictions_of_another_configuration_are_not_resumed(tmp_path):
    run_qa(Pipeline([{"type": "test_eval_answer"}]), EXAMPLES[:2], tmp_path, progress=False)
    other = Pipeline([{"type": "test_eval_answer"}], batch_size=7)
    with pytest.raises(RagError, match="different configuration.*batch_size: 32 -> 7"):
        run_qa(other, EXAMPLES[:2], tmp_path, progress=False)


@register("generator", "test_prompt_recorder")
class PromptRecorder(Generator):
    """Answers every task with the right program for `inc`, and keeps the prompts it was given."""

    class Config(ComponentConfig):
        model: str = "tiny"  # fingerprinted like a real model

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.prompts: list = []

    def generate(self, prompts: Sequence, params=None) -> list[Generation]:
        self.prompts += list(prompts)
        return [Generation(completions=[Completion(text=ScriptedCoder.REPLIES[0])], usage=Usage())
                for _ in prompts]


def _code_pipeline(pool: Path, k: int = 2, model: str = "tiny", system_order: str = "similar_last"):
    return Pipeline([{"type": "select", "selector": {"type": "bm25", "pool": str(pool)}, "k": k},
                     {"type": "code_prompt", "order": system_order},
                     {"type": "generate", "generator": {"type": "test_prompt_recorder", "model": model}},
                     {"type": "extract_programs"}])


def test_code_runs_resume_and_refuse_a_pipeline_that_writes_no_programs(tmp_path):
    recorder = build("generator", {"type": "test_prompt_recorder"})
    unextracted = Pipeline([{"type": "code_prompt"},
                            {"type": "generate", "generator": {"type": "test_prompt_recorder"}}])
    with pytest.raises(PipelineError, match="must write `programs`.*extract_programs"):
        run_code(unextracted, [INC], tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # refused before anything ran or was written
    pipeline = Pipeline([*unextracted.stages, {"type": "extract_programs"}])
    recorder.prompts = []
    run_code(pipeline, [INC], tmp_path, progress=False)
    both = run_code(pipeline, [INC, INC.model_copy(update={"id": "inc2"})], tmp_path,
                    progress=False)
    assert len(recorder.prompts) == 2  # the second run asked only for the new task
    assert [p.id for p in both] == ["inc", "inc2"] and all(p.answer_passed for p in both)
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 2


def test_code_demonstrations_come_from_the_other_problems_as_solved_turns(tmp_path):
    pool = humaneval(12)
    tasks = pool[:4]
    pool_file = write_demos(tmp_path / "pool.jsonl", [t.as_demo() for t in pool])
    pipeline = _code_pipeline(pool_file)
    recorder = build("generator", {"type": "test_prompt_recorder"})
    recorder.prompts = []
    run_code(pipeline, tasks, tmp_path / "bm25", progress=False)
    by_input = {t.prompt: t for t in pool}
    for task, prompt in zip(tasks, recorder.prompts):
        roles = [m.role for m in prompt.messages]
        assert roles == ["user", "assistant", "user", "assistant", "user"]
        assert task.prompt in prompt.messages[-1].content
        shown = [by_input[t] for t in by_input if t in prompt.messages[0].content or t in prompt.messages[2].content]
        assert len(shown) == 2 and task not in shown  # never its own solution
        best = shown[0] if shown[0].prompt in prompt.messages[2].content else shown[1]
        assert prompt.messages[3].content == f"```python\n{best.prompt}{best.canonical_solution}```"
    # Another k, prompt layout or model is another run: refused, naming the change.
    for changed, named in [(_code_pipeline(pool_file, k=3), "stages[0].k: 2 -> 3"),
                           (_code_pipeline(pool_file, system_order="as_given"), "stages[1].order"),
                           (_code_pipeline(pool_file, model="encoder"), "model")]:
        with pytest.raises(RagError, match="different configuration") as err:
            run_code(changed, tasks, tmp_path / "bm25", progress=False)
        assert named in str(err.value)


def test_a_benchmark_part_run_alone_keeps_the_other_parts_with_their_provenance(tmp_path):
    from rag.eval.report import write_results

    write_results("bench", {"qa": "300 questions", "code": "40 problems", "retired": "gone"},
                  {"qa": [{"em": 0.5}], "code": [{"pass@1": 0.7}]}, folder=tmp_path,
                  summary={"qa_em": 0.5, "code_pass1": 0.7},
                  summary_sections={"qa_em": ["qa"], "code_pass1": ["code"]})
    first = json.loads((tmp_path / "bench.json").read_text())
    write_results("bench", {"code": "40 problems, new compressor"}, {"code": [{"pass@1": 0.75}]},
                  folder=tmp_path, keep_other_sections=True, summary={"code_pass1": 0.75})
    merged = json.loads((tmp_path / "bench.json").read_text())
    assert merged["results"] == {"qa": [{"em": 0.5}], "code": [{"pass@1": 0.75}]}
    assert merged["summary"] == {"qa_em": 0.5, "code_pass1": 0.75}  # the kept part's key stays
    assert merged["setup"] == {"qa": "300 questions", "code": "40 problems, new compressor"}
    assert merged["sections"]["qa"]["date"] == first["date"]
    assert merged["summary_sources"]["qa_em"] == first["summary_sources"]["qa_em"]
    assert merged["summary_sources"]["code_pass1"]["sections"] == ["code"]
    write_results("bench", {"code": "x"}, {"code": [{"pass@1": 0.1}]}, folder=tmp_path)
    assert "qa" not in json.loads((tmp_path / "bench.json").read_text())["results"]  # default: replace


def test_a_rerun_drops_the_summary_keys_of_its_sections_that_it_did_not_recompute(tmp_path):
    from rag.eval.report import write_results

    path = tmp_path / "bench.json"
    write_results("bench", {}, {"qa": [{"em": 0.5}], "code": [{"pass@1": 0.7}]}, folder=tmp_path,
                  summary={"qa_em": 0.5, "best": "code"})  # sections unnamed: both of this run
    write_results("bench", {}, {"code": [{"pass@1": 0.75}]}, folder=tmp_path,
                  keep_other_sections=True, summary={"code_pass1": 0.75})
    record = json.loads(path.read_text())
    assert record["summary"] == {"code_pass1": 0.75}  # qa_em and best may have read old code rows
    assert record["summary_sources"]["code_pass1"]["sections"] == ["code"]
    record |= {"summary": {"old": 1}}  # a file from before sources: its key's run is unknown
    del record["summary_sources"]
    path.write_text(json.dumps(record))
    write_results("bench", {}, {"qa": [{"em": 0.6}]}, folder=tmp_path, keep_other_sections=True)
    assert json.loads(path.read_text())["summary"] == {}


def test_every_results_file_with_a_summary_names_each_keys_run_and_sections():
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        if "summary" in record:
            sources = record.get("summary_sources", {})
            assert set(sources) == set(record["summary"]), path.name
            results = record["results"]  # one table (a list) has no sections to name
            sections = set(results) if isinstance(results, dict) else set()
            for key, source in sources.items():
                assert {"commit", "command"} <= set(source), (path.name, key)
                assert set(source.get("sections", [])) <= sections, (path.name, key)


def test_rag_eval_humaneval_runs_code_pipeline_files(tmp_path):
    pipeline = Pipeline([{"type": "code_prompt"},
                         {"type": "generate", "generator": {"type": "test_prompt_recorder"}},
                         {"type": "extract_programs"}])
    pipeline.save(tmp_path / "recorded.yaml")
    out = tmp_path / "he"
    result = CliRunner().invoke(app, ["eval", "--dataset", "humaneval", "--limit", "3",
                                      "--pipeline", str(tmp_path / "recorded.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "recorded: {" in result.output and "'answer_pass': 0.0" in result.output
    saved = json.loads((out / "recorded" / "config.json").read_text())
    assert saved["pipeline"] == pipeline.to_dict() and "tiny" in saved["models"]
