"""QA beyond its own benchmark: the default QA pipeline chosen on two question sets, shown on both.

`vital-qa` asks for an article's title from its description; `vital-facts` (rag.eval.facts) asks
for facts stated inside one article (years, places, people, quantities, languages, families),
never its title. Both run over the same 10,033 vital articles, one hybrid index (BM25 +
MiniLM/HNSW, and SPLADE-tiny as a third index where a configuration asks) per chunk size tried,
with `bench` through vLLM.

1. The factual set: its size, and how many of 50 sampled questions a reader found well-formed
   (`benchmarks/facts_sample.json`, the verdicts of one reading of that fixed sample).
2. Dev: every configuration on vital-qa's dev split (questions 500-999, seed 0; `--dev-questions`
   of them) and the factual set's dev split, varied one setting at a time from a base (the
   instruction wording, compression off/1.5x/2x, convex vs reciprocal-rank fusion, k, passage
   order), then the improving settings together (round 1). Round 2 (`--final-questions`, by
   default the whole dev splits: 500 and 377 questions): round 1's best crossed with passage
   order x compression on/off, the two settings that decide which text sits next to the question
   and that round 1 found the sets to pull apart on. Round 3 (same questions), coordinate
   ascent: the best so far with one setting changed (a passage fewer or more, the other passage
   order, compression toggled, the question also before the passages: query-aware
   contextualization, Liu et al. 2023; the other instruction, the other fusion, 48-token
   chunks instead of whole articles with twice the passages, and SPLADE-tiny added to the hybrid
   or taken out), again from each new best, until
   every neighbour of the best has been tried. The default is the configuration of rounds 2 and
   3 with the best mean EM over the two dev splits; the runner-up the next.
3. Test: the default, the runner-up, closed-book and a LlamaIndex-like plain hybrid (reciprocal-
   rank fusion, top 3, no compression, best passage first) on vital-qa's test split (its first
   500 questions, as every earlier figure) and the factual test split (721 questions), with
   paired 95% bootstrap intervals of the default against each.
4. Compression on the factual test questions: extractive and LLMLingua-style at 2x against none
   (all else as the default): EM, and how often the compressed passages lost the answer that the
   gold article's passage held.

    python benchmarks/qa_general.py [--dev-questions 40] [--final-questions N]
                                    [--test-questions N] [--parts test runner-up compression]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from rag.chunkers import FixedTokenChunker
from rag.corpus import vital_articles
from rag.eval.datasets import QAExample, vital_qa_split
from rag.eval.facts import vital_facts
from rag.eval.harness import evaluate_qa
from rag.eval.metrics import paired_difference
from rag.eval.report import write_results
from rag.eval.runner import run_qa, stored_scores, summarize_qa
from rag.pipeline import Pipeline
from rag.prompts.templates import BRIEF_ANSWER, PHRASE_ANSWER, qa_system
from rag.recipes import closed_book, document_chunks, hybrid_index, rag_qa
from rag.retrievers import HybridRetriever
from rag.text import normalize_answer
from rag.types import Document

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = Path(__file__).resolve().parent / "facts_sample.json"
INSTRUCTIONS = {"brief": BRIEF_ANSWER, "phrase": PHRASE_ANSWER}
# The chunk size tried against one chunk per article: an article summary is 77 words (about 100
# encoder tokens) on average, so 48-token windows cut most articles in two or three.
CHUNK_TOKENS = 48
Indexes = Callable[[int | None, bool], HybridRetriever]  # (chunk tokens, with SPLADE)


@dataclass(frozen=True)
class QAConfig:
    """One point of the grid: what `rag_qa` is called with."""

    instruction: str = "brief"
    compression: float | None = 2.0
    fusion: Literal["convex", "rrf"] = "convex"
    k: int = 3
    order: Literal["relevance_first", "relevance_last"] = "relevance_last"
    repeat_question: bool = False
    chunk_tokens: int | None = None  # None: one chunk per article
    splade: bool = False  # SPLADE-tiny as a third index (rag index --splade)

    @property
    def name(self) -> str:
        squeeze = f"x{self.compression:g}" if self.compression else "full"
        around = "-around" if self.repeat_question else ""
        chunks = f"-c{self.chunk_tokens}" if self.chunk_tokens else ""
        sparse = "-splade" if self.splade else ""
        return (f"{self.instruction}-{squeeze}-{self.fusion}-k{self.k}-"
                f"{self.order.split('_')[1]}{around}{chunks}{sparse}")

    def describe(self) -> str:
        squeeze = (f"extractive compression {self.compression:g}x" if self.compression
                   else "no compression")
        around = ", the question before and after the passages" if self.repeat_question else ""
        chunks = (f"{self.chunk_tokens}-token chunks" if self.chunk_tokens
                  else "one chunk per article")
        sparse = " + SPLADE-tiny" if self.splade else ""
        return (f"retrieve (hybrid BM25 + MiniLM/HNSW{sparse} over {chunks}, {self.fusion} "
                f"fusion, top {self.k}) -> "
                f"{squeeze} -> rag_prompt ('{qa_system(INSTRUCTIONS[self.instruction])}', best "
                f"passage {self.order.split('_')[1]}{around}) -> generate")

    def pipeline(self, indexes: Indexes, generator: dict[str, Any], max_tokens: int,
                 **options: Any) -> Pipeline:
        """This configuration through `rag_qa`; `options` are further `rag_qa` arguments (the
        compressor, demonstrations)."""
        return rag_qa(indexes(self.chunk_tokens, self.splade), generator, k=self.k,
                      compression=self.compression, fusion=self.fusion, order=self.order,
                      system=qa_system(INSTRUCTIONS[self.instruction]), max_tokens=max_tokens,
                      repeat_question=self.repeat_question, **options)


BASE = QAConfig()
VARIANTS = (replace(BASE, instruction="phrase"), replace(BASE, compression=None),
            replace(BASE, compression=1.5), replace(BASE, fusion="rrf"), replace(BASE, k=5),
            replace(BASE, order="relevance_first"))
PLAIN_HYBRID = QAConfig(compression=None, fusion="rrf", k=3, order="relevance_first")


def sample_check(questions: Sequence[QAExample]) -> int:
    """Well-formed questions among the 50 read; the sample must still be in the set."""
    rows = json.loads(SAMPLE.read_text())["sample"]
    known = {q.id: q for q in questions}
    stale = [r["id"] for r in rows if r["id"] not in known
             or known[r["id"]].question != r["question"]
             or known[r["id"]].answers[0] != r["answer"]]
    if stale:
        raise SystemExit(f"{SAMPLE.name}: {len(stale)} read questions are no longer in the set "
                         f"(e.g. {stale[0]}); draw and read the sample again")
    return sum(bool(r["well_formed"]) for r in rows)


def paired(out: Path, system: str, baseline: str, ids: Sequence[str]) -> dict[str, Any]:
    diff, interval = paired_difference(stored_scores(out / system, ids),
                                       stored_scores(out / baseline, ids))
    return {"against": baseline, "em_difference": diff, "paired_95": interval}


def run_sets(configs: dict[str, Pipeline], sets: dict[str, list[QAExample]],
             out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every configuration on every set, with each set's side-by-side report."""
    return {name: evaluate_qa(configs, questions, out / name, dataset=name)
            for name, questions in sets.items()}


