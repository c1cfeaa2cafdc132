"""Shared fixtures: one vLLM engine, one transformers model and one small real index per session."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from rag.corpus import vital_articles
from rag.registry import build
from rag.types import Document

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests compare greedy answers across runs (a pipeline file against its source, streamed against
# not): float32 repeats them bit for bit; bfloat16 with prefix caching may not (rag.dtypes).
os.environ.setdefault("RAG_AUTO_DTYPE", "float32")

# A real slice of the vital articles: the first 400 are Arts (films, paintings, operas).
SLICE = 400


@pytest.fixture(scope="session")
def vital_slice() -> list[Document]:
    return vital_articles()[:SLICE]


@pytest.fixture(scope="session")
def description_queries(vital_slice: list[Document]) -> list[tuple[str, str]]:
    """(description, gold title) pairs: the source's own labels, a fixed random sample."""
    pairs = [(d.metadata["description"], d.id) for d in vital_slice if d.metadata["description"]]
    return random.Random(0).sample(pairs, 100)


@pytest.fixture(scope="session")
def vllm_tiny():
    """The one vLLM engine of the test session (shared through the component registry)."""
    return build("generator", {"type": "vllm", "model": "tiny"})


@pytest.fixture(scope="session")
def vllm_tiny_kv():
    """The session's engine with the chunk KV connector (what `kv_generate` on vllm builds)."""
    return build("generator", {"type": "vllm", "model": "tiny", "kv_connector": True})


@pytest.fixture(scope="session")
def hf_tiny():
    return build("generator", {"type": "transformers", "model": "tiny"})


@pytest.fixture(scope="session")
def encoder():
    return build("encoder", {"type": "sentence_transformers"})


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, vital_slice: list[Document]) -> Path:
    from rag.recipes import index_corpus

    out = tmp_path_factory.mktemp("index")
    # Two-way (BM25 + MiniLM), the index the answer tests with `tiny` were written on; the
    # three-way default is built and checked in tests/test_end_to_end.py and test_updates.py.
    index_corpus(vital_slice, out, progress=False, splade=False)
    return out


@pytest.fixture(scope="session")
def dense_dir(index_dir: Path) -> Path:
    """The HNSW half of the hybrid index `rag index` writes (its own loadable folder)."""
    return next(index_dir.glob("v*/1-hnsw"))
