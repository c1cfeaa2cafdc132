"""Scaling out: Ray Data indexing against in-process, a vector database against hnswlib.

`vectordb`: the known-item benchmark (`rag.eval.datasets.known_items("test")`: 2,000 Wikidata descriptions
whose gold is their vital article) over all 10,033 vital articles, one chunk each, through
hnswlib and through Milvus (embedded `milvus-lite`, HNSW with the same M, efConstruction and ef)
holding the very vectors of the saved hybrid index's HNSW half: recall, MRR and nDCG at 10, and
milliseconds per query (one query at a time, median of `--repeat` runs, min and max). Query
vectors are encoded once, so both times are search alone.

`ray-index`: the vital articles (`--documents`, all 10,033 by default) indexed by
`rag.recipes.index_corpus` in process and by `rag.distributed.indexing.ray_index_corpus` with
`--actors` actors per stage, alternating, the embedding cache off; docs/s median with min and max,
the ratio per repeat, and whether both wrote the same chunks and vectors.

`ray-eval`: the best QA pipeline (`best_qa` on the saved hybrid index, transformers
`--eval-model`, `bench` by default, greedy) on the first `--questions` vital-qa questions in
process and through `rag eval`'s Ray runner, both from scratch: EM, and whether every answer and
ranking is the same, compared answer by answer; both runs' predictions are kept in
`results/scale/ray-eval/`.

`ray-serve`: `rag serve --replicas 2` of transformers `tiny` on Ray Serve under `--requests`
chat requests from 8 clients (no retries), one replica SIGKILLed once half are answered, run
`--serve-runs` times: the fraction answered 200 with the very answer the same model gives in
process (greedy), its minimum and median over the runs, and whether Ray brought the deployment
back to 2 running replicas each time.

    python benchmarks/scale.py [--parts vectordb ray-index ray-eval ray-serve] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rag.corpus import vital_articles
from rag.distributed import connect
from rag.eval.datasets import known_items
from rag.eval.metrics import ranking_scores
from rag.eval.report import write_results
from rag.recipes import document_chunks, hybrid_index
from rag.retrievers import HNSWRetriever, MilvusRetriever
from rag.types import Hit, KnownItem


def timed_search(retriever: HNSWRetriever | MilvusRetriever, vectors: np.ndarray, repeat: int,
                 ) -> tuple[list[list[Hit]], list[float]]:
    """Hits for every query vector, one at a time, and milliseconds per query of each run."""
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        hits = [retriever.search_vectors(v[None, :], k=10)[0] for v in vectors]
        runs.append(1000 * (time.perf_counter() - began) / len(vectors))
    return hits, runs


def row(name: str, hits: list[list[Hit]], items: list[KnownItem], runs: list[float]) -> dict[str, Any]:
    return {"system": name, "queries": len(items), **ranking_scores(hits, [i.gold for i in items]),
            "ms_per_query": round(statistics.median(runs), 3), "ms min": round(min(runs), 3),
            "ms max": round(max(runs), 3)}


def vector_database(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """Milvus and hnswlib on the same vectors: recall and ms per query."""
    hnsw: HNSWRetriever = hybrid_index(document_chunks(vital_articles()),
                                       out=args.work / "vital-hybrid").retrievers[1]
    items = known_items("test")
    queries = hnsw.encoder.encode_queries([i.query for i in items], progress=True)
    milvus = MilvusRetriever(encoder=hnsw.encoder, space=hnsw.config.space, M=hnsw.config.M,
                             ef_construction=hnsw.config.ef_construction,
                             ef_search=hnsw.config.ef_search)
    began = time.perf_counter()
    milvus.add_vectors(hnsw.chunks, np.asarray(hnsw.vectors))
    with tempfile.TemporaryDirectory() as scratch:
        milvus.save(Path(scratch) / "milvus")
        load_seconds = time.perf_counter() - began
        results = {name: timed_search(r, queries, args.repeat)
                   for name, r in (("hnswlib", hnsw), ("milvus-lite", milvus))}
    rows = [row(name, hits, items, runs) for name, (hits, runs) in results.items()]
    by = {r["system"]: r for r in rows}
    summary = {"vectordb": "milvus-lite (pymilvus MilvusClient, embedded)",
               "vectordb_recall_at_10": by["milvus-lite"]["R@10"],
               "hnswlib_recall_at_10": by["hnswlib"]["R@10"],
               "vectordb_ms_per_query": by["milvus-lite"]["ms_per_query"],
               "hnswlib_ms_per_query": by["hnswlib"]["ms_per_query"]}
    setup = {
        "corpus": f"{len(hnsw.chunks)} vital articles, one chunk each (the saved hybrid's HNSW vectors)",
        "queries": "known_items('test'): 2,000 descriptions, gold = their article",
        "index": f"HNSW M={hnsw.config.M}, efConstruction={hnsw.config.ef_construction}, "
                 f"ef={hnsw.config.ef_search}, {hnsw.config.space}",
        "encoder": hnsw.encoder.pinned_spec(), "repeat": args.repeat,
        "milvus_insert_and_save_s": round(load_seconds, 1)}
    return {"vector_database": rows}, summary, {"vector_database": setup}


def ray_indexing(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """The vital articles indexed in process and through Ray Data (`--actors`), the embedding
    cache off (a scratch RAG_CACHE_DIR emptied before each run), alternating per repeat."""
    import ray

    from rag.distributed.indexing import ray_index_corpus
    from rag.recipes import index_corpus

    docs = vital_articles()[: args.documents]
    scratch = Path(tempfile.mkdtemp(prefix="rag-scale-"))
    os.environ["RAG_CACHE_DIR"] = str(scratch / "cache")  # before Ray starts: workers inherit it
    connect()
    runs: dict[str, list[float]] = {"in-process": [], "ray": []}
    built = {}
    for i in range(args.repeat):
        for name in runs:
            shutil.rmtree(scratch / "cache", ignore_errors=True)
            out = scratch / f"{name}-{i}"
            began = time.perf_counter()
            if name == "ray":
                built[name] = ray_index_corpus(docs, out, actors=args.actors)
            else:
                built[name] = index_corpus(docs, out, progress=False)
            runs[name].append(len(docs) / (time.perf_counter() - began))
    ray.shutdown()
    a, b = (built[n].retrievers[1] for n in ("ray", "in-process"))
    same_ids = [c.id for c in a.chunks] == [c.id for c in b.chunks]
    max_diff = float(np.abs(np.asarray(a.vectors) - np.asarray(b.vectors)).max())
    shutil.rmtree(scratch, ignore_errors=True)
    rows = [{"indexing": name, "documents": len(docs), "chunks": len(built[name].retrievers[1].chunks),
             "docs_per_s": round(statistics.median(r), 2), "min": round(min(r), 2),
             "max": round(max(r), 2)} for name, r in runs.items()]
    ratios = [r / p for r, p in zip(runs["ray"], runs["in-process"])]
    summary = {"ray_index_docs_per_s": rows[1]["docs_per_s"], "inprocess_index_docs_per_s": rows[0]["docs_per_s"],
               "ray_index_ratio": round(statistics.median(ratios), 3),
               "ray_index_same_chunk_ids": same_ids, "ray_index_max_vector_diff": max_diff}
    setup = {"documents": len(docs), "actors": args.actors, "repeat": args.repeat,
             "index": "rag.recipes.index_corpus: 200-token chunks, BM25 + MiniLM HNSW hybrid",
             "dtype": built["ray"].retrievers[1].encoder.dtype, "ratio": "per repeat, median"}
    return {"ray_indexing": rows}, summary, {"ray_indexing": setup}


def ray_evaluation(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """The best QA pipeline (`best_qa` on the saved hybrid index, greedy) over the first
    `--questions` vital-qa questions, in process and on Ray actors: the same predictions? A
    pipeline that answers (EM well above 0), so equal answers are not equally empty ones."""
    import ray

    from rag.distributed.evaluation import ray_runner
    from rag.eval.datasets import vital_qa
    from rag.eval.runner import run_qa
    from rag.recipes import best_qa

    index = hybrid_index(document_chunks(vital_articles()), out=args.work / "vital-hybrid")
    pipeline = best_qa(index, {"type": "transformers", "model": args.eval_model}, max_tokens=32)
    questions = vital_qa(args.questions)
    kept = args.results / "scale" / "ray-eval"
    connect()
    runs = {}
    for name, runner in (("in-process", None), ("ray", ray_runner(actors=args.actors))):
        shutil.rmtree(kept / name, ignore_errors=True)  # answered now, not resumed
        began = time.perf_counter()
        options = {"runner": runner} if runner else {}
        runs[name] = (run_qa(pipeline, questions, kept / name, progress=True, **options),
                      time.perf_counter() - began)
    ray.shutdown()
    same = [a.answer == b.answer and a.retrieved == b.retrieved
            for a, b in zip(runs["in-process"][0], runs["ray"][0], strict=True)]
    ems = {name: round(sum(p.scores["em"] for p in preds) / len(preds), 4)
           for name, (preds, _) in runs.items()}
    rows = [{"evaluation": name, "questions": len(questions), "EM": ems[name],
             "seconds": round(seconds, 1),
             "predictions": str((kept / name / "predictions.jsonl").relative_to(args.results))}
            for name, (_, seconds) in runs.items()]
    setup = {"pipeline": f"best_qa: hybrid k=3, extractive 2x, short-answer prompt, transformers "
                         f"{args.eval_model}, greedy, 32 tokens", "questions": len(questions),
             "actors": args.actors, "compared": "answer by answer: the text and the ranking"}
    return ({"ray_evaluation": rows},
            {"ray_eval_em": ems["ray"], "ray_eval_matches": all(same),
             "ray_eval_same_predictions": f"{sum(same)}/{len(same)}"}, {"ray_evaluation": setup})


def replica_pids() -> list[int]:
    """Processes of this machine's Ray Serve replicas, by the title Ray gives them."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if entry.name.isdigit() and title.startswith(b"ray::ServeReplica:"):
            pids.append(int(entry.name))
    return pids


