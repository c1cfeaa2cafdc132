"""HyDE (Gao et al. 2022): retrieve with the embedding of hypothetical answer passages.

The generator writes `n` passages that would answer the query (sampled, T = 0.7); the query
vector is the mean of the query's own embedding and the passages' embeddings, as in the paper;
the dense index is searched with that vector. The paper uses n = 8; on a CPU fewer is cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from rag.errors import ConfigError
from rag.generators.base import Generator
from rag.registry import ComponentConfig, register
from rag.retrievers.base import Filter, Retriever, check_k
from rag.retrievers.hnsw import HNSWRetriever
from rag.types import Chunk, Hit, Prompt, SamplingParams

HYDE_PROMPT = "Write a short encyclopedia passage that answers the question.\nQuestion: {query}"


@register("retriever", "hyde")
class HyDERetriever(Retriever):
    """Hypothetical-document embeddings over an HNSW index."""

    nested = {"retriever": "retriever", "generator": "generator"}

    class Config(ComponentConfig):
        retriever: dict[str, Any]
        generator: dict[str, Any]
        n: int = Field(default=8, ge=1, description="hypothetical passages per query")
        temperature: float = Field(default=0.7, ge=0)
        max_tokens: int = Field(default=96, ge=1)
        prompt: str = HYDE_PROMPT

    config: Config
    retriever: HNSWRetriever
    generator: Generator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.retriever, HNSWRetriever):
            raise ConfigError(f"HyDE needs a dense (hnsw) retriever, got {self.retriever.name!r}")

    def __len__(self) -> int:
        return len(self.retriever)

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        self.retriever.index(chunks, progress)

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        self.retriever.add(chunks, progress)

    def delete(self, ids: Sequence[str]) -> None:
        self.retriever.delete(ids)

    def save(self, path: str | Path) -> None:
        self.retriever.save(path)

    def hypothetical(self, queries: Sequence[str]) -> list[list[str]]:
        """The generated passages for each query."""
        params = SamplingParams(n=self.config.n, temperature=self.config.temperature,
                                max_tokens=self.config.max_tokens)
        prompts = [Prompt.chat(self.config.prompt.format(query=q)) for q in queries]
        return [[c.text for c in g.completions] for g in self.generator.generate(prompts, params)]

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        encoder = self.retriever.encoder
        passages = self.hypothetical(queries)
        own = encoder.encode_queries(list(queries))
        flat = encoder.encode_documents([p for ps in passages for p in ps])
        vectors, start = [], 0
        for i, ps in enumerate(passages):
            vectors.append(np.vstack([own[i : i + 1], flat[start : start + len(ps)]]).mean(axis=0))
            start += len(ps)
        return np.asarray(vectors, dtype=np.float32)

    def search(
        self, queries: Sequence[str], k: int = 10, filter: Filter | None = None
    ) -> list[list[Hit]]:
        check_k(k)
        hits = self.retriever.search_vectors(self.query_vectors(queries), k, filter)
        return [[h.model_copy(update={"retriever": self.name}) for h in row] for row in hits]
