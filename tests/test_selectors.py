"""Demonstration selectors: the pool rules, the prompt builder, LLM feedback and training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.eval.datasets import humaneval, vital_topics
from rag.generators.base import Generator
from rag.generators.stage import Generate
from rag.pipeline import Pipeline, run_stage
from rag.state import State
from rag.registry import build
from rag.selectors import (DemoTemplate, SelectorError, load_selector, predict_labels,
                           train_selector)
from rag.selectors.feedback import FeedbackScorer
from rag.selectors.learned import mine_candidates
from rag.selectors.stage import IclPrompt, Select
from rag.selectors.training import Group, TrainSettings, mean_loss, split_by_score
from rag.selectors.unsupervised import BM25Selector
from rag.types import Demo, SamplingParams

TEMPLATE = DemoTemplate(instruction="Classify the topic of each text.", input_prefix="Text: ",
                        output_prefix="\nTopic:")
UNSUPERVISED = ["random", "bm25", "knn", "mmr"]


@pytest.fixture(scope="module")
def topics() -> list[Demo]:
    return vital_topics(max_chars=200, seed=0)


@pytest.fixture(scope="module")
def pool(topics: list[Demo]) -> list[Demo]:
    return topics[:400]


@pytest.mark.parametrize("name", [*UNSUPERVISED, "se2"])
def test_selectors_never_return_the_query_and_give_k(name: str, pool: list[Demo]) -> None:
    selector = build("selector", name).fit(pool)
    queries = [d.input for d in pool[:5]]  # each query is itself in the pool
    for query, chosen in zip(queries, selector.select(queries, 4)):
        assert len(chosen) == 4 and len({d.id for d in chosen}) == 4
        assert all(d.input != query for d in chosen)


@pytest.mark.parametrize("name", ["random", "bm25", "knn"])
def test_ranked_selectors_return_best_first(name: str, pool: list[Demo]) -> None:
    (chosen,) = build("selector", name).fit(pool).select([pool[0].input], 5)
    scores = [d.score for d in chosen]
    assert scores == sorted(scores, reverse=True)


def test_empty_pool_and_too_large_k_are_clear_errors(pool: list[Demo]) -> None:
    with pytest.raises(SelectorError, match="pool is empty"):
        build("selector", "bm25").fit([])
    with pytest.raises(SelectorError, match="no pool"):
        build("selector", "bm25").select(["a query"], 1)
    small = build("selector", "bm25").fit(pool[:3])
    with pytest.raises(SelectorError, match="pool offers 2"):  # the query's own entry is left out
        small.select([pool[0].input], 3)
    assert len(small.select(["something else"], 3)[0]) == 3


def test_random_is_seeded_per_query_not_per_batch(pool: list[Demo]) -> None:
    a = build("selector", {"type": "random", "seed": 1}).fit(pool)
    alone = a.select([pool[7].input], 4)[0]
    batched = a.select([pool[3].input, pool[7].input], 4)[1]
    other_seed = build("selector", {"type": "random", "seed": 2}).fit(pool).select([pool[7].input], 4)
    assert [d.id for d in alone] == [d.id for d in batched] != [d.id for d in other_seed[0]]


def test_mmr_trades_relevance_for_diversity(pool: list[Demo]) -> None:
    knn = build("selector", "knn").fit(pool)
    pure = build("selector", {"type": "mmr", "relevance_weight": 1.0}).fit(pool)
    diverse = build("selector", {"type": "mmr", "relevance_weight": 0.3}).fit(pool)
    queries = [d.input for d in pool[:20]]

    def redundancy(selector: object, chosen: list[Demo]) -> float:
        v = knn.vectors[[next(i for i, p in enumerate(pool) if p.id == d.id) for d in chosen]]
        sims = v @ v.T
        return float(sims[np.triu_indices(len(chosen), 1)].mean())

    for q, a, b in zip(queries, knn.select(queries, 4), pure.select(queries, 4)):
        assert [d.id for d in a] == [d.id for d in b]  # λ = 1 is kNN
    mean = lambda sel: np.mean([redundancy(sel, c) for c in sel.select(queries, 4)])  # noqa: E731
    assert mean(diverse) < mean(knn)


def test_prompt_puts_the_best_last_and_drops_the_least_relevant_to_fit(pool: list[Demo]) -> None:
    demos = pool[:4]  # ranked: pool[0] is the most relevant
    stage = IclPrompt(template=TEMPLATE)
    text = stage.prompt(demos, "a query").text
    assert text.startswith(TEMPLATE.instruction)
    assert text.index(demos[0].input) > text.index(demos[3].input)  # best next to the query
    assert text.endswith("Text: a query\nTopic:")
    full = stage._tokens(stage.prompt(demos, "a query"))
    budget = IclPrompt(template=TEMPLATE, max_prompt_tokens=full - 1)
    s = State(query="a query", demos=demos)
    info = run_stage(budget, [s])
    assert info == [{"demos": 3, "dropped": 1}]
    assert demos[3].input not in s.prompt.text and demos[0].input in s.prompt.text
    chat = IclPrompt(template=TEMPLATE, style="chat").prompt(demos[:2], "q")
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert chat.messages[-2].content == demos[0].output


def test_labels_are_scored_as_what_the_icl_prompt_is_followed_by(pool: list[Demo]) -> None:
    stage = IclPrompt(template=TEMPLATE)
    demos, labels = pool[:3], sorted({d.output for d in pool})
    prompt = stage.prompt(demos, "a query").text
    asked: list[list[str]] = []

    def logprobs(options: list[str]) -> list[list[float]]:  # prefers the third label
        asked.append(options)
        return [[float(o == TEMPLATE.answer(labels[2])) for o in options]]

    assert predict_labels(logprobs, TEMPLATE, labels) == [labels[2]]
    tokenizer = build("generator", {"type": "transformers", "model": "tiny"}).tokenizer
    for label, option in zip(labels, asked[0], strict=True):
        answered = Demo(id="q", input="a query", output=label)
        # the ICL prompt continued by the option is that prompt with the query answered as a
        # demonstration: the template's leading space included, tokenized as in a demonstration
        assert stage.prompt([answered, *demos], "next").text.startswith(prompt + option)
        ids = tokenizer.encode(prompt + option, add_special_tokens=False)
        assert ids[len(tokenizer.encode(prompt, add_special_tokens=False))] == \
            tokenizer.encode(option, add_special_tokens=False)[0]


def test_select_and_icl_prompt_in_a_pipeline(pool: list[Demo], vllm_tiny: Generator) -> None:
    pipeline = Pipeline([Select(build("selector", "bm25").fit(pool), k=2), IclPrompt(template=TEMPLATE),
                         Generate(vllm_tiny, SamplingParams(max_tokens=4))])
    states = pipeline.run([pool[400 - 1].input + " extra", "The Mona Lisa is a painting."])
    assert all(len(s.demos) == 2 and s.answer is not None for s in states)
    assert all(s.prompt.text.count("\nTopic:") == 3 for s in states)


def test_epr_split_on_a_hand_checked_case() -> None:
    scores = [-3.2, -0.5, -7.0, -1.1, -9.9, -0.5]
    best, worst = split_by_score(scores, positives=2, negatives=2)
    assert best == [1, 5]  # the two highest, tie kept in candidate order
    assert worst == [4, 2]  # the two lowest, lowest first
    assert split_by_score([1.0, 2.0, 3.0], positives=2, negatives=5) == ([2, 1], [0])


class Counting(Generator):
    """Delegates to a real generator and counts the scoring passes it asks for."""

    def __init__(self, inner: Generator) -> None:
        self.inner, self.config, self.calls = inner, inner.config, 0

    def spec(self) -> dict:
        return self.inner.spec()

    def score(self, prompts, continuations):  # type: ignore[no-untyped-def]
        self.calls += len(prompts)
        return self.inner.score(prompts, continuations)


def test_feedback_is_log_p_of_the_output_and_resumes_from_cache(
    pool: list[Demo], vllm_tiny: Generator, tmp_path: Path
) -> None:
    anchor, candidates = pool[0], pool[1:4]
    counting = Counting(vllm_tiny)
    scorer = FeedbackScorer(counting, TEMPLATE, cache=tmp_path / "scores.jsonl")
    (scores,) = scorer.score([anchor], [candidates[:2]])
    expected = [sum(lp) for lp in vllm_tiny.score(
        [TEMPLATE.plain([c], anchor.input) for c in candidates[:2]], [" " + anchor.output] * 2)]
    assert scores == pytest.approx(expected, abs=1e-4)
    again = FeedbackScorer(counting, TEMPLATE, cache=tmp_path / "scores.jsonl")
    assert again.score([anchor], [candidates])[0][:2] == pytest.approx(scores)
    assert counting.calls == 3  # two, then only the one not yet cached
    mean = FeedbackScorer(counting, TEMPLATE, reduction="mean", cache=tmp_path / "scores.jsonl")
    mean.score([anchor], [candidates])
    assert counting.calls == 3  # another reduction reads the same cached log-probs


@pytest.fixture(scope="module")
def feedback(topics: list[Demo], pool: list[Demo], vllm_tiny: Generator,
             tmp_path_factory: pytest.TempPathFactory) -> dict:
    """LLM scores of 8 BM25 candidates for 64 training and 16 held-out anchors (real data)."""
    anchors, held_out = topics[400:464], topics[464:480]
    bm25 = BM25Selector().fit(pool)
    work = tmp_path_factory.mktemp("feedback")
    scorer = FeedbackScorer(vllm_tiny, TEMPLATE, cache=work / "scores.jsonl")
    mined = mine_candidates(bm25, pool, anchors + held_out, 8)
    scores = scorer.score(anchors + held_out, mined)
    return {"anchors": anchors, "held_out": held_out, "mined": mined, "scores": scores,
            "cache": work / "scores.jsonl", "work": work}


def test_epr_training_lowers_the_loss_and_learns_the_llm_preferences(
    feedback: dict, pool: list[Demo], vllm_tiny: Generator
) -> None:
    out = feedback["work"] / "epr"
    trained = train_selector("epr", pool, feedback["anchors"], vllm_tiny, out, template=TEMPLATE,
                             candidates=8, settings={"epochs": 3, "batch_size": 8},
                             scores_cache=feedback["cache"], progress=False)
    assert trained.llm_scored == 0  # every score came from the cache
    groups = [Group(query=a.input, candidates=[c.input for c in m], scores=s) for a, m, s in
              zip(feedback["anchors"], feedback["mined"], feedback["scores"])]
    settings = TrainSettings(batch_size=8)
    assert mean_loss(trained.report.model, groups, settings) < mean_loss("encoder", groups, settings)

    def agreement(selector_spec: dict) -> float:
        """How often the encoder ranks an LLM-preferred candidate above a dispreferred one."""
        encoder = build("encoder", selector_spec)
        n = len(feedback["anchors"])
        right = total = 0
        for a, m, s in zip(feedback["held_out"], feedback["mined"][n:], feedback["scores"][n:]):
            sims = encoder.encode_documents([c.input for c in m]) @ encoder.encode_queries([a.input])[0]
            best, worst = split_by_score(s, positives=3, negatives=3)
            for i in best:
                for j in worst:
                    right += sims[i] > sims[j]
                    total += 1
        return right / total

    untrained = agreement({"type": "sentence_transformers"})
    learned = agreement({"type": "sentence_transformers", "model": trained.report.model})
    assert learned > untrained
    selector = load_selector(out).fit(pool)
    assert selector.name == "knn" and len(selector.select([pool[0].input], 3)[0]) == 3


def test_llm_r_and_se2_train_and_load(feedback: dict, pool: list[Demo], vllm_tiny: Generator) -> None:
    common = dict(template=TEMPLATE, candidates=8, settings={"epochs": 1, "batch_size": 8},
                  scores_cache=feedback["cache"], progress=False)
    llm_r = train_selector("llm-r", pool, feedback["anchors"][:16], vllm_tiny,
                           feedback["work"] / "llm-r", **common)
    assert llm_r.llm_scored == 0 and (feedback["work"] / "llm-r" / "reward-1").is_dir()
    se2 = train_selector("se2", pool, feedback["anchors"][:4], vllm_tiny, feedback["work"] / "se2",
                         shots=2, **common)
    assert se2.llm_scored == 4 * 7  # step 1 from the cache; step 2 in context of the first pick
    selector = load_selector(feedback["work"] / "se2").fit(pool)
    (chosen,) = selector.select([pool[0].input], 3)
    assert selector.name == "se2" and len({d.id for d in chosen}) == 3


def test_lail_scores_the_ground_truth_program_of_humaneval_tasks(
    vllm_tiny: Generator, tmp_path: Path
) -> None:
    tasks = [Demo(id=t.id, input=t.prompt, output=t.canonical_solution) for t in humaneval(30)]
    code = DemoTemplate(instruction="Complete each Python function.", input_prefix="",
                        output_prefix="", output_lead="")
    trained = train_selector("lail", tasks, tasks[:6], vllm_tiny, tmp_path, template=code,
                             candidates=3, settings={"epochs": 1, "batch_size": 6}, progress=False)
    assert trained.llm_scored == 6 * 3
    cache = FeedbackScorer(vllm_tiny, code, cache=tmp_path / "llm_scores.jsonl")
    anchor, candidate = tasks[0], next(t for t in tasks[1:] if t.id != tasks[0].id)
    (direct,) = vllm_tiny.score([code.plain([candidate], anchor.input)], [anchor.output])
    (scored,) = cache.score([anchor], [[candidate]])
    assert scored == pytest.approx([sum(direct)], abs=1e-3)  # log P(program | example, task)
    (chosen,) = load_selector(tmp_path).fit(tasks).select([tasks[0].input], 2)
    assert tasks[0].id not in {d.id for d in chosen}  # leave-one-out over one pool


class Preferring(Generator):
    """A fake target LLM whose log P(program | example, task) depends only on the example's
    length: `sign` +1 favours long examples, -1 short ones. Records the prompts it scored."""

    def __init__(self, sign: int) -> None:
        self.sign, self.prompts = sign, []

    def spec(self) -> dict:
        return {"type": "preferring", "sign": self.sign}

    def score(self, prompts, continuations):  # type: ignore[no-untyped-def]
        self.prompts += list(prompts)
        return [[self.sign * len(p) / 1000.0] for p in prompts]


def test_lail_feedback_comes_from_the_generator_it_is_given(tmp_path: Path) -> None:
    tasks = [Demo(id=t.id, input=t.prompt, output=t.canonical_solution) for t in humaneval(20)]
    code = DemoTemplate(instruction="Complete each Python function.", input_prefix="",
                        output_prefix="", output_lead="")
    anchors, shared = tasks[:4], tmp_path / "llm_scores.jsonl"
    mined = mine_candidates(BM25Selector().fit(tasks), tasks, anchors, 3)
    likes_long, likes_short = Preferring(+1), Preferring(-1)
    long_scores = FeedbackScorer(likes_long, code, cache=shared).score(anchors, mined)
    short_scores = FeedbackScorer(likes_short, code, cache=shared).score(anchors, mined)
    assert len(likes_short.prompts) == 4 * 3  # the first generator's cached scores are not its own
    for cands, high, low in zip(mined, long_scores, short_scores):
        lengths = [len(c.input) + len(c.output) for c in cands]
        assert int(np.argmax(high)) == int(np.argmax(lengths))
        assert int(np.argmax(low)) == int(np.argmin(lengths))
    for fake in (Preferring(+1), Preferring(-1)):
        trained = train_selector("lail", tasks, anchors, fake, tmp_path / f"lail{fake.sign}",
                                 template=code, candidates=3, scores_cache=tmp_path / "fresh.jsonl",
                                 settings={"epochs": 1, "batch_size": 4}, progress=False)
        assert trained.llm_scored == len(fake.prompts) == 4 * 3
        assert all(p.startswith(code.instruction) for p in fake.prompts)


def test_train_selector_command_resumes(feedback: dict, pool: list[Demo], vllm_tiny: Generator,
                                        tmp_path: Path) -> None:
    def write(path: Path, demos: list[Demo]) -> Path:
        path.write_text("".join(d.model_dump_json(include={"id", "input", "output"}) + "\n"
                                for d in demos))
        return path

    args = ["train-selector", "epr", "--pool", str(write(tmp_path / "pool.jsonl", pool)),
            "--train", str(write(tmp_path / "train.jsonl", feedback["anchors"][:8])),
            "--out", str(tmp_path / "run"), "--candidates", "4", "--epochs", "1",
            "--instruction", TEMPLATE.instruction, "--input-prefix", "Text: ",
            "--output-prefix", "\\nTopic:"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout[first.stdout.index("{"):])["llm_scored"] == 32
    second = CliRunner().invoke(app, args)
    assert json.loads(second.stdout[second.stdout.index("{"):])["llm_scored"] == 0
    spec = json.loads((tmp_path / "run" / "selector.json").read_text())
    assert spec["pool"] == str(tmp_path / "pool.jsonl")
    bad = CliRunner().invoke(app, [*args[:1], "nope", *args[2:]])
    assert bad.exit_code == 2 and "unknown selector training method" in bad.output
