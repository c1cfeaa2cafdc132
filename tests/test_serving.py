"""The OpenAI-compatible server, called with the real `openai` client over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from rag.pipeline import Pipeline, Stage
from rag.recipes import naive_rag
from rag.registry import register
from rag.serving import ServeConfig, Served, create_app
from rag.serving.probes import SAMPLING_CHECKS, malformed_requests, send
from rag.state import View

KEY = "test-key-123"


class Running:
    """A uvicorn server on a free loopback port, in a thread, for one module."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def served(vllm_tiny, encoder, index_dir) -> Served:
    return Served(pipelines={"rag": naive_rag(index_dir, vllm_tiny, k=3, max_tokens=48)},
                  generators={"tiny": vllm_tiny}, encoders={"minilm": encoder})


@pytest.fixture(scope="module")
def server(served):
    running = Running(create_app(ServeConfig(models={"tiny": {}}, max_in_flight=200), served))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_models_are_listed(client):
    assert sorted(m.id for m in client.models.list()) == ["minilm", "rag", "tiny"]


def test_chat_with_a_generator_and_with_a_pipeline(client):
    plain = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16, temperature=0)
    assert plain.choices[0].message.content and plain.usage.completion_tokens <= 16
    answer = client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "Who painted the Mona Lisa?"}])
    extra = answer.model_extra["rag"]
    assert answer.choices[0].message.content
    assert "Mona Lisa" in [s["title"] for s in extra["sources"]]
    assert [t["stage"] for t in extra["trace"]] == ["retrieve", "rag_prompt", "generate"]
    with pytest.raises(openai.BadRequestError, match="applies to pipelines that retrieve"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"k": 3})


def test_usage_reports_prompt_tokens_served_from_the_prefix_cache(client):
    long = "You are a careful assistant. " * 60  # several cache blocks, the same both times
    first, second = (client.chat.completions.create(
        model="tiny", messages=[{"role": "system", "content": long},
                                {"role": "user", "content": q}], max_tokens=1)
        for q in ("A first question?", "Another question?"))
    assert second.usage.prompt_tokens_details.cached_tokens >= 256
    assert second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens


def test_text_completion_and_embeddings(client, encoder):
    done = client.completions.create(model="tiny", prompt=["Once upon a time", "1, 2, 3,"],
                                     max_tokens=8, temperature=0)
    assert len(done.choices) == 2 and all(c.text for c in done.choices)
    vectors = client.embeddings.create(model="minilm", input=["a cat", "a dog"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
    assert vectors.usage.prompt_tokens == 8  # the encoder's word pieces with [CLS] and [SEP]
    assert vectors.data[0].embedding == pytest.approx(encoder.encode_documents(["a cat"])[0].tolist(), abs=1e-5)


@pytest.mark.parametrize("model", ["tiny", "rag"])
def test_streaming_sends_chunks_as_they_are_generated(client, model):
    arrivals, pieces, extra = [], [], None
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me about the Mona Lisa."}],
        max_tokens=32, temperature=0, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
            pieces.append(chunk.choices[0].delta.content)
        extra = (chunk.model_extra or {}).get("rag", extra)
    assert len(pieces) >= 3 and arrivals[0] < arrivals[-1]
    whole = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me about the Mona Lisa."}],
        max_tokens=32, temperature=0)
    if model == "rag":  # the pipeline's own stream: the same answer, citations and stages
        assert "".join(pieces).strip() == whole.choices[0].message.content
        assert extra is not None and len(extra["sources"]) == 3
        assert extra["citations"] == whole.model_extra["rag"]["citations"] and extra["citations"]
        assert [t["stage"] for t in extra["trace"]] == ["retrieve", "rag_prompt", "generate"]
    else:
        assert "".join(pieces) == whole.choices[0].message.content


def test_api_keys_are_checked(served):
    running = Running(create_app(ServeConfig(models={"tiny": {}}, api_keys=[KEY]), served))
    try:
        good = openai.OpenAI(base_url=running.url + "/v1", api_key=KEY, max_retries=0)
        assert "tiny" in [m.id for m in good.models.list()]
        bad = openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        assert httpx.get(running.url + "/health").json() == {"status": "ok"}  # no key needed
    finally:
        running.stop()


def test_malformed_requests_get_4xx_openai_errors_and_the_server_serves_on(server, client):
    requests = malformed_requests(generator="tiny", pipeline="rag", encoder="minilm")
    assert len(requests) >= 50
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for request in requests:
            response = send(http, request)
            body = request[2]
            shown = list(body) if isinstance(body, dict) else body[:80] if body else body
            assert 400 <= response.status_code < 500, (request[1], shown, response.text[:200])
            error = response.json()["error"]
            assert error["message"] and error["type"], response.text
    ok = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    assert ok.choices[0].message.content is not None


@pytest.mark.parametrize("field", SAMPLING_CHECKS)
def test_each_sampling_field_reaches_the_pipelines_generation(client, field):
    """max_tokens=3 gives at most 3 tokens, n=3 three choices, a seed the same answer twice,
    eight seeds at temperature 1.5 more than one answer (and one under a tiny top_p), a stop
    string the words before it."""
    assert SAMPLING_CHECKS[field](client, "rag")


def test_a_pipeline_streams_and_completes_text_under_the_requests_sampling(client):
    stream = client.chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "Tell me about the Mona Lisa."}],
        max_tokens=3, stream=True)
    usage = [c.usage for c in stream if c.usage is not None]
    assert usage and 0 < usage[-1].completion_tokens <= 3
    done = client.completions.create(model="rag", prompt=["Who painted the Mona Lisa?",
                                                          "Who directed Seven Samurai?"],
                                     max_tokens=3, n=2, temperature=1.5)
    assert len(done.choices) == 4 and done.usage.completion_tokens <= 4 * 3
    assert len(done.model_extra["rag"]) == 2


