from __future__ import annotations

import json
import shutil

import pytest

from rag.errors import ConfigError, EncoderMismatchError, IndexLoadError, RagError
from rag.retrievers import HNSWRetriever


def recall_at(retriever, queries, k):
    results = retriever.search([q for q, _ in queries], k=k)
    return sum(gold in {h.chunk.doc_id for h in hits} for (_, gold), hits in zip(queries, results)) / len(queries)


def test_finds_the_gold_article_for_its_description(index_dir, description_queries):
    retriever = HNSWRetriever.load(index_dir)
    # The descriptions are Wikidata's short labels (e.g. "1968 film by Stanley Kubrick"); MiniLM
    # reaches 0.76 recall@10 on all 10,033 articles, so a 400-article slice must do better.
    assert recall_at(retriever, description_queries, 10) >= 0.8
    [hits] = retriever.search(["1968 film by Stanley Kubrick"], k=3)
    assert hits[0].chunk.doc_id == "2001: A Space Odyssey"
    assert hits[0].retriever == "hnsw" and hits[0].score >= hits[1].score >= hits[2].score


def test_save_then_load_gives_identical_results(index_dir, tmp_path, description_queries):
    original = HNSWRetriever.load(index_dir)
    original.save(tmp_path / "copy")
    copy = HNSWRetriever.load(tmp_path / "copy")
    queries = [q for q, _ in description_queries[:20]]
    a, b = original.search(queries, k=5), copy.search(queries, k=5)
    assert [[(h.chunk.id, round(h.score, 6)) for h in r] for r in a] == \
           [[(h.chunk.id, round(h.score, 6)) for h in r] for r in b]


def test_incremental_add_makes_new_chunks_findable(index_dir, vital_slice):
    from rag.chunkers import FixedTokenChunker

    retriever = HNSWRetriever.load(index_dir)
    before = len(retriever)
    extra = vital_slice[0].model_copy(update={"id": "extra", "text": "Zorblax is a purple moon."})
    retriever.add(FixedTokenChunker().chunk(extra))
    assert len(retriever) == before + 1
    assert retriever.search(["Which moon is purple?"], k=1)[0][0].chunk.doc_id == "extra"
    with pytest.raises(RagError, match="unsaved"):
        retriever.spec()


@pytest.fixture
def index_copy(index_dir, tmp_path):
    target = tmp_path / "idx"
    shutil.copytree(index_dir, target)
    return target


def test_truncated_graph_is_refused_with_its_name(index_copy):
    graph = index_copy / "hnsw.bin"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(IndexLoadError, match="hnsw.bin"):
        HNSWRetriever.load(index_copy)


def test_truncated_chunk_file_is_refused_with_its_name(index_copy):
    chunks = index_copy / "chunks.jsonl"
    lines = chunks.read_text().splitlines()
    chunks.write_text("\n".join(lines[:10]) + "\n" + lines[10][:20] + "\n")
    with pytest.raises(IndexLoadError, match="chunks.jsonl:11"):
        HNSWRetriever.load(index_copy)


def test_foreign_or_missing_index_is_refused(index_copy, tmp_path):
    with pytest.raises(IndexLoadError, match="not found"):
        HNSWRetriever.load(tmp_path / "nothing-here")
    manifest = index_copy / "manifest.json"
    manifest.write_text(json.dumps({"format": "someone-else"}))
    with pytest.raises(IndexLoadError, match="manifest.json.*someone-else"):
        HNSWRetriever.load(index_copy)
    manifest.write_text("{ truncated")
    with pytest.raises(IndexLoadError, match="manifest.json"):
        HNSWRetriever.load(index_copy)


def test_querying_with_another_encoder_is_refused(index_dir):
    other = {"type": "sentence_transformers", "query_prefix": "query: "}
    with pytest.raises(EncoderMismatchError, match="built with encoder"):
        HNSWRetriever.load(index_dir, encoder=other)


def test_bad_arguments_are_refused(index_dir):
    retriever = HNSWRetriever.load(index_dir)
    with pytest.raises(RagError, match="k must be"):
        retriever.search(["q"], k=0)
    with pytest.raises(ConfigError, match="M"):
        HNSWRetriever(M=1)
