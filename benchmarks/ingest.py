"""Documents kept current: mixed formats, updates against rebuilds, filters, kills mid-update.

Corpus: the vital articles less 33 held out for the update (10,000 documents), written by this
script as files, a sixth each as PDF (fpdf2, DejaVu Sans), HTML, DOCX (python-docx), Markdown,
plain text and JSONL records; the same articles given as `Document`s are the plain-text corpus.
Both are indexed by `rag.recipes.index_corpus` (the default hybrid, 200-token chunks).

1. formats: known-item R@10 (`known_items("test")`, its first 500 queries whose gold is not held
   out) over the files and over the plain texts, in the same run.
2. update: a change of 1% (34 deleted, 33 edited, the 33 held out added) applied to a copy of the
   plain-text index, against a full rebuild of the final set: seconds, median of `--repeat`
   runs each; then the updated index against the rebuild for 500 queries: BM25's scored hits
   equal, HNSW's exact search equal and its graph search's recall against exact within 0.01 of
   the rebuild's; and how many chunks of deleted documents any query returned (the deleted
   articles' own descriptions among the queries).
3. filters: filtered hybrid search against exact filtered search (HNSW searched exhaustively) at
   a filter keeping about 1% of the chunks (a title's first letter) and one keeping about 10%
   (a topic): recall@10 and milliseconds per query (median of `--repeat` runs of the batch).
4. crash: `rag index` updating a 1,000-document index (10% changed) is killed with SIGKILL the
   moment it is seen to reach each point of `KILL_POINTS` (documents read, chunking, embedding,
   the new version's catalog, each child index begun and written, the manifest switched, the
   old version removed); after each kill the folder must open holding exactly the old or the
   new documents in every child index, and a rerun must finish the update. A run that ended
   before its point was seen is listed and not counted.

    python benchmarks/ingest.py [--parts formats update filters crash] [--work .cache/bench-ingest]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docx
from fpdf import FPDF
from tqdm.auto import tqdm

from rag.corpus import read_corpus, vital_articles
from rag.eval.datasets import known_items
from rag.eval.metrics import recall_at
from rag.eval.report import write_results
from rag.models import cache_dir
from rag.recipes import index_corpus
from rag.retrievers import DocumentIndex, HybridRetriever, open_index
from rag.types import Document, Hit

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # Debian's fonts-dejavu-core
FORMATS = (".pdf", ".html", ".docx", ".md", ".txt", ".jsonl")
HELD_OUT = 33
QUERIES = 500


def file_name(doc: Document) -> str:
    return re.sub(r"[/\\\x00]", "_", doc.id)[:200]


def write_pdf(path: Path, doc: Document) -> None:
    pdf = FPDF()
    pdf.set_title(doc.title)
    pdf.add_font("DejaVu", fname=str(FONT))
    pdf.add_page()
    pdf.set_font("DejaVu", size=16)
    pdf.multi_cell(0, 9, doc.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=10)
    pdf.multi_cell(0, 5, doc.text, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))


def write_docx(path: Path, doc: Document) -> None:
    document = docx.Document()
    document.add_heading(doc.title, 0)
    for paragraph in doc.text.split("\n"):
        document.add_paragraph(paragraph)
    document.save(str(path))


def write_html(path: Path, doc: Document) -> None:
    from html import escape

    body = "".join(f"<p>{escape(p)}</p>" for p in doc.text.split("\n"))
    path.write_text(f"<html><head><title>{escape(doc.title)}</title></head><body>"
                    f"<nav><a href='/'>Home</a> <a href='/random'>Random article</a></nav>"
                    f"<main><h1>{escape(doc.title)}</h1>{body}</main>"
                    f"<footer>Text under CC BY-SA 4.0.</footer></body></html>", encoding="utf-8")


def write_files(docs: Sequence[Document], folder: Path) -> dict[str, str]:
    """The documents as files, round-robin over the formats; returns source -> article id."""
    sources: dict[str, str] = {}
    records: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(tqdm(docs, desc="writing files", unit="doc")):
        suffix = FORMATS[i % len(FORMATS)]
        if suffix == ".jsonl":
            records.append(json.dumps({"id": doc.id, "title": doc.title, "text": doc.text}))
            sources[f"articles.jsonl:{doc.id}"] = doc.id
            continue
        path = folder / suffix[1:] / f"{file_name(doc)}{suffix}"
        sources[path.relative_to(folder).as_posix()] = doc.id
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        if suffix == ".pdf":
            write_pdf(path, doc)
        elif suffix == ".docx":
            write_docx(path, doc)
        elif suffix == ".html":
            write_html(path, doc)
        elif suffix == ".md":
            path.write_text(f"# {doc.title}\n\n{doc.text}\n", encoding="utf-8")
        else:
            path.write_text(f"{doc.title}\n\n{doc.text}\n", encoding="utf-8")
    (folder / "articles.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    return sources


def plain(docs: Sequence[Document]) -> list[Document]:
    """Articles as a user's JSONL would give them: id, title, text, and the metadata filtered on."""
    return [Document(id=d.id, title=d.title, text=d.text,
                     metadata={"topic": d.metadata.get("topic", ""),
                               "letter": d.title[:1].upper()}) for d in docs]


