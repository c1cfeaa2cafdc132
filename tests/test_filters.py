"""Metadata filters on a real index: the grammar, each operator, filtering inside every child
index (k hits when k match), the exact path at low selectivity, YAML, and named errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.errors import ConfigError
from rag.pipeline import Pipeline
from rag.retrievers import (
    BM25Retriever,
    FilterError,
    HNSWRetriever,
    HybridRetriever,
    MilvusRetriever,
    SparseRetriever,
    matches,
    parse_filter,
)
from rag.types import Chunk

QUERIES = ["famous painting", "science fiction film", "an opera in three acts"]
KINDS = ("film", "painting", "opera")


def with_metadata(chunk: Chunk, i: int) -> Chunk:
    """Metadata of every kind a filter compares: numbers, dates, strings, booleans; `rare` is on
    under 1% of the chunks, `year` 1995 on a thirtieth."""
    metadata = {**chunk.metadata, "year": 1990 + i % 30, "score": (i % 7) / 2,
                "date": f"20{10 + i % 10}-{1 + i % 12:02d}-15", "kind": KINDS[i % 3],
                "featured": i % 5 == 0}
    if i % 150 == 0:
        metadata["rare"] = True
    return chunk.model_copy(update={"metadata": metadata})


@pytest.fixture(scope="module")
def dense(dense_dir) -> HNSWRetriever:
    """The session index's chunks and vectors, with metadata added (no re-encoding)."""
    source = HNSWRetriever.load(dense_dir)
    retriever = HNSWRetriever(encoder=source.encoder)
    retriever.add_vectors([with_metadata(c, i) for i, c in enumerate(source.chunks)],
                          np.asarray(source.vectors))
    return retriever


@pytest.fixture(scope="module")
def bm25(dense) -> BM25Retriever:
    retriever = BM25Retriever()
    retriever.index(dense.chunks)
    return retriever


@pytest.fixture(scope="module")
def milvus(dense) -> MilvusRetriever:
    retriever = MilvusRetriever(encoder=dense.encoder)
    retriever.add_vectors(dense.chunks, np.asarray(dense.vectors))
    return retriever


@pytest.fixture(scope="module")
def retrievers(dense, bm25, milvus) -> dict[str, object]:
    return {"dense": dense, "bm25": bm25, "milvus": milvus,
            "hybrid": HybridRetriever([bm25, dense])}


FILTERS = {
    "==": {"field": "kind", "operator": "==", "value": "opera"},
    "!=": {"field": "kind", "operator": "!=", "value": "opera"},
    ">": {"field": "year", "operator": ">", "value": 2015},
    ">=": {"field": "score", "operator": ">=", "value": 2.5},
    "<": {"field": "year", "operator": "<", "value": 1994},
    "<=": {"field": "year", "operator": "<=", "value": 1990},
    "in": {"field": "kind", "operator": "in", "value": ["film", "painting"]},
    "not in": {"field": "year", "operator": "not in", "value": list(range(1990, 2015))},
    "date range": {"operator": "AND", "conditions": [
        {"field": "date", "operator": ">=", "value": "2013-01-01"},
        {"field": "date", "operator": "<", "value": "2014-06-01"}]},
    "bool": {"field": "meta.featured", "operator": "==", "value": True},
    "chunk field": {"field": "doc_id", "operator": "in", "value": ["Mona Lisa", "Jaws (film)"]},
    "AND": {"operator": "AND", "conditions": [
        {"field": "kind", "operator": "==", "value": "film"},
        {"field": "year", "operator": ">=", "value": 2010}]},
    "OR": {"operator": "OR", "conditions": [
        {"field": "year", "operator": "==", "value": 1991},
        {"field": "kind", "operator": "==", "value": "painting"}]},
    "NOT": {"operator": "NOT", "conditions": [
        {"field": "kind", "operator": "==", "value": "film"},
        {"field": "featured", "operator": "==", "value": False}]},
    "nested": {"operator": "or", "conditions": [
        {"operator": "AND", "conditions": [{"field": "year", "operator": "==", "value": 1995},
                                           {"field": "featured", "operator": "==", "value": True}]},
        {"operator": "NOT", "conditions": [{"field": "year", "operator": ">", "value": 1992}]}]},
    "shorthand": {"kind": ["film", "opera"], "year": 1995},
}


