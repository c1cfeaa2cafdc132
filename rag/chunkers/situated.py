"""Situated chunk embeddings: each chunk embedded together with what surrounds it.

Three training-free variants (SitEmb and contextual document embeddings are trained models;
these are their CPU analogues, see docs):
- `situated_window`: the encoder reads a window of neighbouring text around the chunk and the
  chunk's own tokens are pooled (late chunking inside the window), plus a residual of the plain
  chunk vector, like SitEmb's cos(q, situated) + 0.5 cos(q, chunk).
- `situated_prefix`: the chunk is embedded after its document's title and a short summary
  (the document's first sentence).
- `situated_llm`: Anthropic's contextual retrieval: the generator writes one sentence that
  situates the chunk in its document; that context is prepended. Contexts are cached on disk per
  (generator, document, chunk), so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from rag.chunkers.embedding import (
    DEFAULT_ENCODER, ChunkEmbedder, EmbedderConfig, by_document, normalize,
)
from rag.chunkers.late import fill_empty, pool_spans
from rag.chunkers.sentence import sentence_spans
from rag.generators.base import Generator
from rag.models import cache_dir
from rag.registry import ComponentConfig, register
from rag.types import Chunk, Document, Prompt, SamplingParams

SITUATE_PROMPT = (
    "<document>\n{document}\n</document>\n"
    "Here is the chunk we want to situate within the whole document\n"
    "<chunk>\n{chunk}\n</chunk>\n"
    "Please give a short succinct context to situate this chunk within the overall document for "
    "the purposes of improving search retrieval of the chunk. Answer only with the succinct "
    "context and nothing else."
)


@register("embedder", "situated_window")
class SituatedWindowEmbedder(ChunkEmbedder):
    """Pool the chunk's own tokens from an encoder pass over its neighbourhood."""

    class Config(EmbedderConfig):
        context_chars: int = Field(default=400, ge=0, description="characters on each side")
        title: bool = Field(default=True, description="start each window with the title")
        residual: float = Field(default=0.5, ge=0, description="weight of the plain chunk vector")

    config: Config

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        parents = by_document(docs, chunks)
        windows, spans = [], []
        for chunk in chunks:
            doc = parents[chunk.doc_id]
            lo = max(0, chunk.start - self.config.context_chars)
            hi = min(len(doc.text), chunk.end + self.config.context_chars)
            prefix = f"{doc.title}\n" if self.config.title and doc.title else ""
            windows.append(prefix + doc.text[lo:hi])
            shift = len(prefix) - lo
            spans.append((chunk.start + shift, chunk.end + shift))
        # Neighbouring chunks of a short document share one window (the whole document):
        # encode each distinct window once.
        distinct = list(dict.fromkeys(windows))
        encoded = dict(zip(distinct, self.encoder.token_states(distinct, progress=progress)))
        pooled = np.vstack([pool_spans(*encoded[window], [span], cover_ends=False)
                            for window, span in zip(windows, spans)])
        situated = fill_empty(self.encoder, chunks, pooled)
        if not self.config.residual:
            return situated
        plain = self.encoder.encode_documents([c.text for c in chunks], progress)
        return normalize(situated + self.config.residual * plain)


@register("embedder", "situated_prefix")
class SituatedPrefixEmbedder(ChunkEmbedder):
    """`{title}. {first sentence of the document}` before the chunk's text."""

    class Config(EmbedderConfig):
        summary_chars: int = Field(default=200, ge=0, description="cap on the summary's length")

    config: Config

    @cached_property
    def segmenter(self) -> Any:
        import pysbd

        return pysbd.Segmenter(language="en", clean=False)

    def summary(self, doc: Document) -> str:
        spans = sentence_spans(self.segmenter, doc.text[: 4 * self.config.summary_chars])
        first = doc.text[spans[0][0] : spans[0][1]] if spans else ""
        return first[: self.config.summary_chars]

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        parents = by_document(docs, chunks)
        summaries = {d: self.summary(parents[d]) for d in {c.doc_id for c in chunks}}
        texts = [f"{parents[c.doc_id].title}. {summaries[c.doc_id]}\n{c.text}" for c in chunks]
        return self.encoder.encode_documents(texts, progress)


@register("embedder", "situated_llm")
class ContextualRetrievalEmbedder(ChunkEmbedder):
    """An LLM-written situating sentence before each chunk, cached on disk."""

    nested = {**ChunkEmbedder.nested, "generator": "generator"}

    class Config(ComponentConfig):
        generator: dict[str, Any]  # first: the constructor's first positional argument
        encoder: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_ENCODER))
        max_tokens: int = Field(default=48, ge=1)
        document_chars: int = Field(default=3000, ge=100, description="document text shown")
        batch_size: int = Field(default=64, ge=1, description="chunks per generate call")
        cache: bool = Field(default=True, description="keep generated contexts on disk")

    config: Config
    generator: Generator

    def _key(self, doc: Document, chunk: Chunk) -> str:
        material = json.dumps([self.generator.spec(), self.config.max_tokens,
                               self.config.document_chars, doc.title, doc.text, chunk.start,
                               chunk.end], sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()

    def contexts(self, docs: Sequence[Document], chunks: Sequence[Chunk],
                 progress: bool = False) -> list[str]:
        """One situating sentence per chunk, generated once and then read from the cache."""
        parents = by_document(docs, chunks)
        store = cache_dir() / "contexts.jsonl"
        known: dict[str, str] = {}
        if self.config.cache and store.is_file():
            for line in store.read_text().splitlines():
                try:
                    record = json.loads(line)
                    known[record["key"]] = record["context"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run: regenerate it
        keys = [self._key(parents[c.doc_id], c) for c in chunks]
        todo = [i for i, k in enumerate(keys) if k not in known]
        params = SamplingParams(max_tokens=self.config.max_tokens, temperature=0.0)
        store.parent.mkdir(parents=True, exist_ok=True)
        size = self.config.batch_size
        for b in tqdm(range(0, len(todo), size), desc="situating", disable=not progress):
            batch = todo[b : b + size]
            prompts = [Prompt.chat(SITUATE_PROMPT.format(
                document=f"{parents[chunks[i].doc_id].title}\n"
                         f"{parents[chunks[i].doc_id].text[: self.config.document_chars]}",
                chunk=chunks[i].text)) for i in batch]
            outputs = self.generator.generate(prompts, params)
            for i, out in zip(batch, outputs):
                known[keys[i]] = " ".join(out.text.split())
            if self.config.cache:
                with open(store, "a") as fh:  # appended batch by batch: a rerun resumes here
                    for i in batch:
                        fh.write(json.dumps({"key": keys[i], "context": known[keys[i]]}) + "\n")
        return [known[k] for k in keys]

    def embed(self, docs: Sequence[Document], chunks: Sequence[Chunk],
              progress: bool = False) -> np.ndarray:
        contexts = self.contexts(docs, chunks, progress)
        texts = [f"{ctx} {c.text}" for ctx, c in zip(contexts, chunks)]
        return self.encoder.encode_documents(texts, progress)
