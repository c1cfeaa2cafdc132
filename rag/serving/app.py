"""An OpenAI-compatible server: every pipeline and raw generator is a model any client can call.

Chat requests to a pipeline run it on the last user message with the earlier messages as history;
the answer's citations, sources and stage trace travel in an extra `rag` field that standard
clients ignore. A request's sampling fields go with the query as the state's `sampling`, for the
stage that makes the answer to honour, or a 400 names the field it would not. Generation goes
through the generators' async API, so concurrent requests share the vLLM engine's batches;
streams send tokens as the engine makes them, and a client that goes away aborts its request.
Every error is an OpenAI-style `{"error": {...}}` body with a 4xx or 5xx status, and the server
keeps serving.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.encoders.dense import Encoder
from rag.errors import RagError
from rag.generators.base import Generator
from rag.pipeline import Pipeline, Stage
from rag.registry import build
from rag.retrievers.filters import FilterError, parse_filter
from rag.serving.config import ServeConfig
from rag.serving.metrics import ServerMetrics
from rag.serving.schemas import ChatRequest, CompletionRequest, EmbeddingRequest, Sampling
from rag.state import State
from rag.types import Answer, Message as ChatTurn, Prompt, SamplingParams, Usage

DEFAULT_MAX_TOKENS = 256


class ApiError(Exception):
    """An error for the client, rendered as an OpenAI error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code


def error_body(status: int, message: str, kind: str, param: str | None = None,
               code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status)


class Served:
    """The pipelines, generators and encoders a server answers for, by model name."""

    def __init__(self, pipelines: dict[str, Pipeline] | None = None,
                 generators: dict[str, Generator] | None = None,
                 encoders: dict[str, Encoder] | None = None) -> None:
        self.pipelines, self.generators, self.encoders = pipelines or {}, generators or {}, encoders or {}

    @classmethod
    def from_config(cls, config: ServeConfig) -> Served:
        pipelines = {name: Pipeline.load(spec) if isinstance(spec, str) else Pipeline.from_dict(spec)
                     for name, spec in config.pipelines.items()}
        return cls(pipelines, {n: build("generator", s) for n, s in config.models.items()},
                   {n: build("encoder", s) for n, s in config.embeddings.items()})

    def names(self) -> list[str]:
        return [*self.pipelines, *self.generators, *self.encoders]

    def kind(self, name: str) -> str:
        """`pipeline`, `generator` or `embedding`: what a model name serves."""
        return ("pipeline" if name in self.pipelines else
                "generator" if name in self.generators else "embedding")


