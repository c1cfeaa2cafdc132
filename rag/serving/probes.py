"""What a client can check of a running server: that each sampling field changes the answer a
model gives, and that malformed requests get 4xx errors, never a 5xx. The server tests assert
these and `benchmarks/serving.py` records them, so the suite and the results file check the same
requests. The sampling checks take an `openai.OpenAI` client (the `dev` extra), as users call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from openai import OpenAI
    from openai.types.chat import ChatCompletion

QUESTION = "Who painted the Mona Lisa?"
SEEDS = range(8)
HOT = 1.5  # a temperature at which a small model's answers differ from seed to seed

# (method, path, body): a body is sent as given when bytes, else as JSON
Request = tuple[str, str, bytes | dict[str, Any] | None]


def _ask(client: OpenAI, model: str, **fields: Any) -> ChatCompletion:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], **fields)


def _text(reply: ChatCompletion) -> str:
    return reply.choices[0].message.content or ""


def _seeded(client: OpenAI, model: str, **fields: Any) -> set[str]:
    """The distinct answers of eight seeds, asked at once (the engine batches them)."""
    with ThreadPoolExecutor(len(SEEDS)) as pool:
        replies = pool.map(lambda s: _ask(client, model, seed=s, temperature=HOT, **fields), SEEDS)
        return {_text(r) for r in replies}


def _limits(field: str) -> Callable[[OpenAI, str], bool]:
    def check(client: OpenAI, model: str) -> bool:
        """An answer longer than 3 tokens, cut to at most 3 by `field`=3."""
        free = _ask(client, model).usage.completion_tokens
        return free > 3 and _ask(client, model, **{field: 3}).usage.completion_tokens <= 3

    return check


def _n(client: OpenAI, model: str) -> bool:
    """n=3 gives 3 choices."""
    return len(_ask(client, model, n=3, temperature=HOT).choices) == 3


def _seed(client: OpenAI, model: str) -> bool:
    """The same seed gives the same answer twice, while sampling hot."""
    return len({_text(_ask(client, model, seed=7, temperature=HOT)) for _ in range(2)}) == 1


def _temperature(client: OpenAI, model: str) -> bool:
    """Eight seeds sampled hot give more than one answer."""
    return len(_seeded(client, model)) > 1


def _top_p(client: OpenAI, model: str) -> bool:
    """The eight hot seeds agree once top_p keeps only the likeliest token (and differ without)."""
    return len(_seeded(client, model, top_p=1e-6)) == 1 < len(_seeded(client, model))


def _stop(client: OpenAI, model: str) -> bool:
    """Stopping at the answer's second word leaves the words before it."""
    free = _text(_ask(client, model))
    words = free.split()
    if len(words) < 2:
        return False
    cut = free[: free.index(words[1])].strip()
    return _text(_ask(client, model, stop=[words[1]])) == cut


# Each sampling field a request may set, with the end-to-end check of its effect.
SAMPLING_CHECKS: dict[str, Callable[[OpenAI, str], bool]] = {
    "max_tokens": _limits("max_tokens"),
    "max_completion_tokens": _limits("max_completion_tokens"),
    "n": _n,
    "seed": _seed,
    "temperature": _temperature,
    "top_p": _top_p,
    "stop": _stop,
}


def malformed_requests(generator: str, pipeline: str, encoder: str) -> list[Request]:
    """Requests a server must refuse with a 4xx OpenAI error, for the served model names."""

    def chat(model: str = generator, content: Any = "hi", **fields: Any) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": content}], **fields}

    def history(*turns: dict[str, Any], model: str = pipeline) -> dict[str, Any]:
        return {"model": model, "messages": [*turns, {"role": "user", "content": "and then?"}]}

    chats = [
        b"{not json", b"", b"[1, 2]", {"model": generator}, {"model": generator, "messages": []},
        {"model": generator, "messages": "hi"},
        {"model": generator, "messages": [{"role": "user"}]},
        {"model": generator, "messages": [{"role": "robot", "content": "x"}]},
        chat(content="  "), chat(content=5), chat(content=None), chat(model="nope"), chat(model=""),
        chat(max_tokens=-1), chat(max_tokens=0), chat(max_tokens=10**9), chat(max_tokens="ten"),
        chat(temperature=-1), chat(temperature=9), chat(top_p=0), chat(n=0), chat(seed=2**64),
        chat(logit_bias={"1": 5}), chat(tools=[{"type": "function"}]),
        chat(stop=["a", "b", "c", "d", "e"]), chat(stop="\x00"), chat(stream=True, n=2),
        chat(stream=True, stream_options={"include_usage": True}),
        chat(content="x" * 10_000_000),
        # text no tokenizer should read: NUL characters, an unpaired surrogate, bytes not UTF-8
        chat(content="a\x00b"), chat(model=pipeline, content="Mona\x00Lisa"),
        chat(content="a\ud800b"), chat(model=pipeline, content="a\udfffb"),
        b'{"model": "' + generator.encode() + b'", "messages": [{"role": "user", '
        b'"content": "a\x00b"}]}',
        b'{"model": "' + pipeline.encode() + b'", "messages": [{"role": "user", '
        b'"content": "caf\xe9 \xff"}]}',
        # JSON the parser gives up on: nested too deep, a number too long, NaN
        b"[" * 100_000 + b"]" * 100_000,
        b'{"model": "' + generator.encode() + b'", "max_tokens": ' + b"9" * 5000 + b"}",
        b'{"model": "' + generator.encode() + b'", "messages": [{"role": "user", '
        b'"content": "hi"}], "temperature": NaN}',
        # messages no served model reads: empty ones, tool results, images and audio
        history({"role": "system", "content": ""}),
        history({"role": "assistant", "content": " \n"}, model=generator),
        history({"role": "tool", "tool_call_id": "1", "content": "42"}),
        history({"role": "function", "name": "f", "content": "42"}, model=generator),
        chat(model=pipeline, content=[{"type": "text", "text": "Who is this?"},
                                      {"type": "image_url", "image_url": {"url": "http://x/a"}}]),
        chat(content=[{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]),
        chat(model=pipeline, content=[{"type": "text"}]),
        chat(model=pipeline, stream=True, n=2),
    ]
    return [
        *(("POST", "/v1/chat/completions", body) for body in chats),
        ("POST", "/v1/completions", {"model": generator, "prompt": ""}),
        ("POST", "/v1/completions", {"model": generator, "prompt": "a\x00b"}),
        ("POST", "/v1/completions", {"model": pipeline, "prompt": ["a", "b"], "stream": True}),
        ("POST", "/v1/completions", {"model": "nope", "prompt": "hi"}),
        ("POST", "/v1/completions", {"model": generator, "prompt": "hi", "echo": True}),
        ("POST", "/v1/embeddings", {"model": encoder, "input": []}),
        ("POST", "/v1/embeddings", {"model": encoder, "input": ["a\x00b"]}),
        ("POST", "/v1/embeddings", {"model": generator, "input": "hi"}),
        ("GET", "/v1/nowhere", None),
    ]


def send(http: httpx.Client, request: Request) -> httpx.Response:
    method, path, body = request
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    return http.request(method, path, content=content,
                        headers={"content-type": "application/json"})
