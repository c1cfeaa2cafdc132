from __future__ import annotations

import json
import shutil

import pytest

from rag.errors import ConfigError, EncoderMismatchError, IndexLoadError, RagError
from rag.retrievers import (
    BM25Retriever,
    HNSWRetriever,
    HybridRetriever,
    HyDERetriever,
    convex,
    open_index,
    rrf,
)
from rag.pipeline import Pipeline
from rag.retrievers.stage import Retrieve
from rag.types import Chunk, Hit


def recall_at(retriever, queries, k):
    results = retriever.search([q for q, _ in queries], k=k)
    return sum(gold in {h.chunk.doc_id for h in hits} for (_, gold), hits in zip(queries, results)) / len(queries)


def test_finds_the_gold_article_for_its_description(dense_dir, description_queries):
    retriever = HNSWRetriever.load(dense_dir)
    # The descriptions are Wikidata's short labels (e.g. "1968 film by Stanley Kubrick"); MiniLM
    # reaches 0.76 recall@10 on all 10,033 articles, so a 400-article slice must do better.
    assert recall_at(retriever, description_queries, 10) >= 0.8
    [hits] = retriever.search(["1968 film by Stanley Kubrick"], k=3)
    assert hits[0].chunk.doc_id == "2001: A Space Odyssey"
    assert hits[0].retriever == "hnsw" and hits[0].score >= hits[1].score >= hits[2].score


def test_save_then_load_gives_identical_results(dense_dir, tmp_path, description_queries):
    original = HNSWRetriever.load(dense_dir)
    original.save(tmp_path / "copy")
    copy = HNSWRetriever.load(tmp_path / "copy")
    queries = [q for q, _ in description_queries[:20]]
    a, b = original.search(queries, k=5), copy.search(queries, k=5)
    assert [[(h.chunk.id, round(h.score, 6)) for h in r] for r in a] == \
           [[(h.chunk.id, round(h.score, 6)) for h in r] for r in b]


def test_incremental_add_makes_new_chunks_findable(dense_dir, vital_slice):
    from rag.chunkers import FixedTokenChunker

    retriever = HNSWRetriever.load(dense_dir)
    before = len(retriever)
    extra = vital_slice[0].model_copy(update={"id": "extra", "text": "Zorblax is a purple moon."})
    retriever.add(FixedTokenChunker().chunk(extra))
    assert len(retriever) == before + 1
    assert retriever.search(["Which moon is purple?"], k=1)[0][0].chunk.doc_id == "extra"
    with pytest.raises(RagError, match="unsaved changes"):
        retriever.spec()


@pytest.fixture
def index_copy(dense_dir, tmp_path):
    target = tmp_path / "idx"
    shutil.copytree(dense_dir, target)
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


def test_querying_with_another_encoder_is_refused(dense_dir):
    other = {"type": "sentence_transformers", "query_prefix": "query: "}
    with pytest.raises(EncoderMismatchError, match="built with encoder"):
        HNSWRetriever.load(dense_dir, encoder=other)


def test_bad_arguments_are_refused(dense_dir):
    retriever = HNSWRetriever.load(dense_dir)
    with pytest.raises(RagError, match="k must be"):
        retriever.search(["q"], k=0)
    with pytest.raises(ConfigError, match="M"):
        HNSWRetriever(M=1)


# ---- BM25, deletion, filters, fusion, HyDE ---------------------------------------------------



@pytest.fixture(scope="module")
def bm25(vital_slice):
    from rag.chunkers import FixedTokenChunker

    retriever = BM25Retriever()
    retriever.index(FixedTokenChunker().chunk_all(vital_slice))
    return retriever


def test_bm25_finds_the_gold_article(bm25, description_queries):
    assert recall_at(bm25, description_queries, 10) >= 0.7
    assert bm25.search(["Stanley Kubrick 1968 film"], k=1)[0][0].chunk.doc_id == "2001: A Space Odyssey"


def test_bm25_finds_nothing_for_a_query_of_stopwords_only(bm25, tmp_path):
    bm25.save(tmp_path / "bm25")
    for index in (bm25, BM25Retriever.load(tmp_path / "bm25")):  # a saved vocabulary holds ""
        found = index.search(["is it the?", "Stanley Kubrick 1968 film", "a"], k=3)
        assert found[0] == [] and found[2] == []
        assert found[1][0].chunk.doc_id == "2001: A Space Odyssey"


def test_bm25_save_load_and_damage(bm25, tmp_path, description_queries):
    bm25.save(tmp_path / "bm25")
    loaded = BM25Retriever.load(tmp_path / "bm25")
    queries = [q for q, _ in description_queries[:20]]
    assert [[h.chunk.id for h in r] for r in loaded.search(queries, 5)] == \
           [[h.chunk.id for h in r] for r in bm25.search(queries, 5)]
    for f in (tmp_path / "bm25" / "bm25s").glob("data*.npy"):
        f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(IndexLoadError, match="bm25s"):
        BM25Retriever.load(tmp_path / "bm25")


