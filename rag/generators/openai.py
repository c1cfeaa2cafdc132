"""Any OpenAI-compatible server (`vllm serve`, `rag serve`, hosted APIs) over httpx.

Requests for a batch run concurrently; transport errors, 429 and 5xx answers are retried with
exponential backoff; anything else fails at once with the server's own error message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import Field

from rag.errors import RagError
from rag.generators.base import Generator, PromptLike, as_prompt, check_batch
from rag.registry import ComponentConfig, register
from rag.types import Completion, Generation, Prompt, SamplingParams, Usage

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIError(RagError):
    """The server refused a request, or kept failing after every retry."""


@register("generator", "openai")
class OpenAIGenerator(Generator):
    """Chat prompts go to `/chat/completions`, text prompts to `/completions`."""

    class Config(ComponentConfig):
        model: str
        base_url: str = "http://127.0.0.1:8000/v1"
        api_key_env: str = Field(
            default="OPENAI_API_KEY", description="environment variable holding the API key"
        )
        timeout: float = Field(default=120.0, gt=0)
        max_retries: int = Field(default=3, ge=0)
        backoff: float = Field(default=0.5, ge=0, description="first retry delay, doubled each time")
        concurrency: int = Field(default=8, ge=1)

    config: Config

    def __init__(self, transport: httpx.BaseTransport | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        key = os.environ.get(self.config.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(
            base_url=self.config.base_url.rstrip("/"), headers=headers,
            timeout=self.config.timeout, transport=transport,
        )

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        delay = self.config.backoff
        for attempt in range(self.config.max_retries + 1):
            last = attempt == self.config.max_retries
            try:
                response = self.client.post(path, json=body)
            except httpx.TransportError as exc:
                if last:
                    raise OpenAIError(f"{self.config.base_url}{path}: {exc!r}") from None
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in RETRY_STATUS or last:
                    raise OpenAIError(
                        f"{self.config.base_url}{path} answered {response.status_code}: "
                        f"{response.text[:500]}"
                    )
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _body(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.config.model, "max_tokens": params.max_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "n": params.n,
        }
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        if prompt.messages is not None:
            body["messages"] = [m.model_dump() for m in prompt.messages]
            return "/chat/completions", body
        body["prompt"] = prompt.text
        return "/completions", body

    def _one(self, prompt: Prompt, params: SamplingParams) -> Generation:
        path, body = self._body(prompt, params)
        data = self._post(path, body)
        completions = [
            Completion(
                text=(c.get("message") or {}).get("content") or c.get("text") or "",
                finish_reason=c.get("finish_reason"),
            )
            for c in data.get("choices", [])
        ]
        usage = data.get("usage") or {}
        return Generation(
            completions=completions,
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
            ),
        )

    def _map(self, fn: Any, items: list[Any]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(fn, items))

    def generate(
        self, prompts: Sequence[PromptLike], params: SamplingParams | None = None
    ) -> list[Generation]:
        params = params or SamplingParams()
        return self._map(lambda p: self._one(as_prompt(p), params), list(prompts))

    def score(self, prompts: Sequence[PromptLike], continuations: Sequence[str]) -> list[list[float]]:
        """Echoed prompt log-probs from `/completions`; the tokens after the prompt's text."""
        check_batch(prompts, continuations)
        texts = []
        for prompt in map(as_prompt, prompts):
            if prompt.text is None:
                raise RagError(
                    "OpenAIGenerator.score needs text prompts: the chat template is on the server"
                )
            texts.append(prompt.text)

        def one(pair: tuple[str, str]) -> list[float]:
            text, continuation = pair
            body = {
                "model": self.config.model, "prompt": text + continuation, "max_tokens": 1,
                "temperature": 0.0, "echo": True, "logprobs": 0,
            }
            logprobs = self._post("/completions", body)["choices"][0]["logprobs"]
            end = len(text) + len(continuation)
            return [
                lp
                for lp, offset in zip(logprobs["token_logprobs"], logprobs["text_offset"])
                if len(text) <= offset < end
            ]

        return self._map(one, list(zip(texts, continuations)))