def test_a_pipeline_that_cannot_honour_a_field_refuses_it_by_name():
    """A last answering stage that does not read `sampling` keeps its own params: a request
    that sets one is a 400 naming it, rather than an answer that ignored it."""
    served = Served(pipelines={"echo": Pipeline([{"type": "test_serving_echo"}])})
    running = Running(create_app(ServeConfig(models={"echo": {}}), served))
    try:
        echo = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        ask = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        assert echo.chat.completions.create(**ask, n=1).choices[0].message.content == "hi"
        for field, value in [("temperature", 0.5), ("max_tokens", 3), ("seed", 1), ("n", 2),
                             ("max_completion_tokens", 3), ("top_p", 0.5), ("stop", ["x"])]:
            with pytest.raises(openai.BadRequestError) as refused:
                echo.chat.completions.create(**ask, **{field: value})
            assert refused.value.body["param"] == field and field in refused.value.message
        with pytest.raises(openai.BadRequestError, match="temperature"):
            echo.completions.create(model="echo", prompt="hi", temperature=0.5, stream=True)
    finally:
        running.stop()


@register("stage", "test_serving_echo")
class EchoAnswer(Stage):
    """An answer that samples nothing: the query back."""

    reads = ("query",)
    writes = ("text",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"text": item.query} for item in batch]


def test_a_hundred_concurrent_requests_all_get_their_own_answer(server, vllm_tiny):
    prompts = [f"Repeat after me: item number {i} is" for i in range(100)]

    async def run_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=300) as http:
            replies = await asyncio.gather(*(
                http.post("/v1/completions", json={"model": "tiny", "prompt": p, "max_tokens": 6,
                                                   "temperature": 0}) for p in prompts))
        return [r.json()["choices"][0]["text"] for r in replies if r.status_code == 200]

    texts = asyncio.run(run_all())
    assert len(texts) == 100
    from rag.types import SamplingParams

    expected = [g.text for g in vllm_tiny.generate(prompts, SamplingParams(max_tokens=6))]
    assert sum(a == b for a, b in zip(texts, expected)) >= 98  # batch composition may flip a tie
    assert len(set(texts)) > 50


def test_requests_beyond_the_in_flight_limit_get_429(served):
    """A request whose body never finishes holds the one slot, however soon a model would stop."""
    running = Running(create_app(ServeConfig(models={"tiny": {}}, max_in_flight=1), served))
    host, port = running.url.removeprefix("http://").split(":")
    held = socket.create_connection((host, int(port)))
    try:
        held.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        with httpx.Client(base_url=running.url, timeout=30) as http:
            second = poll(lambda: http.get("/v1/models"), until=lambda r: r.status_code == 429)
            assert second.status_code == 429
            assert second.json()["error"]["type"] == "rate_limit_error"
            held.close()  # the held request ends, so its slot frees
            freed = poll(lambda: http.get("/v1/models"), until=lambda r: r.status_code == 200)
            assert freed.status_code == 200
    finally:
        held.close()
        running.stop()


def poll(request, until, seconds: float = 20.0) -> httpx.Response:
    """The first response that satisfies `until`, or the last one once `seconds` have passed."""
    deadline = time.monotonic() + seconds
    response = request()
    while not until(response) and time.monotonic() < deadline:
        time.sleep(0.05)
        response = request()
    return response


