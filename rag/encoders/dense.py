"""Dense text embeddings from any sentence-transformers model, cached on disk.

Embedding a corpus is the slowest part of indexing on a CPU (minutes for ten thousand passages),
so large encode calls are cached under a hash of the encoder's identity and the exact texts: an
unchanged corpus re-indexes instantly, and any change to text or model misses the cache.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import Field

from rag.errors import RagError
from rag.models import cache_dir, resolve_model
from rag.registry import Component, ComponentConfig, register
from rag.storage import atomic_save_npy, load_npy

CACHE_MIN_TEXTS = 32  # smaller calls (single queries) are cheaper to recompute than to store


class Encoder(Component):
    """Base of text encoders: a fixed-size vector per text."""

    kind = "encoder"

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """Identifies the vectors this encoder makes; indexes refuse queries from another."""
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def encode_queries(self, texts: list[str], progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def encode_documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        raise NotImplementedError


@register("encoder", "sentence_transformers")
class SentenceTransformerEncoder(Encoder):
    """L2-normalized embeddings (so inner product is cosine), batched, with a progress bar."""

    class Config(ComponentConfig):
        model: str = "encoder"
        batch_size: int = Field(default=64, ge=1)
        device: str = Field(default="auto", description="auto, cpu, cuda, ...")
        normalize: bool = True
        query_prefix: str = Field(default="", description='e.g. "query: " for E5 models')
        document_prefix: str = Field(default="", description='e.g. "passage: " for E5 models')
        cache: bool = Field(default=True, description="cache large encode calls on disk")

    config: Config

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        device = None if self.config.device == "auto" else self.config.device
        return SentenceTransformer(str(resolve_model(self.config.model)), device=device)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    def encode_queries(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return self._encode([self.config.query_prefix + t for t in texts], progress)

    def encode_documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return self._encode([self.config.document_prefix + t for t in texts], progress)

    def _encode(self, texts: list[str], progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if any(not isinstance(t, str) for t in texts):
            raise RagError("encoder inputs must be strings")
        path = None
        if self.config.cache and len(texts) >= CACHE_MIN_TEXTS:
            digest = hashlib.sha256(self.fingerprint.encode())
            for text in texts:
                digest.update(text.encode())
                digest.update(b"\x00")
            path = cache_dir() / "embeddings" / f"{digest.hexdigest()}.npy"
            if path.is_file():
                cached = load_npy(path, "embedding cache")
                if cached.shape[0] == len(texts):
                    return cached
        vectors = self.model.encode(
            texts, batch_size=self.config.batch_size, normalize_embeddings=self.config.normalize,
            convert_to_numpy=True, show_progress_bar=progress,
        ).astype(np.float32)
        if path is not None:
            atomic_save_npy(path, vectors)
        return vectors