SERVED = {"type": "transformers", "model": "tiny"}
SERVE_TOKENS = 16


def question(title: str) -> str:
    """The chat message of one replica-kill request, asked of the server and in process alike."""
    return f"What is {title}?"


def kill_one_replica(titles: list[str], expected: list[str]) -> dict[str, Any]:
    """Two replicas of `SERVED` on Ray Serve, one chat request per title from 8 clients with no
    retries; one replica SIGKILLed once half have been answered. How many got a 200 with the
    `expected` answer, and did Ray bring the deployment back to 2 running replicas?"""
    import signal
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import ray
    from ray import serve

    from rag.distributed.serving import APP_NAME, serve_on_ray
    from rag.serving import ServeConfig

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServeConfig(models={"tiny": SERVED}, port=port)
    connect()
    serve_on_ray(config, replicas=2, blocking=False, cpus_per_replica=0.5)
    answered, lock, killed = [], threading.Lock(), threading.Event()

    def ask(title: str) -> tuple[int, str | None]:
        body = {"model": "tiny", "max_tokens": SERVE_TOKENS, "temperature": 0,
                "messages": [{"role": "user", "content": question(title)}]}
        try:
            response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                                  timeout=120)
            status = response.status_code
            text = response.json()["choices"][0]["message"]["content"] if status == 200 else None
        except httpx.HTTPError:
            status, text = 0, None
        with lock:
            answered.append(status)
            if len(answered) == len(titles) // 2 and not killed.is_set():
                killed.set()
                os.kill(replica_pids()[0], signal.SIGKILL)
        return status, text

    began = time.perf_counter()
    with ThreadPoolExecutor(8) as clients:
        replies = list(clients.map(ask, titles))
    seconds = time.perf_counter() - began
    deadline, running = time.time() + 180, 0
    while time.time() < deadline:
        state = serve.status().applications[APP_NAME].deployments["OpenAIServer"]
        running = state.replica_states.get("RUNNING", 0)
        if running == 2 and state.status == "HEALTHY":
            break
        time.sleep(2)
    serve.shutdown()
    ray.shutdown()
    statuses = [status for status, _ in replies]
    right = sum(text == want for (_, text), want in zip(replies, expected, strict=True))
    counts = {code: statuses.count(code) for code in sorted(set(statuses))}
    return {"requests": len(statuses), "clients": 8, "answered 200": counts.get(200, 0),
            "answered as in process": right, "ok": round(right / len(statuses), 3),
            "statuses": ", ".join(f"{code or 'no response'}: {n}" for code, n in counts.items()),
            "seconds": round(seconds, 1), "replicas running after": running}