@pytest.mark.parametrize("make", ["dense", "bm25"])
def test_delete_removes_an_item_from_results(make, dense_dir, bm25):
    retriever = HNSWRetriever.load(dense_dir) if make == "dense" else bm25
    query = "1968 film by Stanley Kubrick"
    target = retriever.search([query], k=1)[0][0].chunk.id
    retriever.delete([target])
    assert target not in {h.chunk.id for h in retriever.search([query], k=50)[0]}
    with pytest.raises(RagError, match="unknown"):
        retriever.delete([target])
    if make == "bm25":  # restore the shared fixture
        retriever.add([Chunk(id=target, doc_id="2001: A Space Odyssey", text="", start=0, end=0)])


@pytest.mark.parametrize("make", ["dense", "dense_exact", "bm25", "hybrid"])
def test_filters_never_return_a_non_matching_item(make, dense_dir, bm25, vital_slice):
    dense = HNSWRetriever.load(dense_dir, exact=make == "dense_exact")
    retriever = {"dense": dense, "dense_exact": dense, "bm25": bm25,
                 "hybrid": HybridRetriever([bm25, HNSWRetriever.load(dense_dir)])}[make]
    queries = ["famous painting", "classical composer", "science fiction film"]
    wanted = {d.id for d in vital_slice[::100]}  # four articles, whatever the queries say
    for hits in retriever.search(queries, k=4, filter={"doc_id": sorted(wanted)}):
        assert len(hits) == 4  # k results come back when k exist
        assert {h.chunk.doc_id for h in hits} <= wanted
    for hits in retriever.search(queries, k=3, filter={"topic": "Biology and health sciences"}):
        assert hits == []  # the 400-article slice is all Arts


def test_exact_mode_agrees_with_hnsw_on_a_small_index(dense_dir, description_queries):
    approx, exact = HNSWRetriever.load(dense_dir), HNSWRetriever.load(dense_dir, exact=True)
    queries = [q for q, _ in description_queries[:30]]
    a, b = approx.search(queries, 5), exact.search(queries, 5)
    assert [[h.chunk.id for h in r] for r in a] == [[h.chunk.id for h in r] for r in b]


def hit(doc: str, score: float) -> Hit:
    return Hit(chunk=Chunk(id=doc, doc_id=doc, text=doc, start=0, end=len(doc)), score=score,
               retriever="t")


def test_rrf_matches_the_hand_computed_fusion():
    a = [hit("d1", 3), hit("d2", 2), hit("d3", 1)]
    b = [hit("d3", 9), hit("d1", 8)]
    fused = rrf([a, b], rrf_k=60)
    assert [h.chunk.id for h in fused] == ["d1", "d3", "d2"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1].score == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2].score == pytest.approx(1 / 62)


def test_convex_normalizes_and_gives_absent_items_the_minimum():
    a = [hit("d1", 10), hit("d2", 5), hit("d3", 0)]
    b = [hit("d3", 0.9), hit("d2", 0.5)]
    fused = {h.chunk.id: h.score for h in convex([a, b], [0.3, 0.7])}
    assert fused == pytest.approx({"d1": 0.3, "d2": 0.3 * 0.5 + 0.0, "d3": 0.7})


def test_hybrid_round_trips_and_beats_neither_run_alone(dense_dir, bm25, tmp_path, description_queries):
    hybrid = HybridRetriever([bm25, HNSWRetriever.load(dense_dir)], method="rrf")
    fused_recall = recall_at(hybrid, description_queries, 10)
    assert fused_recall >= max(recall_at(c, description_queries, 10) for c in hybrid.retrievers) - 0.02
    with pytest.raises(RagError, match="lives only in memory.*save"):
        Pipeline([Retrieve(hybrid, k=3)]).to_dict()
    hybrid.save(tmp_path / "hybrid")
    shutil.move(tmp_path / "hybrid", tmp_path / "moved")  # one folder, children by subfolder
    loaded = open_index(tmp_path / "moved")
    assert isinstance(loaded, HybridRetriever)
    assert loaded.spec() == {"type": "hybrid", "path": str(tmp_path / "moved")}
    queries = [q for q, _ in description_queries[:10]]
    assert [[h.chunk.id for h in hs] for hs in loaded.search(queries, k=5)] == \
        [[h.chunk.id for h in hs] for hs in hybrid.search(queries, k=5)]
    rebuilt = Pipeline.from_yaml(Pipeline([Retrieve(loaded, k=3)]).to_yaml())
    assert rebuilt.stages[0].retriever.config.method == "rrf"
    with pytest.raises(ConfigError, match="weights"):
        HybridRetriever([bm25, bm25], weights=[1.0])


def test_hyde_searches_with_the_mean_of_query_and_passages(dense_dir, vllm_tiny):
    hyde = HyDERetriever(HNSWRetriever.load(dense_dir), vllm_tiny, n=2, max_tokens=48)
    [passages] = hyde.hypothetical(["Who painted the Mona Lisa?"])
    assert len(passages) == 2 and all(p.strip() for p in passages)
    [hits] = hyde.search(["Who painted the Mona Lisa?"], k=5)
    assert "Mona Lisa" in {h.chunk.doc_id for h in hits} and hits[0].retriever == "hyde"
    with pytest.raises(ConfigError, match="dense"):
        HyDERetriever(BM25Retriever(), vllm_tiny)
