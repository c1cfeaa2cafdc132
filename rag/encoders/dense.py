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
from tqdm.auto import tqdm

from rag.dtypes import DTYPE_HELP, DtypeChoice, InProcessModel, Role
from rag.errors import RagError
from rag.models import cache_dir, resolve_model
from rag.registry import Component, ComponentConfig, register, registered
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
        return _digest(self.pinned_spec())

    def pinned_spec(self) -> dict[str, Any]:
        """The spec with every `auto` resolved as it is here: what a saved index records, so it
        reloads into an encoder that makes the same vectors on any machine."""
        return self.spec()


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def index_encoder(given: Encoder | dict[str, Any] | None, saved: dict[str, Any]) -> Encoder | dict[str, Any]:
    """The encoder that queries a saved index: the one given, else the manifest's; `auto` (or no
    dtype) means the dtype the index's vectors were made in, and a manifest saved before encoders
    had a dtype made them in float32."""
    cls = registered("encoder").get(saved.get("type", ""))
    if cls is None or not issubclass(cls, LocalEncoder):
        return saved if given is None else given
    made_in = saved.get("dtype", "float32")
    if given is None:
        return {**saved, "dtype": made_in}
    if isinstance(given, dict) and given.get("dtype", "auto") == "auto":
        return {**given, "dtype": made_in}
    return given


class LocalEncoderConfig(ComponentConfig):
    """What every in-process encoder needs: where it runs, at which precision."""

    device: str = Field(default="auto", description="auto, cpu, cuda, ...")
    dtype: DtypeChoice = Field(default="auto", description=DTYPE_HELP)
    batch_size: int = Field(default=64, ge=1)


class LocalEncoder(InProcessModel, Encoder):
    """An encoder whose model runs in this process, in the dtype `auto` resolves to here."""

    dtype_role: Role = "encoder"

    config: LocalEncoderConfig

    def pinned_spec(self) -> dict[str, Any]:
        return {**self.spec(), "dtype": self.dtype}

    @property
    def fingerprint(self) -> str:
        """Vectors made in bfloat16 and in float32 differ, so neither the embedding cache nor an
        index confuses them; float32 keeps the identity encoders had before they had a dtype,
        so indexes and caches made then stay valid."""
        spec = self.pinned_spec()
        if spec["dtype"] == "float32":
            del spec["dtype"]
        return _digest(spec)

    def encode_queries(self, texts: list[str], progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def encode_documents(self, texts: list[str], progress: bool = False) -> np.ndarray:
        raise NotImplementedError

    def count_tokens(self, texts: list[str]) -> int:
        """Input tokens of `texts` as the encoder reads them (what an embeddings API bills)."""
        raise NotImplementedError


@register("encoder", "sentence_transformers")
class SentenceTransformerEncoder(LocalEncoder):
    """L2-normalized embeddings (so inner product is cosine), batched, with a progress bar."""

    class Config(LocalEncoderConfig):
        model: str = "encoder"
        normalize: bool = True
        query_prefix: str = Field(default="", description='e.g. "query: " for E5 models')
        document_prefix: str = Field(default="", description='e.g. "passage: " for E5 models')
        cache: bool = Field(default=True, description="cache large encode calls on disk")

    config: Config

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(resolve_model(self.config.model)), device=self.device,
                                   model_kwargs={"dtype": self.torch_dtype})

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def count_tokens(self, texts: list[str]) -> int:
        rows = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        return sum(len(row) for row in rows)

    @property
    def max_length(self) -> int:
        return int(self.model.max_seq_length)

    def encode_queries(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return self._encode([self.config.query_prefix + t for t in texts], progress)

    def token_states(
        self, texts: list[str], overlap: int = 64, progress: bool = False
    ) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
        """Contextual token embeddings of whole texts, however long, for late chunking.

        For each text: states of shape (n + 2, d) for [CLS], its n tokens and [SEP], and the
        character offsets of the n tokens. A text longer than the encoder's window is run in
        windows starting every `window - overlap` tokens; each later window's first `overlap`
        states are dropped, so every token keeps context on both sides where it exists.
        """
        import torch

        tokenizer = self.tokenizer
        content = self.max_length - 2  # room for [CLS] and [SEP]
        if not 0 <= overlap < content:
            raise RagError(f"overlap must be in [0, {content}), got {overlap}")
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)
        windows: list[tuple[int, int, list[int]]] = []  # (text index, first token, ids)
        for t, ids in enumerate(encoded["input_ids"]):
            starts = range(0, max(len(ids) - overlap, 1), content - overlap)
            windows.extend((t, s, ids[s : s + content]) for s in starts)
        windows.sort(key=lambda w: len(w[2]))  # similar lengths per batch: little padding
        model = self.model[0].auto_model
        device = next(model.parameters()).device
        states: list[dict[int, np.ndarray]] = [{} for _ in texts]  # by window start
        batch_size = self.config.batch_size
        for b in tqdm(range(0, len(windows), batch_size), desc="token states", disable=not progress):
            batch = [[tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
                     for _, _, ids in windows[b : b + batch_size]]
            width = max(map(len, batch))
            ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in batch])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in batch])
            with torch.inference_mode():
                hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device))
            hidden = hidden.last_hidden_state.float().cpu().numpy()
            for row, (t, start, window_ids) in zip(hidden, windows[b : b + batch_size]):
                n = len(window_ids)
                first = 0 if start == 0 else 1 + overlap  # later windows: drop overlap + [CLS]
                last = len(encoded["input_ids"][t]) <= start + content  # keep [SEP] once
                states[t][start] = row[first : 1 + n + (1 if last else 0)]
        return [(np.vstack([parts[s] for s in sorted(parts)]), [tuple(o) for o in offsets])
                for parts, offsets in zip(states, encoded["offset_mapping"])]

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