def ranked_on(args: argparse.Namespace, indexes: Indexes, generator: dict[str, Any],
              configs: Sequence[QAConfig], sets: dict[str, list[QAExample]], folder: Path,
              ) -> tuple[list[dict[str, Any]], list[QAConfig]]:
    """Rows of the configurations on the dev sets, best mean EM first, and their ranking (a tie
    keeps the order tried)."""
    scores = run_sets({c.name: c.pipeline(indexes, generator, args.max_tokens) for c in configs},
                      sets, folder)
    mean = {c.name: sum(scores[s][c.name]["em"] for s in sets) / len(sets) for c in configs}
    ranked = sorted(configs, key=lambda c: mean[c.name], reverse=True)
    rows = [{"configuration": c.name, "questions_per_set": len(next(iter(sets.values()))),
             **{f"em_{s}": round(scores[s][c.name]["em"], 4) for s in sets},
             "mean_em": round(mean[c.name], 4), "setting": c.describe()} for c in ranked]
    return rows, ranked


def combine(base: QAConfig, improving: Sequence[QAConfig]) -> QAConfig:
    """`base` with every setting that an improving variant changed."""
    combined = base
    for variant in improving:
        combined = replace(combined, **{f: getattr(variant, f) for f in base.__dataclass_fields__
                                        if getattr(variant, f) != getattr(base, f)})
    return combined


