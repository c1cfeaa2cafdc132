"""Indexes kept current: updates by document equal a rebuild, deletes stay deleted, a kill
leaves the old or the new version, two writers never mix, bad updates write nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rag.cli import app
from rag.errors import ConfigError, EncoderMismatchError, IndexLoadError, IndexLockedError, RagError
from rag.recipes import empty_hybrid, hybrid_index, sync_index
from rag.retrievers import DocumentIndex, open_index
from rag.retrievers.documents import check_same_children, writer_lock
from rag.types import Document

CHUNK = 60  # tokens: several chunks per article, so a document's chunks are deleted together


def ranked(hits):  # type: ignore[no-untyped-def]
    """A ranking as (score, id) pairs; hits without a score are filler in any order."""
    return sorted((-round(h.score, 5), h.chunk.id) for h in hits if h.score > 0)


def changed_set(docs: list[Document]) -> list[Document]:
    """Three removed, one edited, one new."""
    edited = docs[3].model_copy(update={"text": docs[3].text + " It was renamed in 2031."})
    return [edited, *docs[4:], Document(id="new-doc", title="Zorblax",
                                        text="Zorblax is the third moon of Quillon.")]


@pytest.fixture(scope="module")
def docs(vital_slice: list[Document]) -> list[Document]:
    return vital_slice[:24]


def test_an_update_adds_edits_and_deletes_and_equals_a_rebuild(docs, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    sync_index(docs, out, chunk_size=CHUNK, progress=False)
    final = changed_set(docs)
    from rag.retrievers import HybridRetriever

    embedded: list[str] = []
    add = HybridRetriever.add
    monkeypatch.setattr(HybridRetriever, "add", lambda self, chunks, progress=False: (
        embedded.extend(c.doc_id for c in chunks), add(self, chunks, progress))[1])
    updated, changes = sync_index(final, out, chunk_size=CHUNK, progress=False)
    monkeypatch.undo()
    assert (changes.added, changes.updated) == (["new-doc"], [docs[3].id])
    assert sorted(changes.deleted) == sorted(d.id for d in docs[:3])
    assert len(changes.unchanged) == len(docs) - 4
    assert set(embedded) == {"new-doc", docs[3].id}  # unchanged documents are not re-embedded
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["v2"]  # the old version gone

    rebuilt, _ = sync_index(final, tmp_path / "rebuilt", chunk_size=CHUNK, progress=False)
    a, b = open_index(out), open_index(tmp_path / "rebuilt")
    assert sorted(c.id for c in a.chunks) == sorted(c.id for c in b.chunks)
    queries = [d.title for d in final] + [d.title for d in docs[:3]] + ["third moon of Quillon"]
    a_dense, b_dense = a.retrievers[1], b.retrievers[1]
    a_dense.config.exact = b_dense.config.exact = True  # HNSW: its exact search, over the vectors
    for mine, theirs in zip(a.retrievers, b.retrievers):  # BM25 exactly
        mine_runs, their_runs = mine.search(queries, k=10), theirs.search(queries, k=10)
        if mine.name != "splade":
            assert [ranked(h) for h in mine_runs] == [ranked(h) for h in their_runs], mine.name
            continue
        for got, want in zip(mine_runs, their_runs):  # SPLADE encodes in batches, and the other
            # documents of a batch move the fifth digit: the same chunks, scores to 1e-4
            assert {h.chunk.id: h.score for h in got if h.score > 0} == pytest.approx(
                {h.chunk.id: h.score for h in want if h.score > 0}, abs=1e-4)
    gone = {d.id for d in docs[:3]}
    a_dense.config.exact = False  # the graph walk too never returns a deleted chunk
    for child in a.retrievers:
        assert not {h.chunk.doc_id for hits in child.search(queries, k=50) for h in hits} & gone
    assert a.search(["third moon of Quillon"], k=1)[0][0].chunk.doc_id == "new-doc"


def test_running_rag_index_again_on_a_folder_reports_and_applies_changes(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.md").write_text("# Alpha\n\nAlpha is the first letter.\n")
    (files / "b.txt").write_text("Beta is the second letter.\n")
    out = str(tmp_path / "idx")
    runner = CliRunner()
    first = runner.invoke(app, ["index", str(files), "--out", out])
    assert first.exit_code == 0, first.output
    assert "2 added, 0 updated, 0 deleted, 0 unchanged" in first.output
    (files / "b.txt").unlink()
    (files / "a.md").write_text("# Alpha\n\nAlpha is the first letter of the Greek alphabet.\n")
    (files / "c.md").write_text("# Gamma\n\nGamma is the third letter.\n")
    second = runner.invoke(app, ["index", str(files), "--out", out])
    assert second.exit_code == 0, second.output
    assert "1 added, 1 updated, 1 deleted, 0 unchanged" in second.output
    assert sorted({c.doc_id for c in open_index(out).chunks}) == ["a.md", "c.md"]
    same = runner.invoke(app, ["index", str(files), "--out", out])
    assert "0 added, 0 updated, 0 deleted, 2 unchanged" in same.output


def test_document_level_upsert_and_delete(docs, tmp_path):
    index, _ = sync_index(docs[:6], tmp_path / "idx", chunk_size=CHUNK, progress=False)
    with writer_lock(index.folder):
        changes = index.upsert([docs[6], docs[0]])
        assert (changes.added, changes.updated, changes.unchanged) == ([docs[6].id], [], [docs[0].id])
        assert index.delete([docs[1].id]).deleted == [docs[1].id]
        with pytest.raises(RagError, match="not in the index"):
            index.delete(["no-such-doc"])
        index.save()
    reopened = DocumentIndex.open(tmp_path / "idx")
    assert sorted(reopened.entries) == sorted(d.id for d in [docs[0], *docs[2:7]])
    assert {c.doc_id for c in reopened.retriever.chunks} == set(reopened.entries)


def test_bad_updates_are_named_errors_that_write_nothing(docs, tmp_path):
    out = tmp_path / "idx"
    sync_index(docs[:4], out, chunk_size=CHUNK, progress=False, splade=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ConfigError, match="chunked otherwise.*size"):
        sync_index(docs[:5], out, chunk_size=CHUNK + 1, progress=False)
    with pytest.raises(ConfigError, match="holds bm25 \\+ hnsw indexes.*splade"):
        sync_index(docs[:5], out, chunk_size=CHUNK, progress=False, splade=True)
    with pytest.raises(ConfigError, match="chunked otherwise.*tokenizer"):  # it follows the encoder
        sync_index(docs[:5], out, chunk_size=CHUNK, progress=False, encoder="splade")
    with pytest.raises(EncoderMismatchError, match="built with encoder"):
        check_same_children(open_index(out), empty_hybrid("splade"))
    with writer_lock(out), pytest.raises(IndexLockedError, match="another process"):
        sync_index(docs[:5], out, chunk_size=CHUNK, progress=False)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    result = CliRunner().invoke(app, ["index", str(tmp_path / "missing"), "--out", str(out)])
    assert result.exit_code == 2 and "error:" in result.output


def test_an_index_without_a_catalog_or_with_a_damaged_one_is_a_named_error(docs, tmp_path):
    from rag.recipes import document_chunks

    built = hybrid_index(document_chunks(docs[:3]), out=tmp_path / "chunks-only", progress=False)
    reopened = open_index(tmp_path / "chunks-only")  # what a resumed run sees: the same children
    assert [c.spec() for c in built.retrievers] == [c.spec() for c in reopened.retrievers]
    with pytest.raises(IndexLoadError, match="without a document catalog"):
        DocumentIndex.open(tmp_path / "chunks-only")
    sync_index(docs[:3], tmp_path / "idx", chunk_size=CHUNK, progress=False)
    catalog = next((tmp_path / "idx").glob("v*/documents.jsonl"))
    catalog.write_text(catalog.read_text()[:-20])
    with pytest.raises(IndexLoadError, match="documents.jsonl:3: not a valid catalog entry"):
        DocumentIndex.open(tmp_path / "idx")


def rag_index(corpus: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "rag.cli", "index", str(corpus), "--out",
                             str(out), "--chunk-size", str(CHUNK)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_a_kill_during_an_update_leaves_the_old_or_the_new_version(docs, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    old, new = docs[:12], changed_set(docs[:12])
    write = lambda ds: corpus.write_text("".join(d.model_dump_json() + "\n" for d in ds))  # noqa: E731
    out = tmp_path / "idx"
    write(old)
    assert rag_index(corpus, out).wait() == 0
    versions = {"old": {d.id for d in old}, "new": {d.id for d in new}}
    write(new)
    start = time.monotonic()
    assert rag_index(corpus, tmp_path / "timing").wait() == 0  # a whole run's length, once
    whole = time.monotonic() - start
    seen = set()
    for fraction in (0.4, 0.7, 0.9):
        process = rag_index(corpus, out)
        time.sleep(whole * fraction)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        held = {c.doc_id for c in open_index(out).chunks}
        assert held in versions.values()
        seen.add("new" if held == versions["new"] else "old")
        if held == versions["new"]:  # caught after the switch: start the next one from old
            write(old)
            assert rag_index(corpus, out).wait() == 0
            write(new)
    finished = rag_index(corpus, out)
    assert finished.wait() == 0, finished.stderr.read() if finished.stderr else ""
    assert {c.doc_id for c in open_index(out).chunks} == versions["new"]
    assert len([p for p in out.iterdir() if p.is_dir()]) == 1
    assert "old" in seen  # at least one kill landed before the switch


def test_repeated_document_ids_are_refused_before_anything_changes(docs, tmp_path):
    index, _ = sync_index(docs[:3], tmp_path / "idx", chunk_size=CHUNK, progress=False)
    with pytest.raises(RagError, match="repeated"):
        index.sync([docs[0], docs[0].model_copy(update={"text": "other"})])
    assert sorted(index.entries) == sorted(d.id for d in docs[:3])


def test_an_update_reaches_splade_and_milvus_children_and_survives_reopening(docs, tmp_path):
    """Every child index loses a changed document's old chunks and gains its new ones: a hybrid
    of BM25, SPLADE and Milvus (the vector database's embedded engine) updated by document."""
    from rag.chunkers import FixedTokenChunker
    from rag.retrievers import BM25Retriever, HybridRetriever, MilvusRetriever, SparseRetriever

    hybrid = HybridRetriever([BM25Retriever(), SparseRetriever(encoder={"type": "splade",
                                                                        "model": "splade"}),
                              MilvusRetriever()])
    index = DocumentIndex(tmp_path / "idx", hybrid, FixedTokenChunker(size=CHUNK))
    with writer_lock(index.folder):
        index.sync(docs[:5])
        index.save()
        changes = index.sync(changed_set(docs[:5]))
        index.save()
    assert changes.deleted and changes.updated and changes.added
    reopened = DocumentIndex.open(tmp_path / "idx")
    expected = sorted(c for e in reopened.entries.values() for c in e.chunks)
    for child in reopened.retriever.retrievers:
        assert len(child) == len(expected), child.name
        if hasattr(child, "chunks"):  # Milvus keeps its chunks in the collection only
            assert sorted(c.id for c in child.chunks) == expected, child.name
        found = child.search(["third moon of Quillon"], k=1)[0]
        assert found[0].chunk.doc_id == "new-doc", child.name
        gone = {h.chunk.doc_id for hits in child.search([d.title for d in docs[:3]], k=20)
                for h in hits}
        assert not gone & {d.id for d in docs[:3]}, child.name
