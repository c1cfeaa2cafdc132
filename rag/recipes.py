"""Ready-made indexes and pipelines: the best measured defaults, and the starters `rag init` writes.

Every pipeline here is built from registered stages with saved indexes, stores and pools, so it
round-trips through YAML: `recipe(...).save("p.yaml")` and `Pipeline.load("p.yaml")` agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rag.chunkers import FixedTokenChunker
from rag.generators.stage import Generate
from rag.ingest import metadata_at
from rag.kvcache.stage import KVGenerate
from rag.pipeline import Pipeline, Stage
from rag.prompts.condense import Condense
from rag.prompts.templates import CLOSED_BOOK_SYSTEM, RAG_SYSTEM, SHORT_RAG_SYSTEM, qa_system
from rag.retrievers import (
    BM25Retriever,
    HNSWRetriever,
    HybridRetriever,
    Retriever,
    SparseRetriever,
    open_index,
)
from rag.retrievers.documents import (
    Changes,
    DocumentIndex,
    check_same_children,
    clear_stale,
    writer_lock,
)
from rag.retrievers.stage import Retrieve, Search
from rag.types import Chunk, Document, SamplingParams
from rag.verifiers.stage import Execute

# The BM25 weight of the convex hybrid, tuned on dev queries in benchmarks/retrieval.py.
BM25_WEIGHT = 0.3
# BM25, dense and SPLADE weights of the three-way hybrid, tuned the same way (known-item R@10
# 0.9045 against the two-way's 0.888, at about 1.3 times the query time and 1.7 times the
# build time).
SPLADE_HYBRID_WEIGHTS = (0.15, 0.5, 0.35)
DEFAULT_GENERATOR: dict[str, Any] = {"type": "vllm", "model": "tiny"}
# Stops for plain-text code completion (HumanEval's): the function ends where a new top-level
# statement begins.
COMPLETION_STOPS = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]
Picker = Literal["first", "random", "logprob", "examples", "codet", "mbr_exec", "lever"]


def document_chunks(docs: Sequence[Document]) -> list[Chunk]:
    """One chunk per document, for corpora of short documents (such as article summaries)."""
    return [Chunk(id=d.id, doc_id=d.id, text=d.text, start=0, end=len(d.text), title=d.title,
                  metadata=metadata_at(d.metadata, 0)) for d in docs]


def index_encoder_spec(encoder: str = "encoder") -> dict[str, Any]:
    """The dense encoder of the hybrid indexes built here."""
    return {"type": "sentence_transformers", "model": encoder}


def hybrid_index(
    chunks: Sequence[Chunk], bm25_weight: float = BM25_WEIGHT, encoder: str = "encoder",
    out: str | Path | None = None, progress: bool = True, vectors: np.ndarray | None = None,
    splade: bool = False,
) -> HybridRetriever:
    """BM25 and dense (MiniLM, HNSW) indexes over the same chunks, fused convexly; saved as one
    folder when `out` is given (a saved folder is reopened instead of rebuilt). `vectors`, when
    given, are the chunks' embeddings made elsewhere (e.g. on Ray) by the same encoder. With
    `splade`, SPLADE-tiny is a third index, fused by `SPLADE_HYBRID_WEIGHTS` (then `bm25_weight`
    is not used)."""
    if out is not None and (Path(out) / "manifest.json").is_file():
        return HybridRetriever(path=str(out))
    hybrid = empty_hybrid(encoder, bm25_weight, splade)
    for child in hybrid.retrievers:
        if vectors is not None and isinstance(child, HNSWRetriever):
            child.add_vectors(list(chunks), vectors)
        else:
            child.index(chunks, progress=progress)
    if out is not None:  # reopened, so it names the dtype its vectors were made in, as a reload
        hybrid.save(out)  # does (a run resumed on the reload must see the same configuration)
        return HybridRetriever(path=str(out))
    return hybrid


def empty_hybrid(encoder: str = "encoder", bm25_weight: float = BM25_WEIGHT,
                 splade: bool = False) -> HybridRetriever:
    """The default hybrid (BM25 + MiniLM/HNSW, fused convexly; with `splade`, SPLADE-tiny as a
    third index), holding nothing yet."""
    children: list[Retriever] = [BM25Retriever(), HNSWRetriever(encoder=index_encoder_spec(encoder))]
    weights = [bm25_weight, 1 - bm25_weight]
    if splade:
        children.append(SparseRetriever(encoder={"type": "splade", "model": "splade"}))
        weights = list(SPLADE_HYBRID_WEIGHTS)
    return HybridRetriever(children, method="convex", weights=weights)


def new_index_splade(splade: bool | None) -> bool:
    """Whether a new index holds SPLADE: unless told not to (the QA default was chosen on the
    three-way hybrid). `None` means "not said"."""
    return splade is not False


def index_corpus(
    docs: Sequence[Document], out: str | Path, chunk_size: int = 200, overlap: int = 0,
    encoder: str = "encoder", progress: bool = True, splade: bool | None = None,
) -> HybridRetriever:
    """The hybrid index at `out`, made to hold exactly `docs` (built, or updated: `sync_index`)."""
    return sync_index(docs, out, chunk_size, overlap, encoder, progress, splade)[0].retriever


def sync_index(
    docs: Sequence[Document], out: str | Path, chunk_size: int = 200, overlap: int = 0,
    encoder: str = "encoder", progress: bool = True, splade: bool | None = None,
) -> tuple[DocumentIndex, Changes]:
    """Make the index at `out` hold exactly `docs`: build it (a hybrid of BM25 + MiniLM/HNSW
    over encoder-token windows, and SPLADE-tiny unless `splade` is False: the QA default was
    chosen on the three-way hybrid), or update one built here before (new and changed documents
    embedded, removed ones deleted, the rest untouched; `splade` None keeps the children it
    has), and say what changed. Crash-safe and locked: see `rag.retrievers.documents`."""
    chunker = FixedTokenChunker(size=chunk_size, overlap=overlap, tokenizer=encoder)
    with writer_lock(out):
        if (Path(out) / "manifest.json").exists():
            clear_stale(out)
            index = DocumentIndex.open(out, chunker)
            held = any(isinstance(c, SparseRetriever) for c in index.retriever.retrievers)
            check_same_children(index.retriever,
                                empty_hybrid(encoder, splade=held if splade is None else splade))
        else:
            index = DocumentIndex(out, empty_hybrid(encoder, splade=new_index_splade(splade)),
                                  chunker)
        changes = index.sync(docs, progress=progress)
        if changes:
            index.save()
    return index, changes


def _retriever(index: str | Path | Retriever) -> Retriever:
    return index if isinstance(index, Retriever) else open_index(index)


def _generate(generator: Any, params: SamplingParams) -> Generate:
    return Generate(generator or DEFAULT_GENERATOR, params)


def with_fusion(retriever: Retriever, fusion: Literal["convex", "rrf"] | None) -> Retriever:
    """A hybrid retriever's children fused another way (`None`: as saved)."""
    if not isinstance(retriever, HybridRetriever) or fusion in (None, retriever.config.method):
        return retriever
    return HybridRetriever(retriever.retrievers, method=fusion)