def finalists(best: QAConfig) -> list[QAConfig]:
    """Round 2: `best` crossed with passage order x compression on/off (its ratio, else 2x)."""
    ratio = best.compression or 2.0
    return [best, *(c for c in (replace(best, order=o, compression=r)
                                for o in ("relevance_last", "relevance_first") for r in (ratio, None))
                    if c != best)]


def neighbours(best: QAConfig) -> list[QAConfig]:
    """`best` with one setting changed: a passage fewer or more, the other passage order,
    compression toggled (2x when on), the question also before the passages or not, the other
    instruction, the other fusion, the other chunk size (k scaled with it, so the passages hold
    about as many words), and SPLADE-tiny added or taken out."""
    order = "relevance_first" if best.order == "relevance_last" else "relevance_last"
    instruction = "phrase" if best.instruction == "brief" else "brief"
    fusion: Literal["convex", "rrf"] = "convex" if best.fusion == "rrf" else "rrf"
    chunking = (replace(best, chunk_tokens=None, k=max(1, best.k // 2)) if best.chunk_tokens
                else replace(best, chunk_tokens=CHUNK_TOKENS, k=2 * best.k))
    return [*([replace(best, k=best.k - 1)] if best.k > 1 else []), replace(best, k=best.k + 1),
            replace(best, order=order),
            replace(best, compression=None if best.compression else 2.0),
            replace(best, repeat_question=not best.repeat_question),
            replace(best, instruction=instruction), replace(best, fusion=fusion), chunking,
            replace(best, splade=not best.splade)]


def dev(args: argparse.Namespace, indexes: Indexes, generator: dict[str, Any],
        sets: dict[str, list[QAExample]],
        final_sets: dict[str, list[QAExample]]) -> tuple[dict[str, list[dict[str, Any]]],
                                                          list[QAConfig]]:
    """Every round's rows, and rounds 2 and 3's configurations ranked by mean dev EM."""
    tried = [BASE, *VARIANTS]
    first_rows, ranked = ranked_on(args, indexes, generator, tried, sets, args.out / "dev")
    base_mean = next(r["mean_em"] for r in first_rows if r["configuration"] == BASE.name)
    improving = [v for v in VARIANTS
                 if next(r["mean_em"] for r in first_rows if r["configuration"] == v.name) > base_mean]
    combined = combine(BASE, improving)
    if combined not in tried:
        first_rows, ranked = ranked_on(args, indexes, generator, [*tried, combined], sets,
                                       args.out / "dev")
    tried = finalists(ranked[0])
    final_rows, final = ranked_on(args, indexes, generator, tried, final_sets,
                                  args.out / "dev-final")
    while new := [c for c in neighbours(final[0]) if c not in tried]:  # round 3: ascent
        tried += new
        final_rows, final = ranked_on(args, indexes, generator, tried, final_sets,
                                      args.out / "dev-final")
    return {"dev": first_rows, "dev final": final_rows}, final


def test(args: argparse.Namespace, indexes: Indexes, generator: dict[str, Any],
         sets: dict[str, list[QAExample]], default: QAConfig,
         runner_up: QAConfig | None) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Each system on each test split, the default first (the run resumes, so an interrupted
    one keeps what it finished); runs are named by configuration, so a configuration that two
    roles share (or the compression part reuses) is generated once."""
    plain = replace(PLAIN_HYBRID, instruction=default.instruction)
    roles: dict[str, QAConfig | None] = {"default": default, "closed-book": None,
                                         "plain-hybrid": plain}
    if runner_up is not None:
        roles["runner-up"] = runner_up
    names = {role: c.name if c else "closed-book" for role, c in roles.items()}
    scores: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in sets}
    for role, config in roles.items():
        pipeline = (config.pipeline(indexes, generator, args.max_tokens) if config else
                    closed_book(generator, args.max_tokens,
                                f"Answer the question. {INSTRUCTIONS[default.instruction]}"))
        for set_name, questions in sets.items():
            folder = args.out / "test" / set_name / names[role]
            scores[set_name][role] = summarize_qa(questions, run_qa(pipeline, questions, folder))
    rows = []
    for set_name, questions in sets.items():
        ids = [q.id for q in questions]
        for role, config in roles.items():
            summary = scores[set_name][role]
            row = {"set": set_name, "system": role, "configuration": names[role],
                   "em": round(summary["em"], 4), "f1": round(summary["f1"], 4),
                   "acc": round(summary["acc"], 4),
                   "setting": config.describe() if config else "closed_book_prompt -> generate"}
            if role != "default":
                versus = paired(args.out / "test" / set_name, default.name, names[role], ids)
                row["default_minus_this"] = versus["em_difference"]
                row["default_minus_this_paired_95"] = versus["paired_95"]
            rows.append(row)
    ems = {s: {role: scores[s][role]["em"] for role in roles} for s in sets}
    return rows, ems


def lost_answers(pipeline: Pipeline, questions: Sequence[QAExample]) -> tuple[int, int]:
    """Of the questions whose gold article's retrieved passage states the answer, how many lose
    it in compression: (lost, held). Runs only the stages up to compression."""
    compress = next(i for i, s in enumerate(pipeline.stages) if s.name == "compress")
    retrieve = Pipeline(pipeline.stages[:compress])
    squeezed = Pipeline(pipeline.stages[: compress + 1])
    before = retrieve.run([q.question for q in questions], progress=True)
    after = squeezed.run([q.question for q in questions], progress=True)
    lost = held = 0
    for q, full, short in zip(questions, before, after, strict=True):
        answer = normalize_answer(q.answers[0])
        text = {h.chunk.doc_id: normalize_answer(h.chunk.text) for h in full.hits}
        if answer and answer in text.get(q.gold_doc or "", ""):
            held += 1
            kept = {h.chunk.doc_id: normalize_answer(h.chunk.text) for h in short.hits}
            lost += answer not in kept.get(q.gold_doc or "", "")
    return lost, held


def compression(args: argparse.Namespace, indexes: Indexes, generator: dict[str, Any],
                questions: list[QAExample], default: QAConfig) -> list[dict[str, Any]]:
    """Extractive and LLMLingua-style compression at 2x against none, all else the default's,
    in the test split's folder: configurations the test part ran are not generated again."""
    full, extractive = replace(default, compression=None), replace(default, compression=2.0)
    lingua = extractive.pipeline(indexes, generator, args.max_tokens, compressor="llmlingua")
    systems = {full.name: full.pipeline(indexes, generator, args.max_tokens),
               extractive.name: extractive.pipeline(indexes, generator, args.max_tokens),
               f"{extractive.name}-llmlingua": lingua}
    folder = args.out / "test" / "vital-facts"
    scores = {name: summarize_qa(questions, run_qa(pipeline, questions, folder / name))
              for name, pipeline in systems.items()}  # predictions only: the report is test's
    rows = []
    for (label, name), pipeline in zip(
            {"none": full.name, "extractive-2x": extractive.name,
             "llmlingua-2x": f"{extractive.name}-llmlingua"}.items(), systems.values()):
        row = {"compression": label, "configuration": name, "em": round(scores[name]["em"], 4),
               "prompt_tokens": round(scores[name]["prompt_tokens"], 1)}
        if label != "none":
            lost, held = lost_answers(pipeline, questions)
            versus = paired(folder, name, full.name, [q.id for q in questions])
            row |= {"answer_lost": lost, "answer_held_before": held,
                    "minus_none": versus["em_difference"],
                    "minus_none_paired_95": versus["paired_95"]}
        rows.append(row)
    return rows


def article_indexes(docs: Sequence[Document], work: Path) -> Indexes:
    """The hybrid index of the articles for a chunk size (None: one chunk per article), with or
    without SPLADE-tiny, built or reopened on first use."""
    built: dict[tuple[int | None, bool], HybridRetriever] = {}

    def index(chunk_tokens: int | None, splade: bool) -> HybridRetriever:
        if (chunk_tokens, splade) not in built:
            chunks = (FixedTokenChunker(size=chunk_tokens).chunk_all(docs, progress=True)
                      if chunk_tokens else document_chunks(docs))
            folder = ("vital-hybrid" + (f"-{chunk_tokens}t" if chunk_tokens else "")
                      + ("-splade" if splade else ""))
            built[chunk_tokens, splade] = hybrid_index(chunks, out=work / folder, splade=splade)
        return built[chunk_tokens, splade]

    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bench")
    parser.add_argument("--dev-questions", type=int, default=40, help="per dev split, round 1")
    parser.add_argument("--final-questions", type=int, default=None,
                        help="per dev split, rounds 2 and 3 (default: the whole splits)")
    parser.add_argument("--test-questions", type=int, default=None,
                        help="of the factual test split (default: all of it)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--parts", nargs="*", choices=["test", "runner-up", "compression"],
                        default=["test", "runner-up", "compression"],
                        help="after dev, which always runs (runner-up: it too on the test splits)")
    parser.add_argument("--out", type=Path, default=RESULTS / "qa_general")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-qa"))
    args = parser.parse_args()

    docs = vital_articles()
    facts = vital_facts(docs, "all")
    well_formed = sample_check(facts)
    facts_dev = vital_facts(docs, "dev")[: args.dev_questions]
    facts_test = vital_facts(docs, "test")[: args.test_questions]
    indexes = article_indexes(docs, args.work)
    # The default 2,048-token window keeps each step capped; 1 GiB of KV holds 80,000 tokens.
    generator = {"type": "vllm", "model": args.model, "cpu_kv_cache_gib": 1}

    dev_sets = {"vital-qa": vital_qa_split("dev", args.dev_questions), "vital-facts": facts_dev}
    final_sets = {"vital-qa": vital_qa_split("dev", args.final_questions),
                  "vital-facts": vital_facts(docs, "dev")[: args.final_questions]}
    sections, ranked = dev(args, indexes, generator, dev_sets, final_sets)
    default, runner_up = ranked[0], ranked[1]
    summary: dict[str, Any] = {"facts_questions": len(facts_test),
                               "facts_sample_well_formed": well_formed}
    if "test" in args.parts:
        rows, ems = test(args, indexes, generator,
                         {"vital-facts": facts_test, "vital-qa": vital_qa_split("test")},
                         default, runner_up if "runner-up" in args.parts else None)
        sections["test"] = rows
        summary |= {"facts_em_default": round(ems["vital-facts"]["default"], 4),
                    "facts_em_closed_book": round(ems["vital-facts"]["closed-book"], 4),
                    "facts_em_plain_hybrid": round(ems["vital-facts"]["plain-hybrid"], 4),
                    "vitalqa_em_default": round(ems["vital-qa"]["default"], 4),
                    "default_pipeline": default.describe()}
    if "compression" in args.parts:
        sections["compression"] = compression(args, indexes, generator, facts_test, default)
    setup = {"model": args.model, "generator": generator, "max_tokens": args.max_tokens,
             "corpus": f"10,033 vital-article summaries; one hybrid index per chunk size (one chunk "
                       f"per article, {CHUNK_TOKENS}-token windows), with and without SPLADE-tiny",
             "facts": {"all": len(facts), "dev_used": len(facts_dev),
                       "dev_final_used": len(final_sets["vital-facts"]),
                       "test_used": len(facts_test),
                       "sample": f"{well_formed} of 50 well-formed ({SAMPLE.name})"},
             "vital_qa": {"dev": f"questions 500-{499 + len(dev_sets['vital-qa'])} (seed 0)",
                          "dev_final": f"questions 500-{499 + len(final_sets['vital-qa'])} "
                                       "(seed 0)",
                          "test": "questions 0-499 (seed 0)", "test_questions": 500},
             "chosen_on": "mean EM over the two dev splits of round 2 ('dev final')",
             "reports": str(args.out.relative_to(RESULTS.parent.parent))}
    write_results("qa_general", setup, sections, summary=summary if "test" in args.parts else None)


if __name__ == "__main__":
    main()
