"""Rerankers reorder hand-made lists as their method says, and survive bad model output."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from rag.errors import ConfigError
from rag.generators.base import Generator, PromptLike, as_prompt
from rag.registry import build
from rag.rerankers import (
    CrossEncoderReranker,
    FirstReranker,
    PointwiseReranker,
    RankGPTReranker,
    parse_permutation,
    windows,
)
from rag.types import Chunk, Completion, Generation, Hit, Usage

GOLD = "zebra"


def make_hits(n: int, gold_at: int) -> list[Hit]:
    texts = [f"passage {i} about {'a ' + GOLD if i == gold_at else 'nothing'}" for i in range(n)]
    return [
        Hit(chunk=Chunk(id=f"c{i}", doc_id=f"d{i}", text=t, start=0, end=len(t)), score=1.0 - i / n,
            retriever="dense")
        for i, t in enumerate(texts)
    ]


class OracleLLM(Generator):
    """Knows which passage is relevant: the one mentioning GOLD. Counts its calls."""

    def __init__(self, reply: str | None = None) -> None:
        super().__init__()  # a component has a config: a stage holding it records its spec
        self.reply, self.calls = reply, 0

    @staticmethod
    def _passages(prompt: PromptLike) -> list[tuple[str, str]]:
        text = as_prompt(prompt).messages[-1].content
        return re.findall(r"^\[(\w+)\] (.*)$", text, flags=re.M)

    def generate(self, prompts: Sequence[PromptLike], params=None) -> list[Generation]:
        self.calls += 1
        replies = []
        for prompt in prompts:
            labels = [label for label, text in self._passages(prompt) if GOLD in text]
            labels += [label for label, text in self._passages(prompt) if GOLD not in text]
            text = self.reply if self.reply is not None else " > ".join(f"[{x}]" for x in labels)
            replies.append(Generation(completions=[Completion(text=text)], usage=Usage()))
        return replies

    def next_token_logprobs(self, prompts: Sequence[PromptLike], options: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        rows = []
        for prompt in prompts:
            content = as_prompt(prompt).messages[-1].content
            if options[0] == "Yes":  # pointwise: is the one passage in the prompt relevant?
                relevant = GOLD in content.split("Query:")[0]
                rows.append([-0.1, -3.0] if relevant else [-3.0, -0.1])
            else:  # FIRST: the gold passage's label is the likely first token
                gold = {label for label, text in self._passages(prompt) if GOLD in text}
                rows.append([-0.5 if o in gold else -5.0 - i * 0.01 for i, o in enumerate(options)])
        return rows


def test_parse_permutation_repairs_labels():
    assert [i + 1 for i in parse_permutation("[3] > [1] > [3] > [7]", 5)] == [3, 1, 2, 4, 5]
    assert parse_permutation("", 3) == [0, 1, 2]
    assert parse_permutation("I cannot rank these. [0] [-2] 99999999999999999999", 3) == [1, 0, 2]
    assert parse_permutation("2 > 2 > 1 > 3 > 2 > 1", 3) == [1, 0, 2]


def test_sliding_windows_go_bottom_up_and_cover_the_top():
    spans = windows(100, 20, 10)
    assert len(spans) == 9 and spans[0] == (80, 100) and spans[-1] == (0, 20)
    assert windows(25, 20, 10) == [(5, 25), (0, 20)]
    assert windows(5, 20, 10) == [(0, 5)] and windows(0, 20, 10) == []


@pytest.mark.parametrize("cls", [RankGPTReranker, FirstReranker])
def test_listwise_oracle_moves_the_relevant_passage_from_last_to_first(cls):
    hits = make_hits(100, gold_at=99)
    llm = OracleLLM()
    reranked = cls(generator=llm, window=20, step=10).rerank(["q"], [hits])[0]
    assert reranked[0].chunk.id == "c99" and llm.calls == 9
    assert sorted(h.chunk.id for h in reranked) == sorted(h.chunk.id for h in hits)
    assert reranked[0].scores["dense"] == pytest.approx(hits[99].score)
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)


def test_rankgpt_keeps_the_first_stage_order_when_the_reply_is_garbage():
    hits = make_hits(12, gold_at=5)
    for reply in ["", "I don't know", "[99] > [0] > banana", "[2] > [2] > [2]"]:
        reranked = RankGPTReranker(generator=OracleLLM(reply), window=5, step=3).rerank(["q"], [hits])[0]
        assert sorted(h.chunk.id for h in reranked) == sorted(h.chunk.id for h in hits)
    untouched = RankGPTReranker(generator=OracleLLM(""), window=5, step=3).rerank(["q"], [hits])[0]
    assert [h.chunk.id for h in untouched] == [h.chunk.id for h in hits]


def test_pointwise_puts_the_yes_passage_first_for_each_query():
    first, second = make_hits(6, gold_at=4), make_hits(3, gold_at=1)
    llm = OracleLLM()
    out = PointwiseReranker(generator=llm).rerank(["q1", "q2"], [first, second])
    assert [out[0][0].chunk.id, out[1][0].chunk.id] == ["c4", "c1"] and llm.calls == 1
    assert out[0][0].score > 0.9 and out[0][1].score < 0.1
    assert [h.chunk.id for h in out[0][1:]] == ["c0", "c1", "c2", "c3", "c5"]  # ties stay in order


def test_config_errors_are_named():
    with pytest.raises(ConfigError, match="step"):
        RankGPTReranker(generator=OracleLLM(), window=5, step=6)
    with pytest.raises(ConfigError, match="window"):
        FirstReranker(generator=OracleLLM(), window=30)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    """A tiny randomly initialized BERT classifier: enough to check the plumbing, offline."""
    from transformers import BertConfig, BertForSequenceClassification

    from rag.models import resolve_model

    folder = tmp_path_factory.mktemp("cross")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(resolve_model("encoder")).save_pretrained(folder)
    return folder


def test_cross_encoder_scores_each_pair_and_orders_by_score(cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    hits = make_hits(7, gold_at=3)
    reranker = CrossEncoderReranker(model=str(cross_encoder_dir), batch_size=3)
    out = reranker.rerank(["zebra?", "cars?"], [hits, hits[:2]])
    direct = CrossEncoder(str(cross_encoder_dir)).predict([("zebra?", h.chunk.text) for h in hits])
    expected = sorted(range(7), key=lambda i: -direct[i])
    assert [h.chunk.id for h in out[0]] == [f"c{i}" for i in expected]
    assert [h.score for h in out[0]] == pytest.approx(sorted(direct.tolist(), reverse=True), abs=1e-5)
    assert len(out[1]) == 2


def test_rerank_stage_keeps_k_and_traces_first_stage_scores():
    from rag.pipeline import run_stage
    from rag.rerankers.stage import Rerank
    from rag.state import State

    stage = Rerank(PointwiseReranker(generator=OracleLLM()), k=2)
    state = State(query="q", hits=make_hits(5, gold_at=3))
    info = run_stage(stage, [state])
    assert [h.chunk.id for h in state.hits] == ["c3", "c0"]
    assert info[0]["first_stage_scores"]["c3"] == pytest.approx(0.4)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [{"type": "llm-pointwise"}, {"type": "rankgpt", "window": 4, "step": 2},
                                  {"type": "first", "window": 4, "step": 2}], ids=lambda s: s["type"])
def test_llm_rerankers_run_on_real_hits(spec, vllm_tiny, dense_dir):
    """With the real engine, built from a spec: every hit comes back once, ordered by score."""
    from rag.retrievers import HNSWRetriever

    queries = ["painting by Leonardo da Vinci", "large flightless bird"]
    hits = HNSWRetriever.load(dense_dir).search(queries, k=6)
    out = build("reranker", {**spec, "generator": vllm_tiny.spec()}).rerank(queries, hits)
    for before, after in zip(hits, out):
        assert sorted(h.chunk.id for h in after) == sorted(h.chunk.id for h in before)
        assert [h.score for h in after] == sorted((h.score for h in after), reverse=True)
        assert all(h.retriever == spec["type"] for h in after)