def rag_qa(
    index: str | Path | Retriever, generator: Any = None, k: int = 3,
    compression: float | None = 2.0, fusion: Literal["convex", "rrf"] | None = None,
    order: Literal["relevance_first", "relevance_last"] = "relevance_last",
    system: str | None = None, max_tokens: int = 64,
    compressor: str | dict[str, Any] = "extractive", condense: bool = False,
    search: Search = "query", repeat_question: bool = False,
    demos: str | Path | None = None, shots: int = 2,
) -> Pipeline:
    """Retrieve k passages (a hybrid index fused by `fusion`), optionally compress them (by
    default extractive sentence selection; `compressor`: a registered name or a spec) to
    1/`compression` of their tokens, and ask for a short answer: every QA configuration the QA
    benchmarks compare is one call of this. With `condense`, a follow-up question (a query with
    history) is first rewritten by the same generator into a standalone question; `search` is
    what retrieval searches for a query with history (`Retrieve`: that question, the
    conversation, or both fused); `repeat_question` asks the question before the passages too
    (`RagPrompt`); `demos`, a JSONL pool of solved questions (`read_demos`), shows the `shots`
    nearest to each question (MiniLM kNN) as earlier exchanges."""
    stages: list[Stage | dict[str, Any]] = [
        Retrieve(with_fusion(_retriever(index), fusion), k=k, search=search)]
    if condense:
        stages.insert(0, Condense(generator or DEFAULT_GENERATOR))
    if compression is not None:
        stages.append({"type": "compress",
                       "compressor": {**({"type": compressor} if isinstance(compressor, str)
                                         else compressor), "ratio": compression}})
    if demos is not None:
        stages.append({"type": "select", "selector": {"type": "knn", "pool": str(demos)},
                       "k": shots})
    stages += [{"type": "rag_prompt", "system": system or qa_system(), "order": order,
                "repeat_question": repeat_question},
               _generate(generator, SamplingParams(max_tokens=max_tokens))]
    return Pipeline(stages)


