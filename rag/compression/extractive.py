"""Extractive compression (RECOMP-extractive style): keep the sentences most similar to the query.

RECOMP trains its dual encoder on the end task; here the retrieval encoder scores the sentences
(no training data for the task exists offline). The best sentences are kept until the budget,
then shown in their original order inside their passage. With an empty question (index time,
`compress_passages`) the leading sentences are kept: the lead of an encyclopedic passage is its
summary, and nothing else ranks sentences without a query.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import Field

from rag.chunkers.sentence import sentence_spans
from rag.compression.base import Compressed, Compressor, CompressorConfig, with_text
from rag.encoders.dense import Encoder
from rag.registry import register
from rag.types import Hit


@register("compressor", "extractive")
class ExtractiveCompressor(Compressor):
    nested = {"encoder": "encoder"}

    class Config(CompressorConfig):
        encoder: dict[str, Any] = Field(default_factory=lambda: {"type": "sentence_transformers"})

    config: Config
    encoder: Encoder

    @cached_property
    def segmenter(self) -> Any:
        import pysbd

        return pysbd.Segmenter(language="en", clean=False)

    def compress(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[Compressed]:
        # sentences[q] = [(hit index, text)]; a query's sentence scores: similarity to it, or,
        # with no question, the lead first (no sentence is embedded for those)
        sentences = [[(i, h.chunk.text[a:b]) for i, h in enumerate(hs)
                      for a, b in sentence_spans(self.segmenter, h.chunk.text)] for hs in hits]
        scores = [-np.arange(len(per_query), dtype=float) for per_query in sentences]
        asked = [q for q, query in enumerate(queries) if query]
        flat = [text for q in asked for _, text in sentences[q]]
        if flat:  # embedded together for the whole batch
            vectors = self.encoder.encode_documents(flat)
            query_vectors = self.encoder.encode_queries([queries[q] for q in asked])
            start = 0
            for row, q in enumerate(asked):
                scores[q] = vectors[start : start + len(sentences[q])] @ query_vectors[row]
                start += len(sentences[q])
        out = []
        for q, (hs, per_query) in enumerate(zip(hits, sentences)):
            original, budget = self.budget(hs)
            lengths = [self.count(text) for _, text in per_query]
            kept, used = set(), 0
            for j in np.argsort(-scores[q], kind="stable"):
                if used + lengths[j] <= budget:
                    kept.add(int(j))
                    used += lengths[j]
            texts: dict[int, list[str]] = {}
            for j, (i, text) in enumerate(per_query):
                if j in kept:
                    texts.setdefault(i, []).append(text)
            new = [with_text(hs[i], " ".join(texts[i])) for i in sorted(texts)]
            out.append(Compressed(hits=new, original_tokens=original,
                                  kept_tokens=sum(self.count(h.chunk.text) for h in new)))
        return out
