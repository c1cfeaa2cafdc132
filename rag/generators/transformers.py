"""Plain transformers generation: the fallback backend and the reference for `score`."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from pydantic import Field

from rag.dtypes import InProcessModel, Role
from rag.errors import RagError
from rag.generators.base import (
    LocalGenerator,
    LocalModelConfig,
    PromptLike,
    check_batch,
    truncate_at_stop,
)
from rag.registry import register
from rag.types import Completion, Generation, SamplingParams, Usage


@register("generator", "transformers")
class TransformersGenerator(InProcessModel, LocalGenerator):
    """`AutoModelForCausalLM` in-process, batched with padding."""

    dtype_role: Role = "generator"

    class Config(LocalModelConfig):
        device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1, ...")
        batch_size: int = Field(default=8, ge=1)

    config: Config

    @cached_property
    def model(self) -> Any:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.torch_dtype)
        return model.to(self.device).eval()

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _batch(self, rows: list[list[int]], left: bool) -> tuple[Any, Any]:
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            ids[i, span] = torch.tensor(row)
            mask[i, span] = 1
        return ids.to(self.device), mask.to(self.device)

    def generate(
        self, prompts: Sequence[PromptLike], params: SamplingParams | None = None
    ) -> list[Generation]:
        import torch

        params = params or SamplingParams()
        if params.seed is not None:
            torch.manual_seed(params.seed)
        rows = [self.prompt_ids(p) for p in prompts]
        if any(not r for r in rows):
            raise RagError("empty prompt: it renders to zero tokens")
        eos = self.tokenizer.eos_token_id
        results: list[Generation] = []
        size = self.config.batch_size
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            ids, mask = self._batch(batch, left=True)
            sample = params.temperature > 0
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=params.max_tokens,
                    do_sample=sample, temperature=params.temperature if sample else None,
                    top_p=params.top_p if sample else None, top_k=None,
                    num_return_sequences=params.n, pad_token_id=self._pad_id(),
                    return_dict_in_generate=True, output_scores=True,
                )
                steps = self.model.compute_transition_scores(
                    out.sequences, out.scores, normalize_logits=True
                )
            new = out.sequences[:, ids.shape[1] :]
            for i, prompt_ids in enumerate(batch):
                completions = []
                for j in range(i * params.n, (i + 1) * params.n):
                    tokens = new[j].tolist()
                    length = tokens.index(eos) + 1 if eos in tokens else len(tokens)
                    text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
                    text, stopped = truncate_at_stop(text, params.stop)
                    finished = stopped or eos in tokens[:length]
                    completions.append(
                        Completion(
                            text=text,
                            token_ids=tokens[:length],
                            logprob=float(steps[j, :length].sum()),
                            finish_reason="stop" if finished else "length",
                        )
                    )
                usage = Usage(
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=sum(len(c.token_ids) for c in completions),
                )
                results.append(Generation(completions=completions, usage=usage))
        return results

    def score(self, prompts: Sequence[PromptLike], continuations: Sequence[str]) -> list[list[float]]:
        import torch

        check_batch(prompts, continuations)
        pairs = [(self.prompt_ids(p), self.continuation_ids(c)) for p, c in zip(prompts, continuations)]
        if any(not p for p, _ in pairs):
            raise RagError("empty prompt: it renders to zero tokens")
        scores: list[list[float]] = []
        size = self.config.batch_size
        for start in range(0, len(pairs), size):
            batch = pairs[start : start + size]
            ids, mask = self._batch([p + c for p, c in batch], left=False)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
                # logprobs[:, t] predicts token t + 1
                token_logprobs = logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            for i, (prompt_ids, cont_ids) in enumerate(batch):
                first = len(prompt_ids) - 1
                scores.append(token_logprobs[i, first : first + len(cont_ids)].tolist())
        return scores

    def next_token_logprobs(
        self, prompts: Sequence[PromptLike], options: Sequence[str]
    ) -> list[list[float]]:
        """One forward pass per batch; read each row's distribution after its last token."""
        import torch

        ids = self.option_ids(options)
        rows = [self.prompt_ids(p) for p in prompts]
        if any(not r for r in rows):
            raise RagError("empty prompt: it renders to zero tokens")
        result: list[list[float]] = []
        size = self.config.batch_size
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            tokens, mask = self._batch(batch, left=False)
            with torch.inference_mode():
                logits = self.model(input_ids=tokens, attention_mask=mask).logits.float()
            last = torch.tensor([len(r) - 1 for r in batch], device=logits.device)
            logprobs = torch.log_softmax(logits[torch.arange(len(batch)), last], dim=-1)
            result.extend(logprobs[:, ids].tolist())
        return result