def best_qa(index: str | Path | Retriever, generator: Any = None, k: int = 3,
            max_tokens: int = 64, condense: bool = True, search: Search = "fused") -> Pipeline:
    """The QA default, chosen by mean EM over the dev splits of vital-qa and vital-facts
    (benchmarks/qa_general.py, a coordinate ascent over k, passage order, compression, a
    repeated question, the instruction, the fusion, the chunk size and SPLADE): the hybrid's
    convex fusion as `rag index` saves it (BM25 0.15, MiniLM 0.5, SPLADE-tiny 0.35; a two-way
    index: BM25 0.3, MiniLM 0.7), top 3, the passages whole, best first, and "Give only the
    answer, no other words."; a follow-up question is condensed with
    its history first (no generation for a question without history) and searched as its rewrite
    and as the whole conversation, the two rankings fused (chosen on vital-followups' dev split,
    benchmarks/conversation.py)."""
    return rag_qa(index, generator, k=k, compression=None, fusion="convex",
                  order="relevance_first", max_tokens=max_tokens, condense=condense,
                  search=search)


def naive_rag(index: str | Path | Retriever, generator: Any = None, k: int = 3,
              max_tokens: int = 128) -> Pipeline:
    """Retrieve k passages, number them in the prompt, generate an answer that cites them."""
    return rag_qa(index, generator, k=k, compression=None, system=RAG_SYSTEM,
                  max_tokens=max_tokens)


def closed_book(generator: Any = None, max_tokens: int = 128,
                system: str = CLOSED_BOOK_SYSTEM) -> Pipeline:
    """The question alone: the baseline a RAG pipeline must beat."""
    return Pipeline([{"type": "closed_book_prompt", "system": system},
                     _generate(generator, SamplingParams(max_tokens=max_tokens))])


def code_generation(
    generator: Any = None, samples: int = 1, temperature: float = 0.0, picker: Picker = "first",
    checks: Sequence[str] = ("examples",), pool: str | Path | None = None,
    selector: dict[str, Any] | None = None, shots: int = 2,
    style: Literal["chat", "completion"] = "chat", max_tokens: int = 384,
    verifier: str | Path | None = None, test_generator: Any = None,
) -> Pipeline:
    """A function from its signature and docstring: optional demonstrations from a solved `pool`
    (JSONL), `samples` programs at `temperature`, run against their checks, one picked.

    With one sample and no demonstrations this is the zero-shot greedy baseline.
    """
    stages: list[Stage | dict[str, Any]] = []
    if pool is not None:
        chosen = {**(selector or {"type": "knn"}), "pool": str(pool)}
        stages.append({"type": "select", "selector": chosen, "k": shots})
    stages.append({"type": "code_prompt", "style": style})
    stops = COMPLETION_STOPS if style == "completion" else []
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, n=samples, seed=0,
                            stop=stops)
    stages += [_generate(generator, params), {"type": "extract_programs"}]
    if picker in {"examples", "codet", "mbr_exec", "lever"}:
        writer = (test_generator or generator or DEFAULT_GENERATOR) if "generated" in checks else None
        stages.append(Execute(writer, checks=list(checks)))
    if samples > 1:
        stages.append({"type": "pick", "method": picker,
                       **({"verifier": str(verifier)} if verifier else {})})
    return Pipeline(stages)


def icl_classification(pool: str | Path, generator: Any = None, k: int = 4,
                       selector: dict[str, Any] | None = None, instruction: str = "",
                       max_tokens: int = 8) -> Pipeline:
    """Demonstrations chosen per input from a labelled `pool` (JSONL), then the input to label."""
    template = {"instruction": instruction, "input_prefix": "Text: ", "output_prefix": "\nTopic:"}
    return Pipeline([
        {"type": "select", "selector": {**(selector or {"type": "knn"}), "pool": str(pool)}, "k": k},
        {"type": "icl_prompt", "template": template},
        _generate(generator, SamplingParams(max_tokens=max_tokens, stop=["\n"])),
    ])


def kv_reuse(index: str | Path | Retriever, store: str | Path, generator: Any = None, k: int = 4,
             mode: str = "recompute", recompute_fraction: float = 0.7,
             max_tokens: int = 64) -> Pipeline:
    """Retrieve, then answer from the chunks' precomputed KV caches (`store`, built by
    `ChunkKV.build` for the same model and instructions)."""
    return Pipeline([
        Retrieve(_retriever(index), k=k),
        KVGenerate(str(store), generator or {"type": "transformers", "model": "tiny"}, mode=mode,
                   recompute_fraction=recompute_fraction, system=SHORT_RAG_SYSTEM,
                   params=SamplingParams(max_tokens=max_tokens)),
    ])