@pytest.mark.parametrize("name", ["dense", "bm25", "milvus", "hybrid"])
@pytest.mark.parametrize("case", sorted(FILTERS))
def test_each_operator_keeps_only_matches_and_k_of_them(retrievers, dense, name, case):
    filter, k = FILTERS[case], 10
    matching = sum(matches(c, filter) for c in dense.chunks)
    assert 0 < matching < len(dense.chunks)  # each case selects, and selects something
    for hits in retrievers[name].search(QUERIES, k=k, filter=filter):
        assert all(matches(h.chunk, filter) for h in hits)
        assert len(hits) == min(k, matching)


def test_the_semantics_of_missing_fields_dates_and_kinds():
    chunk = Chunk(id="c", doc_id="d", text="t", start=0, end=1, title="T",
                  metadata={"year": 2001, "date": "2020-05-01T10:00:00", "flag": True})
    assert not matches(chunk, {"field": "rare", "operator": "!=", "value": True})  # no field
    assert matches(chunk, {"operator": "NOT", "conditions": [{"rare": True}]})  # so NOT keeps it
    assert matches(chunk, {"field": "date", "operator": ">", "value": "2020-05-01"})
    assert not matches(chunk, {"field": "year", "operator": "==", "value": True})  # bool != 1
    assert matches(chunk, {"field": "year", "operator": "==", "value": 2001.0})
    assert matches(chunk, {"title": "T", "meta.flag": True})


def test_a_selective_filter_still_returns_k_where_a_post_filter_would_not(dense):
    """`year == 1995` keeps a thirtieth of the chunks: the unfiltered top 10 holds few of them,
    the filtered search (inside the graph walk) all 10."""
    filter = {"year": 1995}
    unfiltered = dense.search(QUERIES, k=10)
    post = [[h for h in hits if matches(h.chunk, filter)] for hits in unfiltered]
    assert min(len(hits) for hits in post) < 10
    assert [len(hits) for hits in dense.search(QUERIES, k=10, filter=filter)] == [10] * 3


def test_low_selectivity_falls_back_to_the_exact_top_k(dense, milvus, monkeypatch):
    filter = {"rare": True}
    rare = [i for i, c in enumerate(dense.chunks) if matches(c, filter)]
    assert 2 < len(rare) < 0.01 * len(dense)
    calls = []
    exact = dense._exact
    monkeypatch.setattr(dense, "_exact", lambda *args: calls.append(args) or exact(*args))
    hits = dense.search(QUERIES, k=3, filter=filter)
    assert len(calls) == 1
    vectors = dense.vectors[rare] / np.linalg.norm(dense.vectors[rare], axis=1, keepdims=True)
    queries = dense.encoder.encode_queries(QUERIES)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    for row, sims in zip(hits, queries @ vectors.T):
        assert [h.chunk.id for h in row] == [dense.chunks[rare[j]].id
                                             for j in np.argsort(-sims)[:3]]
    # above the threshold the graph walk answers
    dense.search(QUERIES, k=5, filter={"year": 1995})
    assert len(calls) == 1
    assert [[h.chunk.id for h in row] for row in milvus.search(QUERIES, k=3, filter=filter)] == \
        [[h.chunk.id for h in row] for row in hits]


def test_deleted_chunks_are_neither_returned_nor_fields(dense):
    index = HNSWRetriever(encoder=dense.encoder)
    index.add_vectors(dense.chunks, np.asarray(dense.vectors))
    gone = [c.id for c in dense.chunks if matches(c, {"year": 1995})][::2]
    index.delete(gone + [c.id for c in dense.chunks if matches(c, {"rare": True})])
    left = sum(matches(c, {"year": 1995}) for c in dense.chunks) - len(gone)
    for hits in index.search(QUERIES, k=50, filter={"year": 1995}):
        assert len(hits) == left and not {h.chunk.id for h in hits} & set(gone)
    with pytest.raises(FilterError, match="unknown filter field 'rare'"):
        index.search(QUERIES, k=3, filter={"rare": True})


