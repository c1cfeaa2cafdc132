"""The `rag` command: index a corpus, ask questions, evaluate and serve pipelines, prepare models."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from rag.errors import RagError

app = typer.Typer(
    help="rag-icl: retrieval-augmented generation and in-context learning pipelines.",
    no_args_is_help=True, add_completion=False,
)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print `RagError`s as one clear line and exit 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RagError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@friendly
def index(
    corpus: Annotated[str, typer.Argument(
        help="A folder or file of documents (.pdf, .html, .docx, .md, .txt, .jsonl: id, text or "
             "contents, optional title), or 'vital-articles' (10,033 Wikipedia summaries).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the index to.")],
    limit: Annotated[int | None, typer.Option(help="Index only the first N documents.")] = None,
    chunk_size: Annotated[int, typer.Option(help="Chunk size in encoder tokens.")] = 200,
    overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive chunks.")] = 0,
    encoder: Annotated[str, typer.Option(help="Encoder model: name, folder or HF id.")] = "encoder",
    ray: Annotated[bool, typer.Option("--ray", help="Chunk and embed on Ray Data actors "
                                      "(a local cluster unless --ray-address is given).")] = False,
    ray_address: Annotated[str | None, typer.Option(help="A Ray cluster to join, e.g. ray://head:10001.")] = None,
    actors: Annotated[int, typer.Option(help="Ray actors per stage (chunking, embedding).")] = 2,
    splade: Annotated[bool | None, typer.Option(
        "--splade/--no-splade", help="SPLADE-tiny as a third index (on by default for a new "
        "index, as the QA default was chosen on it; an update keeps what the index holds). "
        "--no-splade builds in about 0.6x the time, at known-item R@10 0.888 against 0.9045.",
        show_default=False,
    )] = None,
) -> None:
    """Chunk a corpus and save a hybrid index (BM25 + MiniLM HNSW + SPLADE-tiny, one folder, one
    retriever).
    Run again on an index folder to update it: new and changed documents are embedded, removed
    ones deleted, unchanged ones kept (a crash leaves the old or the new version, never a mix)."""
    from rag.corpus import read_corpus

    ingested = read_corpus(corpus, limit=limit)
    docs = ingested.documents
    typer.echo(f"indexing {len(docs)} documents from {corpus} into {out}"
               f"{' on Ray' if ray or ray_address else ''}", err=True)
    if ray or ray_address:
        from rag.distributed.indexing import ray_index_corpus

        retriever = ray_index_corpus(docs, out, chunk_size=chunk_size, overlap=overlap,
                                     encoder=encoder, address=ray_address, actors=actors,
                                     splade=splade)
        changes = f"{len(docs)} added"
    else:
        from rag.recipes import sync_index

        built, changed = sync_index(docs, out, chunk_size=chunk_size, overlap=overlap,
                                    encoder=encoder, splade=splade)
        retriever, changes = built.retriever, str(changed)
    kinds = " + ".join(child.name for child in retriever.retrievers)
    typer.echo(f"indexed: {changes} documents; {out} holds {len(retriever)} chunks of "
               f"{len(docs)} documents (hybrid: {kinds})")
    if ingested.unreadable:
        typer.secho(f"{len(ingested.unreadable)} file(s) could not be read:", fg="yellow", err=True)
        for file in ingested.unreadable:
            typer.echo(f"  {file.path}: {file.reason}", err=True)


@app.command()
@friendly
def ask(
    index_dir: Annotated[Path, typer.Argument(help="Index folder written by `rag index`.")],
    questions: Annotated[list[str], typer.Argument(help="One or more questions.")],
    model: Annotated[str, typer.Option(
        help="Generator model: bench (prepared by `make models-bench`; answers all four of "
             "`make demo`'s questions, tiny three: benchmarks/results/demo_model.json), tiny, a "
             "folder or a GGUF.")] = "bench",
    backend: Annotated[str, typer.Option(help="vllm or transformers.")] = "vllm",
    k: Annotated[int | None, typer.Option(
        help="Passages to retrieve per question (default: best_qa's).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit in tokens.")] = 64,
    pipeline: Annotated[Path | None, typer.Option(
        help="Run this pipeline file instead of the default.")] = None,
) -> None:
    """Answer questions with the QA default (`rag.recipes.best_qa`): the hybrid's top k, fused
    convexly, the passages best first, a short-answer prompt (or --pipeline FILE)."""
    from rag.pipeline import Pipeline
    from rag.recipes import best_qa

    chosen = Pipeline.load(pipeline) if pipeline else best_qa(
        index_dir, {"type": backend, "model": model}, max_tokens=max_tokens,
        **({} if k is None else {"k": k}))
    for answer in chosen.answer(questions, progress=len(questions) > 1):
        typer.secho(f"\nQ: {answer.query}", bold=True)
        typer.echo(f"A: {answer.text}")
        cited = answer.citations or []
        typer.echo("cited: " + ("; ".join(f"[{c.number}] {c.label}" for c in cited)
                                or "(no passage cited)"))


STARTERS = ("qa", "code", "icl", "kv")
STARTER_POOL = 300  # labelled vital-article extracts the ICL starter's selector chooses from


@app.command()
@friendly
def init(
    kind: Annotated[str, typer.Argument(help=f"Starter pipeline: {', '.join(STARTERS)}.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pipeline file to write (.yaml).")],
    index_dir: Annotated[Path | None, typer.Option(
        "--index", help="qa, kv: the index folder (`rag index` writes one).")] = None,
    model: Annotated[str, typer.Option(
        help="Generator model: bench (as `rag ask`), tiny for a quick try, a folder or a GGUF."
    )] = "bench",
    store: Annotated[Path | None, typer.Option(
        help="kv: the chunk KV store folder to build for the index (default: OUT's stem + -kv).")] = None,
    compress: Annotated[str | None, typer.Option(
        help="kv: compress each chunk to 1/2 of its tokens before caching it "
             "('extractive': lead sentences, 'llmlingua': question-free token pruning).")] = None,
) -> None:
    """Write a starter pipeline that runs as written: QA over an index, code generation with
    verification, ICL topic classification with a kNN selector, or answers from chunk KV caches."""
    from rag.errors import ConfigError
    from rag.recipes import best_qa, code_generation, icl_classification, kv_reuse

    generator = {"type": "vllm", "model": model}
    if kind in {"qa", "kv"} and index_dir is None:
        raise ConfigError(f"`rag init {kind}` needs --index FOLDER (build one with `rag index`)")
    if kind == "qa":
        pipeline = best_qa(index_dir, generator)
    elif kind == "code":
        pipeline = code_generation(generator, samples=10, temperature=0.8, picker="codet",
                                   checks=("examples", "generated"))  # best measured on HumanEval
    elif kind == "icl":
        from rag.eval.datasets import vital_topics
        from rag.selectors import write_demos

        pool = write_demos(out.with_name(f"{out.stem}-pool.jsonl"), vital_topics()[:STARTER_POOL])
        pipeline = icl_classification(pool, generator, instruction="Classify the topic of each text.")
    elif kind == "kv":
        from rag.kvcache import ChunkKV
        from rag.prompts import SHORT_RAG_SYSTEM
        from rag.registry import build
        from rag.retrievers import open_index

        store = store or out.with_name(f"{out.stem}-kv")
        transformers = build("generator", {"type": "transformers", "model": model})
        chunks = open_index(index_dir).chunks  # type: ignore[attr-defined]
        compressor = build("compressor", {"type": compress}) if compress else None
        ChunkKV(transformers, store, SHORT_RAG_SYSTEM).build(chunks, compressor=compressor)
        pipeline = kv_reuse(index_dir, store, transformers.spec())
    else:
        raise ConfigError(f"unknown starter {kind!r}; choose one of {', '.join(STARTERS)}")
    pipeline.save(out)
    typer.echo(f"wrote {out}: " + " -> ".join(s.name for s in pipeline.stages))


@app.command("eval")
@friendly
def eval_(
    dataset: Annotated[str, typer.Option(
        help="'vital-qa' (description -> title), 'vital-facts' (facts inside articles), "
             "'humaneval', or a FlashRAG QA .jsonl (id, question, golden_answers).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder; re-running resumes.")],
    pipeline: Annotated[list[Path] | None, typer.Option(
        help="Pipeline YAML/JSON file (repeat for a side-by-side table).")] = None,
    model: Annotated[list[str] | None, typer.Option(
        help="humaneval without --pipeline: the zero-shot code pipeline of each model.")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N examples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per pipeline batch.")] = 16,
    ray: Annotated[bool, typer.Option("--ray", help="Run batches on Ray actors that each hold the "
                                      "pipeline (a local cluster unless --ray-address is given).")] = False,
    ray_address: Annotated[str | None, typer.Option(help="A Ray cluster to join.")] = None,
    actors: Annotated[int, typer.Option(help="Ray actors (one pipeline and engine each).")] = 2,
) -> None:
    """Score pipelines on a data set and write results.json, report.md and plots."""
    from rag.errors import ConfigError
    from rag.eval.datasets import HUMANEVAL, humaneval, load_qa
    from rag.eval.harness import evaluate_code, evaluate_qa
    from rag.eval.runner import in_process
    from rag.pipeline import Pipeline
    from rag.recipes import code_generation

    runner = in_process
    if ray or ray_address:
        from rag.distributed.evaluation import ray_runner

        runner = ray_runner(actors=actors, address=ray_address)

    names = [p.stem for p in pipeline or []]
    if len(set(names)) != len(names):
        raise ConfigError(f"pipeline files need distinct names (their stems): {names}")
    pipelines = {p.stem: Pipeline.load(p) for p in pipeline or []}
    if dataset == HUMANEVAL:
        pipelines |= {f"{m}-zero-shot": code_generation({"type": "vllm", "model": m})
                      for m in model or []}
        if not pipelines:
            raise ConfigError("humaneval evaluates code pipelines: pass --pipeline FILE or --model")
        summaries = evaluate_code(pipelines, humaneval(limit), out, batch_size, runner=runner)
    else:
        if not pipelines:
            raise ConfigError("QA data sets evaluate pipelines: pass --pipeline FILE (repeatable)")
        summaries = evaluate_qa(pipelines, load_qa(dataset, limit), out, dataset, batch_size,
                                runner=runner)
    for name, summary in summaries.items():
        shown = {k: round(v, 4) for k, v in summary.items() if isinstance(v, float)}
        typer.echo(f"{name}: {shown}")
    typer.echo(f"report: {out / 'report.md'}")


@app.command()
@friendly
def serve(
    config: Annotated[Path, typer.Argument(help="Server YAML: pipelines, models, embeddings, limits.")],
    host: Annotated[str | None, typer.Option(help="Bind address (default from the config: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from the config: 8000).")] = None,
    replicas: Annotated[int | None, typer.Option(help="Serve N replicas on Ray Serve (Ray routes "
                                                 "requests and replaces dead replicas).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="A Ray cluster to deploy on.")] = None,
) -> None:
    """Serve pipelines and models behind an OpenAI-compatible API."""
    import uvicorn

    from rag.serving import ServeConfig, create_app

    settings = ServeConfig.load(config, host=host, port=port)
    settings.check_binding()
    if replicas is not None or ray_address:
        from rag.distributed.serving import serve_on_ray

        typer.echo(f"serving {replicas or 1} replica(s) on Ray Serve at "
                   f"http://{settings.host}:{settings.port}/v1", err=True)
        serve_on_ray(settings, replicas=replicas or 1, address=ray_address)
        return
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit instead
    # lets the engines' exit hooks stop their worker processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


@app.command("train-selector")
@friendly
def train_selector_(
    method: Annotated[str, typer.Argument(help="epr, llm-r, lail or se2.")],
    pool: Annotated[Path, typer.Option(help="Demonstration pool, JSONL of id, input, output.")],
    train: Annotated[Path, typer.Option(help="Training anchors, same format, scored by the LLM.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for scores, checkpoints, model.")],
    generator: Annotated[str, typer.Option(help="Scoring LLM: tiny, bench, a folder or HF id.")] = "tiny",
    candidates: Annotated[int, typer.Option(help="BM25-mined candidates per anchor.")] = 20,
    shots: Annotated[int, typer.Option(help="Se²: sequence length scored during training.")] = 3,
    iterations: Annotated[int, typer.Option(help="LLM-R: mine again with the trained retriever.")] = 1,
    epochs: Annotated[int, typer.Option(help="Bi-encoder training epochs.")] = 3,
    instruction: Annotated[str, typer.Option(help="First line of every prompt.")] = "",
    input_prefix: Annotated[str, typer.Option(help="Text before each input.")] = "Input: ",
    output_prefix: Annotated[str, typer.Option(help="Text between input and output.")] = "\nOutput:",
) -> None:
    """Train a demonstration selector from LLM feedback; rerun the same command to resume."""
    from rag.registry import build
    from rag.selectors import DemoTemplate, read_demos, train_selector

    template = DemoTemplate(instruction=instruction, input_prefix=input_prefix,
                            output_prefix=output_prefix.replace("\\n", "\n"))
    trained = train_selector(
        method, read_demos(pool), read_demos(train), build("generator", {"type": "vllm", "model": generator}),
        out, template=template, candidates=candidates, shots=shots, iterations=iterations,
        settings={"epochs": epochs}, pool_path=str(pool.resolve()),
    )
    typer.echo(trained.model_dump_json(indent=2))


@app.command("train-reranker")
@friendly
def train_reranker(
    index: Annotated[Path, typer.Argument(help="First-stage index folder (`rag index`): mines hard negatives.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for checkpoints and the trained model.")],
    train: Annotated[str, typer.Option(
        help="JSONL of {query, gold} (gold: a document id), or 'vital-known-items' (the training "
             "split, disjoint from the benchmark's dev and test queries).")] = "vital-known-items",
    limit: Annotated[int | None, typer.Option(help="Use the first N training queries.")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs.")] = 1,
    negatives: Annotated[int, typer.Option(help="Hard negatives per query.")] = 3,
    depth: Annotated[int, typer.Option(help="First-stage hits searched for negatives.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Query groups (1 + negatives passages) per optimizer step.")] = 4,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 3e-5,
) -> None:
    """Fine-tune a cross-encoder for this corpus (from MiniLM, fresh head); rerun to resume."""
    from rag.ingest.jsonl import iter_json_lines
    from rag.eval.datasets import known_items
    from rag.rerankers.training import train_cross_encoder
    from rag.retrievers import open_index
    from rag.types import KnownItem

    if train == "vital-known-items":
        queries = known_items("train")
    else:
        queries = [KnownItem.model_validate(row) for _, row in iter_json_lines(train)]
    trained = train_cross_encoder(queries[:limit], open_index(index), out, epochs=epochs,
                                  negatives=negatives, depth=depth, batch_size=batch_size, lr=lr)
    typer.echo(trained.model_dump_json(indent=2))
    typer.echo(f"use it: {{type: rerank, reranker: {{type: cross-encoder, model: {out}}}, k: 3}}")


@app.command("sandbox-check")
@friendly
def sandbox_check(
    best_effort: Annotated[bool, typer.Option(
        help="Check with the layers this machine has instead of refusing a missing one.")] = False,
) -> None:
    """Try every known attack against the code sandbox here and show which layers contained it."""
    from rag.eval.report import table
    from rag.verifiers.attacks import try_attacks
    from rag.verifiers.sandbox import Sandbox

    sandbox = Sandbox(isolation="best_effort" if best_effort else "strict")
    typer.echo(f"layers in force: {', '.join(sandbox.protections)}")
    outcomes = try_attacks(sandbox)
    typer.echo(table([{"attack": o.name, "layer": o.layer, "status": o.status,
                       "contained": o.contained} for o in outcomes]))
    escaped = [o.name for o in outcomes if not o.contained]
    if escaped:
        typer.secho(f"NOT contained: {', '.join(escaped)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"all {len(outcomes)} attacks contained")


@app.command()
@friendly
def models(
    names: Annotated[list[str] | None, typer.Argument(help="Named defaults to prepare.")] = None,
) -> None:
    """Prepare models (convert GGUF defaults once) and print their local folders."""
    from rag.models import main

    main(names or ["tiny", "encoder"])




if __name__ == "__main__":  # vLLM spawns workers: the engine must start under a real __main__
    sys.exit(app())
