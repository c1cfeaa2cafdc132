"""Training a cross-encoder for a corpus: hard negatives, per-epoch checkpoints, resume, loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.eval.datasets import known_items
from rag.recipes import document_chunks
from rag.registry import build
from rag.rerankers.base import passage_text
from rag.rerankers.training import mine_pairs, train_cross_encoder
from rag.retrievers import BM25Retriever
from rag.types import KnownItem


def test_the_training_split_holds_no_dev_or_test_query_or_article() -> None:
    train = known_items("train")
    held = known_items("dev") + known_items("test")
    assert len(train) > 5000
    assert not {i.gold for i in train} & {i.gold for i in held}
    assert not {i.query for i in train} & {i.query for i in held}


@pytest.fixture(scope="module")
def corpus(vital_slice):
    bm25 = BM25Retriever()
    bm25.index(document_chunks(vital_slice))
    queries = [KnownItem(query=d.metadata["description"], gold=d.id)
               for d in vital_slice if d.metadata.get("description")][:24]
    return bm25, queries


def test_mined_negatives_are_first_stage_hits_of_other_documents(corpus) -> None:
    bm25, queries = corpus
    triples = mine_pairs(queries, bm25, negatives=2, depth=10)
    hits = dict(zip([q.query for q in queries], bm25.search([q.query for q in queries], k=10)))
    gold = {q.query: q.gold for q in queries}
    positives = [t for t in triples if t[2] == 1.0]
    assert positives and len(triples) == 3 * len(positives)
    for query, passage, label in triples:
        shown = {passage_text(h, 200): h.chunk.doc_id for h in hits[query]}
        assert passage in shown  # every passage is one of the query's first-stage hits
        assert (shown[passage] == gold[query]) == (label == 1.0)


def test_training_checkpoints_each_epoch_resumes_and_loads_as_a_reranker(corpus, tmp_path: Path) -> None:
    bm25, queries = corpus
    out = tmp_path / "reranker"
    first = train_cross_encoder(queries, bm25, out, epochs=1, negatives=2, depth=10, batch_size=8,
                                max_length=96, progress=False)
    assert first.resumed_from_epoch == 0 and (out / "epoch-1" / "model.safetensors").is_file()
    second = train_cross_encoder(queries, bm25, out, epochs=2, negatives=2, depth=10, batch_size=8,
                                 max_length=96, progress=False)
    assert second.resumed_from_epoch == 1 and (out / "epoch-2" / "model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # code-free weights only
    reranker = build("reranker", {"type": "cross-encoder", "model": str(out)})
    first_stage = bm25.search([q.query for q in queries], k=10)
    reranked = reranker.rerank([q.query for q in queries], first_stage)
    assert [sorted(h.chunk.id for h in r) for r in reranked] == [sorted(h.chunk.id for h in f) for f in first_stage]
    assert all(r[i].score >= r[i + 1].score for r in reranked for i in range(len(r) - 1))
