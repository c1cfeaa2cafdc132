"""The Milvus retriever (embedded milvus-lite) against hnswlib on the same real vectors."""

from __future__ import annotations

import json
import shutil

import pytest

from rag.errors import IndexLoadError, RagError
from rag.retrievers import HNSWRetriever, MilvusRetriever, matches, open_index
from rag.retrievers.milvus import filter_expression


@pytest.fixture(scope="module")
def hnsw(dense_dir):
    return HNSWRetriever.load(dense_dir)


@pytest.fixture(scope="module")
def milvus(hnsw, tmp_path_factory):
    """The HNSW index's chunks and vectors, saved as a Milvus index folder."""
    retriever = MilvusRetriever()
    retriever.add_vectors(hnsw.chunks, hnsw.vectors)
    folder = tmp_path_factory.mktemp("milvus") / "index"
    retriever.save(folder)
    return folder


def top_docs(retriever, queries, k, filter=None):
    return [[h.chunk.doc_id for h in hits] for hits in retriever.search(queries, k=k, filter=filter)]


def test_same_neighbours_as_hnswlib_on_the_same_vectors(hnsw, milvus, description_queries):
    retriever = MilvusRetriever.load(milvus)
    queries = [q for q, _ in description_queries]
    ours, theirs = top_docs(retriever, queries, 10), top_docs(hnsw, queries, 10)
    recall = [sum(gold in hits for (_, gold), hits in zip(description_queries, run)) / len(queries)
              for run in (ours, theirs)]
    assert recall[0] >= 0.8 and abs(recall[0] - recall[1]) <= 0.02
    assert sum(a[0] == b[0] for a, b in zip(ours, theirs)) >= 0.95 * len(queries)
    [hits] = retriever.search(["1968 film by Stanley Kubrick"], k=3)
    assert hits[0].chunk.doc_id == "2001: A Space Odyssey"
    assert hits[0].retriever == "milvus" and hits[0].score >= hits[1].score >= hits[2].score


def test_filters_apply_inside_the_search(milvus, hnsw):
    retriever = MilvusRetriever.load(milvus)
    allowed = [c.doc_id for c in hnsw.chunks[100:130]]
    for filter in ({"doc_id": allowed}, {"doc_id": allowed, "topic": "Arts"}, {"doc_id": allowed[3]}):
        [hits] = retriever.search(["a painting"], k=5, filter=filter)
        assert len(hits) == min(5, len([c for c in hnsw.chunks if matches(c, filter)]))
        assert all(matches(h.chunk, filter) for h in hits)
    assert retriever.search(["a painting"], k=5, filter={"topic": "Sports"}) == [[]]


def test_filter_values_stay_literals():
    expression = filter_expression({"title": 'x" or true or "', "year": [1968, 2001]})
    assert expression == (
        '((exists filterable["title"] and filterable["title"] == "x\\" or true or \\"") and '
        '(exists filterable["year"] and (filterable["year"] == 1968 or filterable["year"] == 2001)))')
    with pytest.raises(RagError, match="strings, numbers, booleans or dates"):
        filter_expression({"year": [None]})


def test_add_delete_and_round_trip(milvus, vital_slice, tmp_path, description_queries):
    from rag.chunkers import FixedTokenChunker

    retriever = MilvusRetriever.load(milvus)
    copy = tmp_path / "copy"
    shutil.copytree(milvus, copy)
    retriever = MilvusRetriever.load(copy)
    before = len(retriever)
    extra = vital_slice[0].model_copy(update={"id": "extra", "text": "Zorblax is a purple moon."})
    chunk = FixedTokenChunker().chunk(extra)
    retriever.add(chunk)
    assert len(retriever) == before + 1
    assert retriever.search(["Which moon is purple?"], k=1)[0][0].chunk.doc_id == "extra"
    with pytest.raises(RagError, match="unique"):
        retriever.add(chunk)
    with pytest.raises(RagError, match="unsaved changes"):
        retriever.spec()
    retriever.delete([chunk[0].id])
    with pytest.raises(RagError, match="unknown chunk ids"):
        retriever.delete([chunk[0].id])
    assert retriever.search(["Which moon is purple?"], k=1)[0][0].chunk.doc_id != "extra"
    retriever.save(copy)
    reopened = open_index(retriever.spec()["path"])
    queries = [q for q, _ in description_queries[:20]]
    assert isinstance(reopened, MilvusRetriever) and len(reopened) == before
    assert [[(h.chunk.id, round(h.score, 5)) for h in r] for r in reopened.search(queries, k=5)] == \
           [[(h.chunk.id, round(h.score, 5)) for h in r] for r in retriever.search(queries, k=5)]


def test_foreign_missing_or_damaged_stores_are_named(milvus, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(milvus, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "count": manifest["count"] + 1}))
    with pytest.raises(IndexLoadError, match="manifest says"):
        MilvusRetriever.load(broken)
    shutil.rmtree(broken / "milvus.db")
    with pytest.raises(IndexLoadError, match="milvus.db is missing"):
        MilvusRetriever.load(broken)
    (broken / "manifest.json").write_text(json.dumps({"format": "someone-else"}))
    with pytest.raises(IndexLoadError, match="someone-else"):
        MilvusRetriever.load(broken)