def build(docs: Sequence[Document], out: Path) -> HybridRetriever:
    if not (out / "manifest.json").exists():
        index_corpus(docs, out)
    return open_index(out)  # type: ignore[return-value]


def doc_ranking(index: HybridRetriever, queries: list[str], to_article: dict[str, str],
                k: int = 10) -> list[list[str]]:
    runs = index.search(queries, k=k)
    return [list(dict.fromkeys(to_article.get(h.chunk.doc_id, h.chunk.doc_id) for h in hits))
            for hits in runs]


def corpus_split(args: argparse.Namespace) -> tuple[list[Document], list[Document]]:
    """(the 10,000 indexed first, or `--documents` of them; the 33 held out to be added by the
    update)."""
    docs = plain(vital_articles())
    return docs[HELD_OUT:][: args.documents], docs[:HELD_OUT]


def eval_queries(indexed: Sequence[Document]) -> tuple[list[str], list[str]]:
    """The first 500 known-item test queries whose gold is indexed."""
    ids = {d.id for d in indexed}
    items = [i for i in known_items("test") if i.gold in ids][:QUERIES]
    return [i.query for i in items], [i.gold for i in items]


def formats(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base, held = corpus_split(args)
    sources = write_files(base, args.work / "files")
    started = time.perf_counter()
    ingested = read_corpus(str(args.work / "files"))
    read_s = time.perf_counter() - started
    if ingested.unreadable:
        raise SystemExit(f"{len(ingested.unreadable)} files unreadable, e.g. {ingested.unreadable[0]}")
    suffixes = sorted({Path(d.id.split(":")[0]).suffix for d in ingested.documents})
    queries, golds = eval_queries(base)
    rows = []
    recall = {}
    for name, docs, to_article in (("mixed formats", ingested.documents, sources),
                                   ("plain text", base, {})):
        index = build(docs, args.work / ("mixed" if to_article else "plain"))
        recall[name] = recall_at(doc_ranking(index, queries, to_article), golds, 10)
        rows.append({"corpus": name, "documents": len(docs), "chunks": len(index),
                     "r@10": round(recall[name], 4), "queries": len(queries)})
    rows[0]["read_seconds"] = round(read_s, 1)
    rows[0]["files_by_format"] = {s: sum(1 for d in ingested.documents if d.id.split(":")[0].endswith(s))
                                  for s in suffixes}
    return rows, {"formats_indexed": suffixes, "mixed_formats_r10": round(recall["mixed formats"], 4),
                  "plain_text_r10": round(recall["plain text"], 4)}


def final_set(base: list[Document], held: list[Document]) -> tuple[list[Document], list[str]]:
    """1% of 10,000 changed: the last 34 deleted, 33 edited, the 33 held out added."""
    deleted = [d.id for d in base[-34:]]
    edited = {d.id: d.model_copy(update={"text": d.text + " This article was revised."})
              for d in base[:: len(base) // 33][:33]}
    return [edited.get(d.id, d) for d in base[:-34]] + held, deleted


@contextmanager
def no_embedding_cache(work: Path) -> Iterator[None]:
    """Embed as a first build would: a fresh cache folder that shares only the models, so no
    vector comes from an earlier run's embedding cache."""
    fresh, models = work / "fresh-cache", cache_dir() / "models"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    (fresh / "models").symlink_to(models.resolve())
    before = os.environ.get("RAG_CACHE_DIR")
    os.environ["RAG_CACHE_DIR"] = str(fresh)
    try:
        yield
    finally:
        if before is None:
            del os.environ["RAG_CACHE_DIR"]
        else:
            os.environ["RAG_CACHE_DIR"] = before
        shutil.rmtree(fresh)


def timed_index(docs: list[Document], out: Path, work: Path) -> float:
    """Seconds for `index_corpus` to make `out` hold `docs` (a build, or an update of what
    `out` holds), embedding without the cache."""
    with no_embedding_cache(work):
        started = time.perf_counter()
        index_corpus(docs, out, progress=False)
        return time.perf_counter() - started


def timed_update(base_index: Path, docs: list[Document], work: Path) -> float:
    copy = work / "update-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(base_index, copy)
    return timed_index(docs, copy, work)


def timed_rebuild(docs: list[Document], out: Path, work: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    return timed_index(docs, out, work)


def same_ranking(a: list[Hit], b: list[Hit]) -> bool:
    """The same scores in order, and the same chunks at each score above the last one kept: a
    tie at the cut may keep either chunk, and hits without a score are filler in any order."""
    scores = [[round(h.score, 5) for h in hits if h.score > 0] for hits in (a, b)]
    if scores[0] != scores[1]:
        return False
    cut = scores[0][-1] if scores[0] else None
    kept = [sorted((round(h.score, 5), h.chunk.id) for h in hits
                   if h.score > 0 and round(h.score, 5) != cut) for hits in (a, b)]
    return kept[0] == kept[1]


def graph_recall(dense: Any, queries: list[str]) -> float:
    dense.config.exact = False
    approx = dense.search(queries, k=10)
    dense.config.exact = True
    exact = dense.search(queries, k=10)
    dense.config.exact = False
    return statistics.mean(len({h.chunk.id for h in a} & {h.chunk.id for h in e}) / max(len(e), 1)
                           for a, e in zip(approx, exact))


def update(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base, held = corpus_split(args)
    base_index = args.work / "plain"
    build(base, base_index)
    final, deleted = final_set(base, held)
    index_corpus(final[:5], args.work / "warm-up", progress=False)  # load the models once
    shutil.rmtree(args.work / "warm-up")
    update_s = [timed_update(base_index, final, args.work) for _ in range(args.repeat)]
    rebuild_s = [timed_rebuild(final, args.work / f"rebuild-{r}", args.work)
                 for r in range(args.repeat)]
    updated, rebuilt = open_index(args.work / "update-copy"), open_index(args.work / "rebuild-0")
    gone = set(deleted)
    descriptions = {d.id: d.metadata.get("description", d.title) for d in vital_articles()}
    queries = [descriptions[i] for i in deleted] + eval_queries(final)[0][: QUERIES - len(deleted)]
    bm25_same = sum(same_ranking(a, b) for a, b in zip(
        updated.retrievers[0].search(queries, k=10), rebuilt.retrievers[0].search(queries, k=10)))
    dense_a, dense_b = updated.retrievers[1], rebuilt.retrievers[1]
    dense_a.config.exact = dense_b.config.exact = True
    exact_same = sum([h.chunk.id for h in a] == [h.chunk.id for h in b] for a, b in zip(
        dense_a.search(queries, k=10), dense_b.search(queries, k=10)))
    recall_updated, recall_rebuilt = graph_recall(dense_a, queries), graph_recall(dense_b, queries)
    returned = sum(h.chunk.doc_id in gone for child in (updated, *updated.retrievers)
                   for hits in child.search(queries, k=10) for h in hits)
    matches = (bm25_same == len(queries) and exact_same == len(queries)
               and abs(recall_updated - recall_rebuilt) <= 0.01
               and sorted(c.id for c in updated.chunks) == sorted(c.id for c in rebuilt.chunks))
    ratio = statistics.median(update_s) / statistics.median(rebuild_s)
    rows = [{"documents_before": len(base), "documents_after": len(final), "added": len(held),
             "edited": 33, "deleted": len(deleted),
             "update_seconds": [round(s, 2) for s in update_s],
             "rebuild_seconds": [round(s, 2) for s in rebuild_s],
             "update_seconds_median": round(statistics.median(update_s), 2),
             "rebuild_seconds_median": round(statistics.median(rebuild_s), 2),
             "ratio": round(ratio, 4), "queries": len(queries),
             "bm25_top10_equal": bm25_same, "hnsw_exact_top10_equal": exact_same,
             "hnsw_graph_recall_updated": round(recall_updated, 4),
             "hnsw_graph_recall_rebuilt": round(recall_rebuilt, 4),
             "deleted_chunks_returned": returned}]
    for r in range(args.repeat):
        shutil.rmtree(args.work / f"rebuild-{r}", ignore_errors=True)
    return rows, {"update_seconds_ratio_1pct": round(ratio, 4), "update_matches_rebuild": matches,
                  "deleted_returned": returned}


def closest(values: dict[str, int], total: int, share: float) -> str:
    return min(values, key=lambda v: abs(values[v] / total - share))


def filters(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base, _ = corpus_split(args)
    index = build(base, args.work / "plain")
    chunks = index.chunks
    letters: dict[str, int] = {}
    topics: dict[str, int] = {}
    for c in chunks:
        letters[c.metadata["letter"]] = letters.get(c.metadata["letter"], 0) + 1
        topics[c.metadata["topic"]] = topics.get(c.metadata["topic"], 0) + 1
    chosen = {"about 1%": {"letter": closest(letters, len(chunks), 0.01)},
              "about 10%": {"topic": closest(topics, len(chunks), 0.10)}}
    queries = eval_queries(base)[0]
    dense = index.retrievers[1]
    rows = []
    for label, where in chosen.items():
        kept = sum(all(c.metadata[f] == v for f, v in where.items()) for c in chunks)
        seconds = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            approx = index.search(queries, k=10, filter=where)
            seconds.append(time.perf_counter() - started)
        dense.config.exact = True
        exact = index.search(queries, k=10, filter=where)
        dense.config.exact = False
        recall = statistics.mean(len({h.chunk.id for h in a} & {h.chunk.id for h in e}) / len(e)
                                 for a, e in zip(approx, exact) if e)
        rows.append({"filter": label, "where": where, "chunks_kept": kept,
                     "share": round(kept / len(chunks), 4), "recall@10_vs_exact": round(recall, 4),
                     "ms_per_query": round(1000 * statistics.median(seconds) / len(queries), 2),
                     "ms_per_query_min_max": [round(1000 * s / len(queries), 2)
                                              for s in (min(seconds), max(seconds))],
                     "hits_per_query": round(statistics.mean(len(a) for a in approx), 2)})
    worst = min(rows, key=lambda r: r["recall@10_vs_exact"])
    return rows, {"filtered_recall_at_10": worst["recall@10_vs_exact"],
                  "filtered_ms_per_query": worst["ms_per_query"]}


def write_jsonl(path: Path, docs: Sequence[Document]) -> None:
    path.write_text("".join(d.model_dump_json() + "\n" for d in docs), encoding="utf-8")


def rag_index(corpus: Path, out: Path, lines: list[tuple[float, str]] | None = None,
              ) -> subprocess.Popen[bytes]:
    """`rag index CORPUS --out OUT` in a child process; its stderr pieces (progress bars redraw
    with \r, so split on both line ends) go to `lines` with their times, as they come."""
    process = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", str(corpus), "--out",
                                str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()

    def follow() -> None:
        assert process.stderr is not None
        while chunk := os.read(process.stderr.fileno(), 4096):
            if lines is not None:
                lines.extend((time.monotonic() - started, piece.strip()) for piece in
                             re.split(r"[\r\n]", chunk.decode(errors="replace")) if piece.strip())

    threading.Thread(target=follow, daemon=True).start()
    return process


def version_of(out: Path) -> dict[str, str]:
    """What an index folder holds: each document's content hash, after checking that every
    child index holds exactly the catalogued documents' chunks."""
    index = DocumentIndex.open(out)
    expected = sorted(c for e in index.entries.values() for c in e.chunks)
    for child in index.retriever.retrievers:
        live = getattr(child, "_deleted", set())
        held = sorted(c.id for i, c in enumerate(child.chunks) if i not in live)  # type: ignore[attr-defined]
        if held != expected:
            raise RuntimeError(f"{child.name} holds other chunks than the catalog")
    return {i: e.hash for i, e in index.entries.items()}


# Kill points: the moment `rag index` is seen to reach each phase of an update, by its progress
# output or by the files of the version it writes (v2/...), then killed at once.
KILL_POINTS: dict[str, Callable[[list[str], Path], bool]] = {
    "documents read": lambda out, d: any(line.startswith("indexing ") for line in out),
    "chunking": lambda out, d: any("chunking" in line for line in out),
    "embedding": lambda out, d: any("Batches" in line for line in out),
    "catalog written": lambda out, d: (d / "v2" / "documents.jsonl").exists(),
    "writing bm25": lambda out, d: (d / "v2" / "0-bm25").exists(),
    "bm25 written": lambda out, d: (d / "v2" / "0-bm25" / "manifest.json").exists(),
    "writing hnsw": lambda out, d: (d / "v2" / "1-hnsw").exists(),
    "hnsw vectors written": lambda out, d: (d / "v2" / "1-hnsw" / "vectors.npy").exists(),
    "hnsw written": lambda out, d: (d / "v2" / "1-hnsw" / "manifest.json").exists(),
    "switched": lambda out, d: '"version": 2' in (d / "manifest.json").read_text(),
    "old version removed": lambda out, d: not (d / "v1").exists(),
}


def kill_when(corpus: Path, target: Path, point: str) -> tuple[str, list[str]]:
    """Run `rag index` on `target`, kill it with SIGKILL as soon as `point` is seen; returns
    what was seen (the point, or that the run ended first) and the files of v2 at the kill."""
    seen: list[tuple[float, str]] = []
    process = rag_index(corpus, target, seen)
    reached = KILL_POINTS[point]
    while process.poll() is None:
        if reached([line for _, line in seen], target):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0005)
    finished = process.wait() == 0
    files = sorted(p.relative_to(target).as_posix() for p in target.glob("v2/**/*"))
    return ("run ended first" if finished else point), files


def crash(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base, held = corpus_split(args)
    old = base[:1000]
    new = [d.model_copy(update={"text": d.text + " Revised."}) if i % 30 == 0 else d
           for i, d in enumerate(old[:-34])] + held
    work = args.work / "crash"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = work / "docs.jsonl"
    write_jsonl(corpus, old)
    if rag_index(corpus, work / "base").wait() != 0:
        raise SystemExit("building the crash test's base index failed")
    write_jsonl(corpus, new)
    shutil.copytree(work / "base", work / "reference")
    if rag_index(corpus, work / "reference").wait() != 0:
        raise SystemExit("the crash test's reference update failed")
    versions = {"old": version_of(work / "base"), "new": version_of(work / "reference")}
    rows = []
    for i, point in enumerate(tqdm(list(KILL_POINTS) * args.kills_per_point, desc="kill points")):
        target = work / f"kill-{i}"
        shutil.copytree(work / "base", target)
        with no_embedding_cache(work):  # each run embeds what changed, as a first run would
            killed_at, files = kill_when(corpus, target, point)
        try:
            found = version_of(target)
            version = next((k for k, v in versions.items() if v == found), "mixed")
        except Exception as exc:  # an unopenable folder is a failure, recorded
            version = f"unopenable: {type(exc).__name__}: {exc}"
        finished = rag_index(corpus, target).wait() == 0 and version_of(target) == versions["new"]
        rows.append({"kill_point": point, "killed": killed_at != "run ended first",
                     "new_version_files_written": len(files), "opened_as": version,
                     "rerun_finished": finished})
        shutil.rmtree(target)
    tried = [r for r in rows if r["killed"]]
    recovered = sum(r["opened_as"] in ("old", "new") and r["rerun_finished"] for r in tried)
    return rows, {"crash_points_tried": len(tried), "crash_points_recovered": recovered}


PARTS = {"formats": formats, "update": update, "filters": filters, "crash": crash}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-ingest"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kills-per-point", type=int, default=1,
                        help="kills at each point of KILL_POINTS")
    parser.add_argument("--documents", type=int, default=None,
                        help="index only the first N (a quick look; the figures use all)")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of ingest.json (default benchmarks/results)")
    args = parser.parse_args()
    if not FONT.is_file():
        raise SystemExit(f"{FONT} is missing: apt-get install fonts-dejavu-core")
    sections, summary, made_by = {}, {}, {}
    for name in args.parts:
        rows, keys = PARTS[name](args)
        sections[name], summary = rows, {**summary, **keys}
        made_by |= {key: [name] for key in keys}
        print(json.dumps(keys), flush=True)
    setup = {"corpus": f"vital articles less the 33 held out ({args.documents or 10_000}), "
                       "chunked at 200 tokens",
             "index": "rag.recipes.index_corpus: BM25 + MiniLM/HNSW, convex fusion",
             "queries": f"known_items('test'): first {QUERIES} whose gold is indexed",
             "repeat": args.repeat, "kill_points": list(KILL_POINTS)}
    write_results("ingest", setup, sections, folder=args.results, keep_other_sections=True,
                  summary=summary, summary_sections=made_by)


if __name__ == "__main__":
    main()