def ray_serving(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """The replica-kill test `--serve-runs` times, each answer checked against the answer the
    same model gives in process (greedy), so a 200 with a wrong or empty answer is no success:
    the fraction answered right, its minimum and median over the runs."""
    from rag.registry import build
    from rag.types import Message, Prompt, SamplingParams

    titles = [d.title for d in vital_articles()[: args.requests]]
    model = build("generator", SERVED)
    greedy = SamplingParams(max_tokens=SERVE_TOKENS, temperature=0)
    expected = [model.generate([Prompt(messages=[Message(role="user", content=question(t))])],
                               greedy)[0].completions[0].text for t in titles]  # one at a time
    del model
    rows = [{"run": run + 1, **kill_one_replica(titles, expected)}
            for run in range(args.serve_runs)]
    ok = [r["ok"] for r in rows]
    setup = {"deployment": "rag serve --replicas 2 (Ray Serve FastAPI ingress), transformers tiny, "
                           f"{SERVE_TOKENS} tokens, greedy",
             "kill": "SIGKILL of one replica after half the answers",
             "clients": "8 threads, httpx, no retries", "runs": args.serve_runs,
             "ok": "HTTP 200 with the answer text equal to the same model's in-process greedy "
                   "answer to the same message, one request at a time"}
    summary = {"serve_replicas_ok_min": min(ok), "serve_replicas_ok_median": statistics.median(ok),
               "serve_replicas_recovered": all(r["replicas running after"] == 2 for r in rows)}
    return {"ray_serving": rows}, summary, {"ray_serving": setup}


PARTS = {"vectordb": vector_database, "ray-index": ray_indexing, "ray-eval": ray_evaluation,
         "ray-serve": ray_serving}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--actors", type=int, default=2, help="Ray actors per stage")
    parser.add_argument("--documents", type=int, default=None, help="first N articles for ray-index")
    parser.add_argument("--questions", type=int, default=100, help="vital-qa questions for ray-eval")
    parser.add_argument("--eval-model", default="bench", help="the ray-eval pipeline's model")
    parser.add_argument("--requests", type=int, default=200, help="chat requests for ray-serve")
    parser.add_argument("--serve-runs", type=int, default=3, help="replica-kill tests")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-end-to-end"),
                        help="where the saved hybrid index lives (built if missing)")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder of scale.json and the ray-eval predictions (a scratch one "
                             "for trial runs)")
    args = parser.parse_args()
    sections: dict[str, list[dict]] = {}
    summary: dict[str, Any] = {}  # this run's keys; write_results keeps the other parts' keys
    from_sections: dict[str, list[str]] = {}
    setup: dict[str, Any] = {}
    for part in args.parts:
        rows, found, described = PARTS[part](args)
        sections |= rows
        summary |= found
        from_sections |= {k: list(rows) for k in found}
        setup |= described
    write_results("scale", setup, sections, folder=args.results, keep_other_sections=True,
                  summary=summary, summary_sections=from_sections)


if __name__ == "__main__":
    main()
