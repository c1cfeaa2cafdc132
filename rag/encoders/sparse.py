"""SPLADE-style learned sparse encoder over any Hugging Face masked-LM checkpoint.

Term weights follow SPLADE (max pooling): w_j = max over the text's tokens i of
log(1 + relu(logit_ij)), one weight per vocabulary entry, most of them zero. Checkpoints trained
for it include `naver/splade-cocondenser-ensembledistil`, `naver/splade-v3`,
`prithivida/Splade_PP_en_v1` and `opensearch-project/opensearch-neural-sparse-encoding-v1`; any
`AutoModelForMaskedLM` folder loads, but only such checkpoints give useful weights.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from tqdm.auto import tqdm

from rag.encoders.dense import LocalEncoder, LocalEncoderConfig
from rag.errors import RagError
from rag.models import resolve_model
from rag.registry import register


@register("encoder", "splade")
class SpladeEncoder(LocalEncoder):
    """Texts to sparse vocabulary-sized vectors (a CSR matrix, one row per text)."""

    class Config(LocalEncoderConfig):
        model: str = Field(description="a masked-LM folder or cached HF id, e.g. naver/splade-v3")
        max_length: int = Field(default=256, ge=8)
        batch_size: int = Field(default=16, ge=1)

    config: Config

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        path = resolve_model(self.config.model)
        model = AutoModelForMaskedLM.from_pretrained(path, dtype=self.torch_dtype)
        model = model.to(self.device).eval()
        return AutoTokenizer.from_pretrained(path), model

    @property
    def dim(self) -> int:
        return int(self._loaded[1].config.vocab_size)

    def term_weights(self, texts: list[str], progress: bool = False) -> sp.csr_matrix:
        import torch

        if any(not isinstance(t, str) for t in texts):
            raise RagError("encoder inputs must be strings")
        tokenizer, model = self._loaded
        # Longest first, so a batch holds texts of about one length and pads little.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows = []
        size = self.config.batch_size
        for start in tqdm(range(0, len(texts), size), desc="splade", disable=not progress):
            batch = tokenizer([texts[i] for i in order[start : start + size]], padding=True,
                              truncation=True, max_length=self.config.max_length,
                              return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = model(**batch).logits  # (batch, tokens, vocab): the one big tensor
                padding = batch["attention_mask"].unsqueeze(-1) == 0
                # log1p(relu(.)) never decreases, so pooling the logits first takes the same
                # maximum in one pass over the tensor instead of four.
                pooled = logits.masked_fill_(padding, 0).amax(dim=1)
                weights = torch.log1p(torch.relu(pooled))
            rows.append(sp.csr_matrix(weights.float().cpu().numpy()))
        if not rows:
            return sp.csr_matrix((0, self.dim), dtype=np.float32)
        return sp.vstack(rows, format="csr").astype(np.float32)[np.argsort(order)]

    def encode_queries(self, texts: list[str], progress: bool = False) -> sp.csr_matrix:
        return self.term_weights(texts, progress)

    def encode_documents(self, texts: list[str], progress: bool = False) -> sp.csr_matrix:
        return self.term_weights(texts, progress)