def test_sparse_masks_its_scores(dense):
    retriever = SparseRetriever(encoder={"type": "splade", "model": "splade", "max_length": 64})
    retriever.index(dense.chunks[:120])
    filter = {"operator": "AND", "conditions": [{"kind": "film"}, {"field": "year",
                                                                   "operator": ">", "value": 2000}]}
    matching = sum(matches(c, filter) for c in retriever.chunks)
    for hits in retriever.search(QUERIES, k=8, filter=filter):
        assert len(hits) == min(8, matching) and all(matches(h.chunk, filter) for h in hits)


def test_a_filter_in_a_yaml_pipeline_round_trips_and_applies(dense, tmp_path):
    dense.save(tmp_path / "idx")
    text = f"""
stages:
- type: retrieve
  retriever: {{type: hnsw, path: {tmp_path / 'idx'}}}
  k: 6
  filter:
    operator: AND
    conditions:
    - {{field: kind, operator: in, value: [film, opera]}}
    - {{field: date, operator: '>=', value: 2015-01-01}}
"""
    pipeline = Pipeline.from_yaml(text)
    again = Pipeline.from_yaml(pipeline.to_yaml())
    assert again.to_dict() == pipeline.to_dict()
    saved = pipeline.to_dict()["stages"][0]["filter"]
    assert saved["conditions"][1] == {"field": "date", "operator": ">=", "value": "2015-01-01"}
    expected = parse_filter(saved)
    for state in again.run(QUERIES):
        assert len(state.hits) == 6 and all(expected.matches(h.chunk) for h in state.hits)


BAD = [
    ({"field": "yeer", "operator": "==", "value": 1995}, "unknown filter field 'yeer'"),
    ({"colour": "red"}, "unknown filter field 'colour'"),
    ({"field": "year", "operator": "~=", "value": 1995}, "unknown filter operator '~='"),
    ({"operator": "XOR", "conditions": [{"year": 1995}]}, "unknown filter operator 'XOR'"),
    ({"field": "year", "operator": "==", "value": "1995"}, "holds number values, not string"),
    ({"field": "kind", "operator": ">", "value": 3}, "holds string values, not number"),
    ({"field": "kind", "operator": ">=", "value": "2020-01-01"}, "holds no ISO 8601 dates"),
    ({"field": "year", "operator": ">", "value": "recent"}, "compares numbers or ISO 8601 dates"),
    ({"field": "kind", "operator": "in", "value": "film"}, "needs a list of values"),
    ({"field": "kind", "operator": "==", "value": ["film"]}, "use 'in' for a list"),
    ({"year": {"$gt": 1995}}, "strings, numbers, booleans or dates"),
    ({"operator": "AND", "conditions": []}, "non-empty list of conditions"),
    ({"field": "year", "operator": "==", "val": 1995}, "exactly the keys"),
    (["year", 1995], "a filter is a mapping"),
]


@pytest.mark.parametrize("name", ["dense", "bm25", "milvus", "hybrid"])
@pytest.mark.parametrize(("filter", "message"), BAD)
def test_each_bad_filter_is_a_named_error(retrievers, name, filter, message):
    with pytest.raises(FilterError, match=message.replace("$", r"\$")):
        retrievers[name].search(QUERIES, k=3, filter=filter)


def test_a_bad_filter_in_a_pipeline_file_fails_when_built(dense_dir, tmp_path):
    stage = {"type": "retrieve", "retriever": {"type": "hnsw", "path": str(dense_dir)},
             "filter": {"field": "year", "operator": "between", "value": [1, 2]}}
    with pytest.raises(ConfigError, match="filter.*unknown filter operator 'between'"):
        Pipeline([stage])
    (tmp_path / "bad.json").write_text(json.dumps({"stages": [stage]}))
    result = CliRunner().invoke(app, ["ask", str(dense_dir), "q", "--pipeline",
                                      str(tmp_path / "bad.json")])
    assert result.exit_code == 2 and "unknown filter operator 'between'" in result.output
