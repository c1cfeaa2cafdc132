"""KV-cache precomputation: exact re-rotation, reuse and recompute against full prefill, stores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from rag.compression import ExtractiveCompressor
from rag.corpus import vital_articles
from rag.errors import IndexLoadError, KVTransferError, RagError
from rag.generators.base import Generator, LocalGenerator, LocalModelConfig
from rag.kvcache import ChunkKV
from rag.kvcache.connector import KEY
from rag.kvcache.prefix import shared_prefix, warm_prefix
from rag.kvcache.reuse import chunk_text
from rag.kvcache.rope import inv_freq, rerotate
from rag.kvcache.stage import KVGenerate
from rag.kvcache.store import stacked_kv
from rag.pipeline import Pipeline, run_stage
from rag.recipes import document_chunks
from rag.registry import build, register
from rag.retrievers.stage import Retrieve
from rag.state import State
from rag.types import Chunk, Completion, Generation, Hit, SamplingParams, Usage

SYSTEM = "You answer questions using the passages."
QUESTION = "Which film is described here?"
TOL = 2e-3  # float32 on CPU: different kernels and summation orders, same math


@pytest.fixture(scope="module")
def chunks() -> list[Chunk]:
    return document_chunks(vital_articles()[:6])


@pytest.fixture(scope="module")
def kv(hf_tiny: Generator, chunks: list[Chunk], tmp_path_factory: pytest.TempPathFactory) -> ChunkKV:
    kv = ChunkKV(hf_tiny, tmp_path_factory.mktemp("kv") / "store", SYSTEM, dtype="float32")
    kv.build(chunks, progress=False)
    return kv


def test_rerotated_keys_equal_keys_encoded_at_the_target_position(kv: ChunkKV) -> None:
    ids = torch.tensor([kv._encode("The Mona Lisa is a half-length portrait painting.")])
    model = kv.model

    def keys_at(start: int) -> torch.Tensor:
        positions = torch.arange(start, start + ids.shape[1])[None]
        with torch.inference_mode():
            cache = model(ids, position_ids=positions, use_cache=True).past_key_values
        return stacked_kv(cache, 0)[0]

    base = keys_at(0)
    for delta in (37, 500):
        moved = rerotate(base, torch.full((ids.shape[1],), delta), inv_freq(model))
        assert torch.allclose(moved, keys_at(delta), atol=TOL)
        assert not torch.allclose(base, keys_at(delta), atol=TOL)  # the rotation did matter


def test_an_assembled_cache_in_bfloat16_is_the_float32_one_rounded_once(
        kv: ChunkKV, chunks: list[Chunk]) -> None:
    ids = [c.id for c in chunks[:4]]
    exact_k, exact_v = kv.store.assemble(ids, inv_freq(kv.model), torch.float32)
    keys, values = kv.store.assemble(ids, inv_freq(kv.model), torch.bfloat16)
    assert keys.dtype == values.dtype == torch.bfloat16
    assert torch.equal(keys, exact_k.to(torch.bfloat16))  # rotated in float32, not in bfloat16
    assert torch.equal(values, exact_v.to(torch.bfloat16))


def test_an_assembly_from_a_later_token_is_the_tail_of_the_whole_one(
        kv: ChunkKV, chunks: list[Chunk]) -> None:
    ids = [c.id for c in chunks[:3]]
    keys, values = kv.store.assemble(ids, inv_freq(kv.model), torch.float32)
    prefix, first = kv.store.manifest["prefix_tokens"], len(kv.store.get(ids[0])[2])
    for start in (0, prefix - 2, prefix, prefix + first, prefix + first + 5, keys.shape[3]):
        tail_k, tail_v = kv.store.assemble(ids, inv_freq(kv.model), torch.float32, start=start)
        assert torch.allclose(tail_k, keys[..., start:, :], atol=1e-6, rtol=0)
        assert torch.equal(tail_v, values[..., start:, :])


def test_single_chunk_reuse_gives_the_full_prefill_logits(kv: ChunkKV, chunks: list[Chunk]) -> None:
    full, layout = kv.prefill(QUESTION, chunks[:1], "full")
    reuse, _ = kv.prefill(QUESTION, chunks[:1], "reuse")
    assert torch.allclose(full.logits, reuse.logits, atol=TOL)
    params = SamplingParams(max_tokens=10)
    reference = kv.generator.generate([kv.generator.tokenizer.decode(layout.ids)], params)[0].text
    assert kv.decode(reuse, layout, params).text == reference  # decoding continues the same way


def test_recompute_all_is_full_prefill_and_more_recompute_gets_closer(
    kv: ChunkKV, chunks: list[Chunk]
) -> None:
    full, layout = kv.prefill(QUESTION, chunks[:4], "full")
    everything, _ = kv.prefill(QUESTION, chunks[:4], "recompute", fraction=1.0)
    assert torch.allclose(full.logits, everything.logits, atol=TOL)
    assert all(torch.allclose(a, b, atol=TOL) for a, b in zip(full.keys, everything.keys))
    reuse, _ = kv.prefill(QUESTION, chunks[:4], "reuse")
    nothing, _ = kv.prefill(QUESTION, chunks[:4], "recompute", fraction=0.0)
    assert torch.equal(reuse.logits, nothing.logits) and nothing.recomputed == 0
    reference = torch.log_softmax(full.logits, -1)

    def kl(p: object) -> float:
        return float((reference.exp() * (reference - torch.log_softmax(p.logits, -1))).sum())

    half, _ = kv.prefill(QUESTION, chunks[:4], "recompute", fraction=0.5)
    assert half.recomputed == round(0.5 * sum(layout.chunk_lengths))
    assert kl(reuse) > kl(half) > kl(everything)
    assert kl(reuse) > 0.01  # chunks that never saw each other do differ


def test_legolink_and_last_chunk_repairs_recompute_what_they_name(
    kv: ChunkKV, chunks: list[Chunk]
) -> None:
    full, layout = kv.prefill(QUESTION, chunks[:4], "full")
    linked, _ = kv.prefill(QUESTION, chunks[:4], "reuse", link=3)
    assert linked.recomputed == 3 * 3  # the first 3 tokens of chunks 2-4; chunk 1 is in place
    # Every token of chunks 2-4 recomputed: chunk 1 was encoded right after the prefix, as in full.
    everything, _ = kv.prefill(QUESTION, chunks[:4], "reuse", link=10_000)
    assert torch.allclose(full.logits, everything.logits, atol=TOL)
    last, _ = kv.prefill(QUESTION, chunks[:4], "reuse", last=1)
    assert last.recomputed == layout.chunk_lengths[-1]
    two, _ = kv.prefill(QUESTION, chunks[:4], "reuse", last=2)
    assert two.recomputed == sum(layout.chunk_lengths[-2:])
    # The last 3 of 4 recomputed: every chunk as in full prefill (chunk 1 is in place).
    three, _ = kv.prefill(QUESTION, chunks[:4], "reuse", last=3)
    assert torch.allclose(full.logits, three.logits, atol=TOL)
    both, _ = kv.prefill(QUESTION, chunks[:4], "recompute", fraction=0.5, link=3, last=1)
    others = sum(layout.chunk_lengths[1:-1]) - 3 * 2 + layout.chunk_lengths[0]
    assert both.recomputed == 3 * 2 + layout.chunk_lengths[-1] + round(0.5 * others)


def test_ape_attention_is_the_group_merge_of_ape_and_neutral_at_one() -> None:
    from rag.kvcache.blend import _ape_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 9] = False
    doc = torch.zeros(10, dtype=torch.bool)
    doc[2:7] = True
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3,
                                                             enable_gqa=True)
    assert torch.allclose(_ape_attention(q, k, v, mask, 0.3, doc, (1.0, 1.0)), plain, atol=1e-5)
    # APE's reference form: softmax within each group, groups merged by their log-sum-exps.
    t, s_ = 0.6, 0.8
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    logits = ((q @ kk.transpose(-1, -2)) * 0.3).masked_fill(~mask, float("-inf"))
    other = logits.masked_fill(doc, float("-inf"))
    docs = (logits / t).masked_fill(~doc, float("-inf"))
    lse = torch.stack([other.logsumexp(-1), t * docs.logsumexp(-1) + torch.log(torch.tensor(s_))], -1)
    weights = lse.softmax(-1)
    expected = (weights[..., :1] * (other.softmax(-1) @ vv) + weights[..., 1:] * (docs.softmax(-1) @ vv))
    assert torch.allclose(_ape_attention(q, k, v, mask, 0.3, doc, (t, s_)), expected, atol=1e-5)


def test_ape_prefill_and_decoding_run_by_hand(kv: ChunkKV, chunks: list[Chunk]) -> None:
    from rag.kvcache.blend import blended_prefill

    params = SamplingParams(max_tokens=8)
    reuse, layout = kv.prefill(QUESTION, chunks[:3], "reuse")
    keys, values = kv.store.assemble([c.id for c in chunks[:3]], inv_freq(kv.model), torch.float32)
    mask = torch.zeros(keys.shape[3], dtype=torch.bool)
    mask[layout.prefix:] = True
    neutral = blended_prefill(kv.model, layout.ids, keys, values, mask, 0.0, ape=(1.0, 1.0))
    assert torch.allclose(neutral.logits, reuse.logits, atol=TOL)
    assert kv.decode(neutral, layout, params).text == kv.decode(reuse, layout, params).text
    sharp, _ = kv.prefill(QUESTION, chunks[:3], "reuse", ape=(0.5, 1.0))
    assert not torch.allclose(sharp.logits, reuse.logits, atol=0.05)
    assert kv.decode(sharp, layout, params).token_ids


def test_foreign_or_stale_stores_are_refused(kv: ChunkKV, hf_tiny: Generator, tmp_path: Path) -> None:
    with pytest.raises(IndexLoadError, match="stored as float32, asked for float16"):
        ChunkKV(hf_tiny, kv.store_path, SYSTEM, dtype="float16").store
    with pytest.raises(IndexLoadError, match="another system prefix"):
        ChunkKV(hf_tiny, kv.store_path, "Another system prompt.", dtype="float32").store
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in kv.store_path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shape"]["layers"] = 24
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="layers=24"):
        ChunkKV(hf_tiny, copy, SYSTEM, dtype="float32").store
    manifest["shape"] = kv.shape
    (copy / "manifest.json").write_text(json.dumps(manifest))
    shard = next(copy.glob("shard-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:1000])
    truncated = ChunkKV(hf_tiny, copy, SYSTEM, dtype="float32")
    stored = Chunk(id=next(iter(kv.store.chunks)), doc_id="x", text="", start=0, end=0)
    with pytest.raises(IndexLoadError, match="not a valid chunk KV shard"):
        truncated.prefill(QUESTION, [stored], "reuse")
    with pytest.raises(RagError, match="not in the KV store"):
        kv.prefill(QUESTION, [Chunk(id="unknown", doc_id="x", text="t", start=0, end=1)], "reuse")


def test_a_compressed_store_caches_and_prompts_the_compressed_text(
        kv: ChunkKV, hf_tiny: Generator, encoder, chunks: list[Chunk], tmp_path: Path) -> None:
    compressor = ExtractiveCompressor(encoder=encoder, ratio=2.0)
    small = ChunkKV(hf_tiny, tmp_path / "compressed", SYSTEM, dtype="float32")
    small.build(chunks, progress=False, compressor=compressor)
    compressed = compressor.compress_passages(chunks, progress=False)
    record = small.store.manifest["compression"]
    assert record["compressor"]["type"] == "extractive" and record["compressor"]["ratio"] == 2.0
    assert record["kept_tokens"] == sum(len(e["ids"]) for e in small.store.chunks.values())
    assert 1.6 < record["original_tokens"] / record["kept_tokens"] < 2.5
    assert 1.6 < kv.store.nbytes / small.store.nbytes < 2.5
    assert kv.store.manifest["compression"] is None
    # prompts show the compressed text, whatever text the retrieved chunk carries
    layout, p = small.layout(QUESTION, chunks[:2]), len(small.prefix_ids)
    assert layout.ids[:p] == small.prefix_ids
    assert layout.ids[p : p + sum(layout.chunk_lengths)] == [
        i for c in compressed[:2] for i in small._encode(chunk_text(c))]
    assert sum(layout.chunk_lengths) < sum(kv.layout(QUESTION, chunks[:2]).chunk_lengths)
    # the reference prompt, the passages as retrieved, is what an uncompressed store lays out
    assert small.text_layout(QUESTION, chunks[:2]) == kv.layout(QUESTION, chunks[:2])
    # a single compressed chunk's cache is exactly the full prefill of the compressed prompt
    full, _ = small.prefill(QUESTION, chunks[:1], "full")
    reused, _ = small.prefill(QUESTION, chunks[:1], "reuse")
    assert torch.allclose(full.logits, reused.logits, atol=TOL)


def test_kv_generate_stage_switches_modes_by_config(kv: ChunkKV, hf_tiny: Generator,
                                                   chunks: list[Chunk]) -> None:
    from rag.retrievers.bm25 import BM25Retriever

    retriever = BM25Retriever()
    retriever.add(chunks)
    answers = {}
    for mode in ("full", "reuse", "recompute"):
        stage = KVGenerate(store=str(kv.store_path), generator=hf_tiny, mode=mode, system=SYSTEM,
                           dtype="float32", params=SamplingParams(max_tokens=8))
        (state,) = Pipeline([Retrieve(retriever, k=2), stage]).run(["Who painted A Sunday Afternoon?"])
        (trace,) = [t for t in state.trace if t.stage == "kv_generate"]
        answers[mode] = state.answer.text
        cached = trace.info["cached_prompt_tokens"]
        assert state.answer.usage.cached_prompt_tokens == cached
        assert (cached == 0) if mode == "full" else (0 < cached < trace.info["prompt_tokens"])
        assert len(state.sources) == 2
    assert all(answers.values())


def test_kv_stage_config_names_only_the_repairs_it_turns_on() -> None:
    assert KVGenerate.Config(store="s").prefill_kwargs() == {"mode": "reuse", "last": 1}
    spelled = KVGenerate.Config(store="s", mode="recompute", recompute_fraction=0.3, link_tokens=16,
                                recompute_last=0, ape_temperature=0.9)
    assert spelled.prefill_kwargs() == {"mode": "recompute", "fraction": 0.3, "link": 16,
                                        "ape": (0.9, 1.0)}


@register("generator", "test_kv_engine")
class KVEngine(LocalGenerator):
    """A generator that loads KV in its engine, as far as the interface says: it records what
    the stage asks of it and answers with the number of caches each prompt loads."""

    Config = LocalModelConfig
    loads_kv = True

    def generate_ids(self, prompts: Sequence[list[int]], params: SamplingParams | None = None,
                     transfers: Sequence[dict[str, Any] | None] | None = None) -> list[Generation]:
        self.asked = (list(prompts), transfers)
        loads = [len(t[KEY]["chunks"]) if t else 0 for t in transfers or [None] * len(prompts)]
        return [Generation(completions=[Completion(text=f"{n} loaded")],
                           usage=Usage(prompt_tokens=len(ids)))
                for ids, n in zip(prompts, loads)]


def test_kv_stages_ask_the_generator_interface_not_its_class(kv: ChunkKV, hf_tiny: Generator,
                                                               chunks: list[Chunk]) -> None:
    engine = KVEngine()
    stage = KVGenerate(str(kv.store_path), engine, system=SYSTEM, dtype="float32",
                       recompute_last=1)
    queries = ["Who painted A Sunday Afternoon?", "Which film is described here?"]
    states = [State(q, hits=[Hit(chunk=c, score=1.0, retriever="test") for c in chunks[i:i + 3]])
              for i, q in enumerate(queries)]
    run_stage(stage, states)
    prompts, transfers = engine.asked
    expected = [kv.request(s.query, [h.chunk for h in s.hits[::-1]], 1) for s in states]
    assert prompts == [layout.ids for layout, _ in expected]
    assert transfers == [transfer for _, transfer in expected]
    assert [s.generation.text for s in states] == ["2 loaded", "2 loaded"]
    with pytest.raises(KVTransferError, match="cannot take precomputed KV"):
        hf_tiny.generate_ids([prompts[0]], transfers=transfers[:1])


def test_vllm_prefix_cache_is_warmed_and_reported(vllm_tiny: Generator) -> None:
    fixed = "You classify texts. " + " ".join(f"Example {i}: a text about topic {i}." for i in range(60))
    prompts = [f"{fixed}\nText: {q}\nTopic:" for q in ("a red bird", "a new law", "a mountain")]
    assert shared_prefix(vllm_tiny, prompts) == f"{fixed}\nText: a "
    warm = warm_prefix(vllm_tiny, prompts)
    assert warm.prompt_tokens > 256
    usage = [g.usage for g in vllm_tiny.generate(prompts, SamplingParams(max_tokens=1))]
    assert all(u.cached_prompt_tokens >= warm.prompt_tokens - 32 for u in usage)  # up to a block
    cold = vllm_tiny.generate(["A never seen prompt, " + fixed], SamplingParams(max_tokens=1))
    assert cold[0].usage.cached_prompt_tokens == 0


@pytest.fixture(scope="module")
def vllm_kv(kv: ChunkKV, vllm_tiny_kv: Generator) -> ChunkKV:
    return ChunkKV(vllm_tiny_kv, kv.store_path, SYSTEM, dtype="float32")


def hf_answers(kv: ChunkKV, chunks: list[Chunk], params: SamplingParams) -> dict[str, str]:
    return {mode: kv.decode(*kv.prefill(QUESTION, chunks, mode), params).text
            for mode in ("full", "reuse")}


def test_vllm_connector_answers_as_the_transformers_reuse_path(
    kv: ChunkKV, vllm_kv: ChunkKV, chunks: list[Chunk]
) -> None:
    params = SamplingParams(max_tokens=16)
    selections = [chunks[:1], chunks[:4], chunks[2:5]]
    requests = [vllm_kv.request(QUESTION, s) for s in selections]
    # one batch, each prompt twice: with its caches, then without (a full prefill)
    outs = vllm_kv.generator.generate_ids(
        [layout.ids for layout, _ in requests for _ in (0, 1)], params,
        [t for _, transfer in requests for t in (transfer, None)])
    changed = 0
    for selected, (layout, _), out, plain in zip(selections, requests, outs[::2], outs[1::2]):
        expected = hf_answers(kv, selected, params)
        assert out.text == expected["reuse"]
        assert out.usage.cached_prompt_tokens == layout.prefix + sum(layout.chunk_lengths)
        assert plain.usage.cached_prompt_tokens < layout.prefix + sum(layout.chunk_lengths)
        changed += expected["reuse"] != expected["full"]
        if expected["reuse"] != expected["full"]:
            assert plain.text == expected["full"]
    assert changed  # reuse answers differently somewhere: the engine used the caches, not a prefill
    # The last chunks prefilled by vLLM over the loaded ones: the transformers `last` repair.
    for last in (1, 2):
        layout, transfer = vllm_kv.request(QUESTION, chunks[:4], last=last)
        (out,) = vllm_kv.generator.generate_ids([layout.ids], params, [transfer])
        expected = kv.decode(*kv.prefill(QUESTION, chunks[:4], "reuse", last=last), params)
        assert out.text == expected.text
        assert out.usage.cached_prompt_tokens == layout.prefix + sum(layout.chunk_lengths[:-last])


def test_vllm_connector_and_prefix_caching_work_together(
    kv: ChunkKV, vllm_kv: ChunkKV, chunks: list[Chunk]
) -> None:
    engine, params = vllm_kv.generator, SamplingParams(max_tokens=16)
    assert engine.config.enable_prefix_caching
    first, then = chunks[:4], [*chunks[:3], chunks[5]]  # shares the prefix and 3 chunks
    for selected in (first, then, first):
        layout, transfer = vllm_kv.request(QUESTION, selected)
        (reused,) = engine.generate_ids([layout.ids], params, [transfer])
        (plain,) = engine.generate_ids([layout.ids], params)  # the same tokens, no caches named
        expected = hf_answers(kv, selected, params)
        assert reused.text == expected["reuse"]
        # assembled blocks are salted apart: a full-prefill request never gets them
        assert plain.text == expected["full"] != expected["reuse"]
    # Loading all but the last chunk after loading all four: the last chunk is prefilled, not
    # taken from the blocks the first request assembled.
    layout, transfer = vllm_kv.request(QUESTION, first, last=1)
    (out,) = engine.generate_ids([layout.ids], params, [transfer])
    assert out.text == kv.decode(*kv.prefill(QUESTION, first, "reuse", last=1), params).text


def test_vllm_connector_refuses_foreign_stores_and_prompts(
    kv: ChunkKV, vllm_kv: ChunkKV, chunks: list[Chunk], tmp_path: Path
) -> None:
    engine = vllm_kv.generator
    with pytest.raises(IndexLoadError, match="another system prefix"):
        ChunkKV(engine, kv.store_path, "Another system prompt.", dtype="float32").request(
            QUESTION, chunks[:2])
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in kv.store_path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shape"]["model"] = "another-model"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexLoadError, match="another-model"):
        ChunkKV(engine, copy, SYSTEM, dtype="float32").request(QUESTION, chunks[:2])
    # The engine itself, handed caches that are not the prompt's (chunks named out of order),
    # prefills the request in full instead of misusing them.
    params = SamplingParams(max_tokens=16)
    layout, transfer = vllm_kv.request(QUESTION, chunks[1:5])
    transfer["rag_chunk_kv"]["chunks"] = transfer["rag_chunk_kv"]["chunks"][::-1]
    (out,) = engine.generate_ids([layout.ids], params, [transfer])
    assert out.text == hf_answers(kv, chunks[1:5], params)["full"]


def test_kv_generate_runs_on_vllm_from_a_yaml_pipeline(
    kv: ChunkKV, hf_tiny: Generator, chunks: list[Chunk], tmp_path: Path
) -> None:
    from rag.retrievers.bm25 import BM25Retriever

    retriever = BM25Retriever()
    retriever.add(chunks)
    index = tmp_path / "bm25"
    retriever.save(index)
    question = "Who painted A Sunday Afternoon?"
    stage = {"type": "kv_generate", "store": str(kv.store_path), "mode": "reuse", "system": SYSTEM,
             "dtype": "float32", "params": {"max_tokens": 8}}
    yaml = (f"stages:\n- {{type: retrieve, retriever: {{type: bm25, path: {index}}}, k: 3}}\n"
            f"- {json.dumps({**stage, 'generator': {'type': 'vllm', 'model': 'tiny'}})}\n")
    (state,) = Pipeline.from_yaml(yaml).run([question])
    assert state.answer.usage.cached_prompt_tokens > 0
    reference = KVGenerate(generator=hf_tiny, **{k: v for k, v in stage.items() if k != "type"})
    (expected,) = Pipeline([Retrieve(retriever, k=3), reference]).run([question])
    assert state.answer.text == expected.answer.text
    with pytest.raises(RagError, match="mode full or reuse"):
        Pipeline.from_yaml(yaml.replace('"reuse"', '"recompute"')).run([question])


def test_demonstration_kv_assembles_the_plain_icl_prompt(
    hf_tiny: Generator, vllm_kv: ChunkKV, tmp_path: Path
) -> None:
    from rag.eval.datasets import vital_topics
    from rag.kvcache.demos import demo_chunks, demo_frame
    from rag.selectors import DemoTemplate

    template = DemoTemplate(instruction="Classify the topic of each text.", input_prefix="Text: ",
                            output_prefix="\nTopic:")
    demos = vital_topics(max_chars=200)[:6]
    kv = ChunkKV(hf_tiny, tmp_path / "demos", demo_frame(template), dtype="float32")
    kv.build(demo_chunks(template, demos), progress=False)
    query = "The Nile is the longest river in Africa."
    picked = demo_chunks(template, demos[:4])
    full, layout = kv.prefill(query, picked, "full")
    assert hf_tiny.tokenizer.decode(layout.ids) == template.plain(demos[:4], query)
    everything, _ = kv.prefill(query, picked, "recompute", fraction=1.0)
    assert torch.allclose(full.logits, everything.logits, atol=TOL)
    reuse, _ = kv.prefill(query, picked, "reuse")
    assert not torch.allclose(full.logits, reuse.logits, atol=0.05)  # demos never saw each other

    # The same caches through vLLM's connector: the label log-probs of the transformers reuse path.
    labels = sorted({d.output for d in demos})
    label_ids = hf_tiny.option_ids(labels)
    in_vllm = ChunkKV(vllm_kv.generator, kv.store_path, demo_frame(template), dtype="float32")
    _, transfer = in_vllm.request(query, picked)
    (got,) = vllm_kv.generator.next_token_logprobs_ids([layout.ids], labels, [transfer])
    expected = torch.log_softmax(reuse.logits, -1)[label_ids]
    assert torch.allclose(torch.tensor(got), expected, atol=0.02)
    assert not torch.allclose(torch.log_softmax(full.logits, -1)[label_ids], expected, atol=0.02)

    # As a pipeline: select -> kv_icl_generate, on either engine, gives the same reuse answer.
    from rag.kvcache.stage import KVIclGenerate
    from rag.selectors.stage import Select

    answers = []
    for engine in (hf_tiny, vllm_kv.generator):
        stage = KVIclGenerate(store=str(kv.store_path), generator=engine, template=template,
                              recompute_last=1, dtype="float32", params=SamplingParams(max_tokens=4))
        select = Select(build("selector", {"type": "bm25"}).fit(demos), k=4)
        (state,) = Pipeline([select, stage]).run([query])
        assert state.answer.usage.cached_prompt_tokens > len(state.demos) * 10
        answers.append(state.answer.text)
    assert answers[0] == answers[1]


def test_a_situated_cache_is_its_piece_encoded_after_its_context(
    hf_tiny: Generator, tmp_path: Path
) -> None:
    from rag.eval.datasets import vital_topics
    from rag.kvcache.demos import demo_chunks, demo_frame, situated_context
    from rag.kvcache.stage import KVIclGenerate
    from rag.selectors import DemoTemplate

    template = DemoTemplate(instruction="Classify the topic of each text.", input_prefix="Text: ",
                            output_prefix="\nTopic:")
    demos = vital_topics(max_chars=200)[:6]
    selector = build("selector", {"type": "bm25"})
    context = situated_context(template, demos, k=2, selector=selector)
    for demo, near in zip(demos, selector.select([d.input for d in demos], 3)):
        expected = [n.id for n in near if n.id != demo.id][:2][::-1]  # most similar last
        assert [c.id for c in context[demo.id]] == expected

    # B encoded after A, A alone: the prompt [A, B] assembled is exactly its full prefill.
    a, b, *rest = demo_chunks(template, demos)
    situated = ChunkKV(hf_tiny, tmp_path / "situated", demo_frame(template), dtype="float32")
    situated.build([a, b, *rest], progress=False,
                   context={b.id: [a], **{c.id: [a, b] for c in rest}})
    assert situated.store.manifest["situated"] == {"context_pieces": 2}
    query = "The Nile is the longest river in Africa."
    full, _ = situated.prefill(query, [a, b], "full")
    reuse, _ = situated.prefill(query, [a, b], "reuse")
    assert torch.allclose(full.logits, reuse.logits, atol=TOL)
    plain = ChunkKV(hf_tiny, tmp_path / "plain", demo_frame(template), dtype="float32")
    plain.build([a, b, *rest], progress=False)
    alone, _ = plain.prefill(query, [a, b], "reuse")
    assert not torch.allclose(full.logits, alone.logits, atol=0.05)

    # The stage prefills no demonstration over a situated store, the last 3 over a plain one.
    for kv, last in ((situated, 0), (plain, 3)):
        stage = KVIclGenerate(store=str(kv.store_path), generator=hf_tiny, template=template,
                              dtype="float32")
        assert stage.recompute_last() == last
