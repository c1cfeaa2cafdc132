"""The peers benchmark's own machinery: its client load, the llmlingua adapters, its ratios.

The peer frameworks themselves are not installed by `make test` (`make peers-setup` installs
them); what is tested here is the code that decides what the benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from frameworks.systems import QASystem, serve_clients  # noqa: E402
from peers import LegacyCache, align, ratio, verdict  # noqa: E402

from rag.types import Chunk, Hit  # noqa: E402


class Counting(QASystem):
    """Answers with the question upper-cased, after a pause; counts how many run at once."""

    name, package = "counting", "rag-icl"

    def __init__(self) -> None:
        self.running = self.most = 0

    def describe(self) -> str:
        return "counting"

    def index(self, chunks: list[Chunk]) -> None:
        pass

    async def answer(self, question: str) -> str:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return question.upper()


def test_clients_keep_their_limit_and_the_answers_their_order():
    system = Counting()
    questions = [f"q{i}" for i in range(10)]
    answers, latencies, wall = serve_clients(system, questions, 3)
    assert answers == [q.upper() for q in questions]
    assert system.most == 3
    assert len(latencies) == 10 and all(0 < t <= wall for t in latencies)
    serve_clients(system, questions, 1)
    assert system.most == 3 and system.running == 0


def hit(doc: str, text: str) -> Hit:
    return Hit(chunk=Chunk(id=doc, doc_id=doc, text=text, start=0, end=len(text)), score=1.0,
               retriever="bm25")


def test_kept_segments_go_back_to_their_passages_and_a_dropped_one_is_gone():
    hits = [hit("a", "Paris is the capital of France and its largest city"),
            hit("b", "Berlin is the capital of Germany"),
            hit("c", "Madrid is the capital of Spain on the Manzanares")]
    kept = align(hits, ["Paris capital France largest city", "Madrid capital Spain Manzanares"])
    assert [h.chunk.id for h in kept] == ["a", "c"]
    assert kept[1].chunk.text == "Madrid capital Spain Manzanares"
    assert hits[2].chunk.text.startswith("Madrid is")  # the originals are untouched


def test_legacy_cache_pairs_continue_a_prefix_as_a_full_forward_does():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2)).eval()
    wrapped = LegacyCache(model)
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        first = wrapped(ids[:, :8], attention_mask=torch.ones(1, 8, dtype=torch.long),
                        use_cache=True)
        pairs = first.past_key_values
        assert isinstance(pairs, list) and len(pairs) == 2
        assert all(len(p) == 2 and p[0].shape[2] == 8 for p in pairs)
        assert pairs[0][0].shape[2] == 8  # llmlingua reads the cached length so
        rest = wrapped(ids[:, 8:], attention_mask=torch.ones(1, 12, dtype=torch.long),
                       past_key_values=pairs, use_cache=True)
        full = model(ids, attention_mask=torch.ones(1, 12, dtype=torch.long))
    assert torch.allclose(rest.logits, full.logits[:, 8:], atol=1e-5)
    assert wrapped.config is model.config


def test_ratios_pair_repeats_and_verdicts_need_the_interval_off_zero():
    assert ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0  # 2, 4, 3 -> 3
    assert ratio([1.0], [4.0]) == 0.25
    assert verdict(0.01, 0.05) == "ours better"
    assert verdict(-0.05, -0.01) == "peer better"
    assert verdict(-0.02, 0.03).startswith("tie")


def fake_run(answers: list[str], qps: list[float]) -> dict:
    speed = {c: [{"system": "s", "clients": c, "requests": 4, "req_per_s": v, "p50_s": 0.1,
                  "p95_s": 0.2} for v in qps] for c in (1, 8)}
    return {"answers": {"vital-qa": answers[:2], "vital-facts": answers[2:]},
            "memory_gib": 1.0, "version": "v", "config": "c", "speed": speed}


def test_the_qa_summary_holds_exactly_the_issues_keys_each_from_its_own_system():
    from peers import qa_rows

    from rag.eval.qa import QAExample

    examples = {"vital-qa": [QAExample(id="a", question="q", answers=["x"]),
                             QAExample(id="b", question="q", answers=["y"])],
                "vital-facts": [QAExample(id="c", question="q", answers=["z"])]}
    runs = {"ours": fake_run(["x", "n", "z"], [1, 2, 3]),
            "ours-http": fake_run(["x", "n", "z"], [2, 4, 6]),
            "haystack": fake_run(["x", "y", "n"], [1, 1, 1]),
            "llamaindex": fake_run(["n", "n", "z"], [2, 2, 2])}
    sections, summary = qa_rows(runs, examples)
    assert summary == {"em_ours": 0.5, "em_haystack": 1.0, "em_llamaindex": 0.0,
                       "em_ours_facts": 1.0, "em_haystack_facts": 0.0, "em_llamaindex_facts": 1.0,
                       "qps8_ratio_vs_haystack": 4.0, "qps8_ratio_vs_llamaindex": 2.0}
    assert [r["qps"]["median"] for r in sections["qa_speed"][:2]] == [2, 2]


def test_the_index_summary_is_the_peers_seconds_over_ours_repeat_by_repeat():
    from peers import index_rows

    def built(seconds: list[float], dtype: str | None, recall: float | None) -> dict:
        return {"index_s": seconds, "version": "v", "config": "c", "encoder_dtype": dtype,
                "known_item_r10": recall}

    runs = {"ours": built([10, 11, 12], "bfloat16", 0.8), "ours-float32": built([20, 20, 20],
                                                                               "float32", 0.79),
            "haystack": built([20, 22, 30], None, None), "llamaindex": built([5, 5, 5], None, None)}
    sections, summary = index_rows(runs, argparse.Namespace(index_docs=9))
    assert summary == {"index_ratio_vs_haystack": 2.0, "index_ratio_vs_llamaindex": 0.455}
    by = {r["ratio"]: r for r in sections["index_ratios"]}
    assert by["float32_encoder_over_auto"]["median"] == round(20 / 11, 3)
    rows = {r["system"]: r for r in sections["index"]}
    assert rows["Haystack"]["encoder_dtype"] == "float32 (its default)"
    assert [r["index_s"]["median"] for r in sections["index"]] == [11, 20, 22, 5]


def test_where_auto_is_float32_the_pinned_build_is_not_timed_twice(monkeypatch):
    import peers

    monkeypatch.setattr(peers, "auto_dtype", lambda device, role: "float32")
    assert peers.indexers() == ("ours", "haystack", "llamaindex")
    monkeypatch.setattr(peers, "auto_dtype", lambda device, role: "bfloat16")
    assert "ours-float32" in peers.indexers()
    runs = {name: {"index_s": [2.0, 4.0, 6.0] if name == "ours" else [3.0, 6.0, 9.0],
                   "version": "v", "config": "c", "encoder_dtype": None, "known_item_r10": None}
            for name in ("ours", "haystack", "llamaindex")}
    sections, summary = peers.index_rows(runs, argparse.Namespace(index_docs=9))
    assert summary == {"index_ratio_vs_haystack": 1.5, "index_ratio_vs_llamaindex": 1.5}
    assert [r["ratio"] for r in sections["index_ratios"]] == list(summary)
    assert [r["system"] for r in sections["index"]] == ["rag-icl (in process)", "Haystack",
                                                         "LlamaIndex"]