def test_config_errors_name_the_field_and_public_binding_needs_a_key(tmp_path, monkeypatch):
    from rag.errors import ConfigError

    path = tmp_path / "serve.yaml"
    path.write_text("models: {tiny: {type: vllm}}\nmax_in_flight: 0\n")
    with pytest.raises(ConfigError, match="max_in_flight"):
        ServeConfig.load(path)
    path.write_text("models: {tiny: {type: vllm}}\nmax_inflight: 3\n")
    with pytest.raises(ConfigError, match="max_inflight"):
        ServeConfig.load(path)
    monkeypatch.delenv("RAG_API_KEYS", raising=False)
    public = ServeConfig(models={"tiny": {}}, host="0.0.0.0")
    with pytest.raises(ConfigError, match="without API keys"):
        public.check_binding()
    ServeConfig(models={"tiny": {}}, host="0.0.0.0", api_keys=["k"]).check_binding()


@register("stage", "test_serving_hit_ids")
class HitIds(Stage):
    """An answer naming the retrieved documents, best first."""

    reads = ("hits",)
    writes = ("text",)

    def run(self, batch: list[View]) -> list[dict]:
        return [{"text": ",".join(h.chunk.doc_id for h in item.hits)} for item in batch]


def test_a_request_filters_and_sizes_the_pipelines_retrieval_or_gets_a_400():
    from rag.retrievers import BM25Retriever
    from rag.retrievers.stage import Retrieve
    from rag.types import Chunk

    chunks = [Chunk(id=f"d{i}", doc_id=f"d{i}", text=f"widget manual page {i}", start=0, end=20,
                    metadata={"product": "ab"[i % 2], "year": 2020 + i}) for i in range(10)]
    index = BM25Retriever()
    index.index(chunks)
    served = Served(pipelines={"find": Pipeline([Retrieve(index, k=5), {"type": "test_serving_hit_ids"}]),
                               "echo": Pipeline([{"type": "test_serving_echo"}])})
    running = Running(create_app(ServeConfig(models={"find": {}, "echo": {}}), served))
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        ask = {"model": "find", "messages": [{"role": "user", "content": "widget manual"}]}

        def found(**extra) -> list[str]:  # type: ignore[no-untyped-def]
            reply = client.chat.completions.create(**ask, extra_body=extra or None)
            return reply.choices[0].message.content.split(",")

        assert len(found()) == 5 and {int(d[1:]) % 2 for d in found()} == {0, 1}
        only_b = found(filter={"product": "b"}, k=3)
        assert len(only_b) == 3 and all(int(d[1:]) % 2 == 1 for d in only_b)
        recent = found(filter={"operator": "AND", "conditions": [
            {"field": "year", "operator": ">=", "value": 2027},
            {"field": "product", "operator": "in", "value": ["a", "b"]}]})
        assert sorted(recent) == ["d7", "d8", "d9"]
        assert len(found(k=8)) == 8 and len(found()) == 5  # one request's k is not kept
        for extra, param in [({"filter": {"operator": "~", "field": "year", "value": 1}}, "filter"),
                             ({"k": 0}, "k"), ({"filter": "product = b"}, "filter")]:
            with pytest.raises(openai.BadRequestError) as refused:
                found(**extra)
            assert param in refused.value.message
        with pytest.raises(openai.BadRequestError, match="retrieves nothing"):
            client.chat.completions.create(model="echo", messages=ask["messages"],
                                           extra_body={"filter": {"product": "a"}})
    finally:
        running.stop()


def test_the_playground_chats_and_shows_citations_passages_and_stage_times(served, tmp_path):
    """In headless Chromium: a streamed answer, its citations with their passages, retrieved
    passages with scores, stage times and tokens; the page and its calls need the API key."""
    import shutil

    from rag.serving.playground import drive_playground

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs chromium and chromium-driver (make installs them as root)")
    running = Running(create_app(ServeConfig(models={"tiny": {}}, api_keys=[KEY]), served))
    try:
        assert httpx.get(running.url + "/").status_code == 401
        assert httpx.get(running.url + "/?key=wrong").status_code == 401
        seen = drive_playground(f"{running.url}/?key={KEY}", "rag", ["Who painted the Mona Lisa?"],
                                timeout_s=300, screenshot=tmp_path / "page.png")
    finally:
        running.stop()
    assert seen.answers[0] and not seen.answers[0].startswith("error")
    assert seen.citations[0] >= 1 and seen.passages[0] == 3
    assert seen.stages[0] == ["retrieve", "rag_prompt", "generate"]
    assert seen.tokens[0].startswith("prompt ") and (tmp_path / "page.png").stat().st_size > 10_000
    assert seen.cleared