class Limits:
    """ASGI middleware: bounded request bodies (413) and requests in flight (429)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_in_flight: int) -> None:
        self.app, self.max_body, self.max_in_flight, self.in_flight = app, max_body_bytes, max_in_flight, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            await error_body(429, f"more than {self.max_in_flight} requests in flight; retry later",
                             "rate_limit_error")(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, self._capped(receive), send)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _BodyTooLarge
            return message

        return capped

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_body(413, f"request body exceeds {self.max_body} bytes",
                         "invalid_request_error")(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _params(req: Sampling, generator: Generator, max_tokens: int | None) -> SamplingParams:
    if req.retrieval() is not None:
        field = req.retrieval_field()
        raise ApiError(400, f"{field} applies to pipelines that retrieve; {req.model!r} is a "
                       "generator", param=field)
    limit = getattr(generator.config, "max_model_len", None)
    wanted = max_tokens or DEFAULT_MAX_TOKENS
    if limit is not None and wanted >= limit:
        raise ApiError(400, f"max_tokens {wanted} must be below the model's context of {limit} tokens",
                       param="max_tokens")
    return SamplingParams(max_tokens=wanted, temperature=req.temperature, top_p=req.top_p, n=req.n,
                          stop=req.stop or [], seed=req.seed)


def _answering(name: str, pipeline: Pipeline) -> Stage:
    """The last stage that writes the answer's text: the one a request's sampling must reach."""
    if not pipeline.answers:
        raise ApiError(400, f"pipeline {name!r} writes no answer text", param="model")
    return next(s for s in reversed(pipeline.stages) if "text" in s.writes)


def _pipeline_state(name: str, pipeline: Pipeline, req: Sampling, query: str,
                    history: list[ChatTurn]) -> State:
    """A request as a pipeline state, its sampling fields given as `sampling` for the stage that
    makes the answer; a field that stage does not read (it keeps its own params) is a 400."""
    stage = _answering(name, pipeline)
    if "sampling" not in (*stage.reads, *stage.optional_reads):
        refused = [f for f in req.asked() if not (f == "n" and req.n == 1)]
        if refused:
            raise ApiError(400, f"{refused[0]} cannot be honoured: pipeline {name!r} answers with "
                           f"stage {stage.name!r}, which keeps its configured sampling",
                           param=refused[0])
    if req.stream and req.n != 1:
        raise ApiError(400, "streaming supports n=1", param="n")
    retrieval = req.retrieval()
    if retrieval is not None:
        field = req.retrieval_field()
        if not any("retrieval" in s.optional_reads for s in pipeline.stages):
            raise ApiError(400, f"{field} cannot be honoured: pipeline {name!r} retrieves nothing",
                           param=field)
        try:
            parse_filter(retrieval.filter)
        except FilterError as exc:
            raise ApiError(400, f"filter: {exc}", param="filter") from None
    return State(query=query, history=history, sampling=req.override(), retrieval=retrieval)


def _choices(stage: Stage, state: State, n: int) -> list[tuple[str, str]]:
    """(text, finish reason) of each of n choices: the answer's text, then the other completions
    of the generation that made it (n > 1 only reaches a stage that honours it)."""
    made = state.generation.completions if "generation" in stage.writes and state.generation else []
    texts = [state.answer.text, *(c.text.strip() for c in made[1:n])]
    reasons = [c.finish_reason or "stop" for c in made] or ["stop"]
    return list(zip(texts, reasons))


def _rag_extra(state: State) -> dict[str, Any]:
    """What a pipeline's answer rests on: citations, the passages the prompt showed, every
    retrieved passage with its text and score, the grounding verdict and the stage trace."""
    answer = state.answer
    assert answer is not None
    return {
        "citations": [c.model_dump() for c in answer.citations],
        "sources": [s.model_dump() for s in answer.sources],
        "passages": [{"chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id, "title": h.chunk.title,
                      "text": h.chunk.text, "score": h.score, "retriever": h.retriever}
                     for h in state.hits],
        "supported": answer.supported,
        "trace": [t.model_dump(exclude={"info"}) for t in answer.trace],
    }


def _usage(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object, with the prompt tokens that hit a cache as `cached_tokens`."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens}}


async def _sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        async for event in events:
            yield f"data: {json.dumps(event)}\n\n"
    except RagError as exc:
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'invalid_request_error'}})}\n\n"
    yield "data: [DONE]\n\n"


PLAYGROUND = Path(__file__).with_name("playground.html")
PLAYGROUND_LOCKED = ("<!doctype html><title>rag-icl</title><p>This server needs an API key: open "
                     "<code>/?key=YOUR_KEY</code>.</p>")


def create_app(config: ServeConfig, served: Served | None = None) -> FastAPI:
    """The FastAPI app; `served` defaults to building what the config names."""
    served = served or Served.from_config(config)
    metrics = ServerMetrics()
    keys = [k.encode() for k in config.keys()]
    page = PLAYGROUND.read_text(encoding="utf-8")
    app = FastAPI(title="rag-icl", docs_url=None, redoc_url=None)
    app.add_middleware(Limits, max_body_bytes=config.max_body_bytes, max_in_flight=config.max_in_flight)
    app.middleware("http")(metrics.middleware)

    async def authorized(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].encode() if header.lower().startswith("bearer ") else b""
        # Compare against every key, in constant time, so timing tells nothing.
        if not any([hmac.compare_digest(given, key) for key in keys]):
            raise ApiError(401, "invalid or missing API key", "authentication_error", code="invalid_api_key")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_body(exc.status, exc.message, exc.kind, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":  # its location is a character offset
            why = first.get("ctx", {}).get("error", "invalid")
            return error_body(400, f"body is not valid JSON: {why} character {first['loc'][-1]}",
                              "invalid_request_error")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        why = first.get("msg", "invalid request").removeprefix("Value error, ")
        return error_body(400, f"{where or 'body'}: {why}", "invalid_request_error",
                          param=where or None)

    @app.exception_handler(RagError)
    async def _rag_error(_: Request, exc: RagError) -> JSONResponse:
        return error_body(400, str(exc), "invalid_request_error")

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # A body FastAPI could not parse (not UTF-8, nested too deep) names why in its cause.
        cause = f": {type(exc.__cause__).__name__}: {exc.__cause__}" if exc.__cause__ else ""
        return error_body(exc.status_code, f"{exc.detail}{cause}", "invalid_request_error")

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        return error_body(500, f"internal error: {type(exc).__name__}", "server_error")

    def unknown(model: str) -> ApiError:
        return ApiError(404, f"model {model!r} not found; served: {', '.join(served.names())}",
                        param="model", code="model_not_found")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def list_models() -> dict[str, Any]:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "rag-icl",
                 "kind": served.kind(name)} for name in served.names()]
        return {"object": "list", "data": data}

    @app.get("/", response_class=HTMLResponse)
    async def playground(request: Request, key: str = "") -> HTMLResponse:
        """The playground page; with API keys set, opened as `/?key=KEY` (its calls send it)."""
        if keys and not any([hmac.compare_digest(key.encode(), k) for k in keys]):
            return HTMLResponse(PLAYGROUND_LOCKED, status_code=401)
        return HTMLResponse(page)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(req: ChatRequest) -> Any:
        turns = [ChatTurn(role=m.role, content=m.content) for m in req.messages]
        max_tokens = req.max_completion_tokens or req.max_tokens
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": created, "model": req.model}
        if req.model in served.pipelines:
            pipeline = served.pipelines[req.model]
            state = _pipeline_state(req.model, pipeline, req, turns[-1].content, turns[:-1])
            if req.stream:
                return StreamingResponse(_sse(_stream_pipeline(pipeline, state, head, metrics)),
                                         media_type="text/event-stream")
            (state,) = await run_in_threadpool(pipeline.run, [state])
            answer = state.answer
            metrics.tokens(answer.usage.prompt_tokens, answer.usage.completion_tokens)
            choices = [{"index": i, "message": {"role": "assistant", "content": text},
                        "finish_reason": reason} for i, (text, reason) in
                       enumerate(_choices(_answering(req.model, pipeline), state, req.n))]
            return {**head, "object": "chat.completion", "choices": choices,
                    "usage": _usage(answer.usage), "rag": _rag_extra(state)}
        if req.model not in served.generators:
            raise unknown(req.model)
        generator = served.generators[req.model]
        params = _params(req, generator, max_tokens)
        prompt = Prompt(messages=turns)
        if req.stream:
            if req.n != 1:
                raise ApiError(400, "streaming supports n=1", param="n")
            return StreamingResponse(_sse(_stream_chat(generator, prompt, params, head, metrics)),
                                     media_type="text/event-stream")
        (generation,) = await generator.agenerate([prompt], params)
        metrics.tokens(generation.usage.prompt_tokens, generation.usage.completion_tokens)
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish_reason or "stop"} for i, c in enumerate(generation.completions)]
        return {**head, "object": "chat.completion", "choices": choices,
                "usage": _usage(generation.usage)}

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def complete(req: CompletionRequest) -> Any:
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
        if req.model in served.pipelines:
            return await complete_with_pipeline(req, head)
        if req.model not in served.generators:
            raise ApiError(404, f"model {req.model!r} is not a text-completion model",
                           param="model", code="model_not_found")
        generator = served.generators[req.model]
        params = _params(req, generator, req.max_tokens)
        prompts = [Prompt(text=p) for p in req.prompt]
        if req.stream:
            if req.n != 1 or len(prompts) != 1:
                raise ApiError(400, "streaming supports one prompt and n=1", param="stream")
            return StreamingResponse(_sse(_stream_text(generator, prompts[0], params, head, metrics)),
                                     media_type="text/event-stream")
        generations = await generator.agenerate(prompts, params)
        choices, used = [], Usage()
        for g in generations:
            used += g.usage
            choices += [{"index": len(choices), "text": c.text, "logprobs": None,
                         "finish_reason": c.finish_reason or "stop"} for c in g.completions]
        metrics.tokens(used.prompt_tokens, used.completion_tokens)
        return {**head, "object": "text_completion", "choices": choices, "usage": _usage(used)}

    async def complete_with_pipeline(req: CompletionRequest, head: dict[str, Any]) -> Any:
        """Each prompt a question without history, run as one batch; `rag` holds one entry per
        prompt."""
        pipeline = served.pipelines[req.model]
        states = [_pipeline_state(req.model, pipeline, req, p, []) for p in req.prompt]
        if req.stream:
            if len(states) != 1:
                raise ApiError(400, "streaming supports one prompt and n=1", param="stream")
            return StreamingResponse(
                _sse(_stream_pipeline(pipeline, states[0], head, metrics, chat=False)),
                media_type="text/event-stream")
        states = await run_in_threadpool(pipeline.run, states)
        stage, choices, used = _answering(req.model, pipeline), [], Usage()
        for state in states:
            used += state.answer.usage
            choices += [{"index": len(choices), "text": text, "logprobs": None,
                         "finish_reason": reason} for text, reason in _choices(stage, state, req.n)]
        metrics.tokens(used.prompt_tokens, used.completion_tokens)
        return {**head, "object": "text_completion", "choices": choices, "usage": _usage(used),
                "rag": [_rag_extra(s) for s in states]}

    @app.post("/v1/embeddings", dependencies=[Depends(authorized)])
    async def embed(req: EmbeddingRequest) -> Any:
        if req.model not in served.encoders:
            raise unknown(req.model)
        vectors = await run_in_threadpool(served.encoders[req.model].encode_documents, req.input)
        as_base64 = req.encoding_format == "base64"  # little-endian float32, as OpenAI sends it
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if as_base64 else v.tolist()}
                for i, v in enumerate(vectors)]
        tokens = await run_in_threadpool(served.encoders[req.model].count_tokens, req.input)
        return {"object": "list", "data": data, "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


async def _stream_chat(generator: Generator, prompt: Prompt, params: SamplingParams,
                       head: dict[str, Any], metrics: ServerMetrics) -> AsyncIterator[dict[str, Any]]:
    chunk = {**head, "object": "chat.completion.chunk"}
    yield {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    last = None
    async for delta in generator.stream(prompt, params):
        last = delta
        yield {**chunk, "choices": [{"index": 0, "delta": {"content": delta.text},
                                     "finish_reason": delta.finish_reason}]}
    if last is not None:
        metrics.tokens(last.usage.prompt_tokens, last.usage.completion_tokens)


async def _stream_text(generator: Generator, prompt: Prompt, params: SamplingParams,
                       head: dict[str, Any], metrics: ServerMetrics) -> AsyncIterator[dict[str, Any]]:
    last = None
    async for delta in generator.stream(prompt, params):
        last = delta
        yield {**head, "object": "text_completion",
               "choices": [{"index": 0, "text": delta.text, "logprobs": None, "finish_reason": delta.finish_reason}]}
    if last is not None:
        metrics.tokens(last.usage.prompt_tokens, last.usage.completion_tokens)


async def _stream_pipeline(
    pipeline: Pipeline, state: State, head: dict[str, Any], metrics: ServerMetrics,
    chat: bool = True,
) -> AsyncIterator[dict[str, Any]]:
    """The pipeline's own stream: earlier stages run first, then the last stage's tokens as they
    are made, as chat or text-completion chunks; the answer's citations, sources and trace come
    with the last chunk."""
    chunk = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
    stream = pipeline.stream(state)
    if chat:
        yield {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]}
    async for delta in stream:
        piece = {"delta": {"content": delta.text}} if chat else {"text": delta.text,
                                                                  "logprobs": None}
        yield {**chunk, "choices": [{"index": 0, **piece, "finish_reason": delta.finish_reason}]}
    answer = stream.answer
    metrics.tokens(answer.usage.prompt_tokens, answer.usage.completion_tokens)
    yield {**chunk, "choices": [], "usage": _usage(answer.usage), "rag": _rag_extra(state)}
