"""Follow-up questions in context: the second turn of two-turn conversations, searched and
answered with the last message alone, with the whole conversation, and condensed.

Data: vital-followups (`rag.eval.followups`, built from the factual set's test split): turn 1
asks about an article's subject, the assistant answers with the article's first sentence, turn
2 asks a fact from that article naming the subject only by a pronoun. Index: the 10,033 vital
articles, one chunk each, the default hybrid (BM25 + MiniLM/HNSW) fused by reciprocal rank, as
`best_qa` searches it. Generator: `bench` through vLLM.

1. Retrieval, R@5 of the gold article for turn 2: the last message alone; the conversation's
   messages concatenated (both turns and the follow-up); the `condense` stage's standalone
   question. The condense stage's seconds per question (batches of 32, as a pipeline runs) come
   from the same run.
2. Answers, EM: `best_qa` without its condense stage (retrieval on the last message; the prompt
   shows the history either way) against `best_qa` (condensed).

    python benchmarks/conversation.py [--conversations 300] [--work .cache/bench-qa]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from rag.corpus import vital_articles
from rag.eval.followups import vital_followups
from rag.eval.metrics import paired_bootstrap_interval, recall_at, stage_seconds
from rag.eval.report import write_results
from rag.eval.runner import run_qa, summarize_qa
from rag.pipeline import Pipeline
from rag.recipes import best_qa, document_chunks, hybrid_index, with_fusion
from rag.retrievers.stage import Retrieve
from rag.state import State

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-qa"))
    parser.add_argument("--out", type=Path, default=RESULTS / "conversation")
    args = parser.parse_args()

    docs = vital_articles()
    conversations = vital_followups(docs)[: args.conversations]
    golds = [c.gold_doc or "" for c in conversations]
    index = hybrid_index(document_chunks(docs), out=args.work / "vital-hybrid")
    fused = with_fusion(index, "rrf")
    generator: dict[str, Any] = {"type": "vllm", "model": args.model, "cpu_kv_cache_gib": 1}

    def r5(queries: list[str]) -> float:
        return recall_at([[h.chunk.doc_id for h in hits] for hits in fused.search(queries, k=5)],
                         golds, 5)

    last = [c.question for c in conversations]
    history = [" ".join([*(m.content for m in c.history), c.question]) for c in conversations]
    condense = Pipeline([{"type": "condense", "generator": generator}, Retrieve(fused, k=5)])
    condense.run([State(query="warm-up", history=conversations[0].history)])  # start the engine
    condensed = condense.run([State(query=c.question, history=c.history) for c in conversations],
                             progress=True)
    condensed_r5 = recall_at([[h.chunk.doc_id for h in s.hits] for s in condensed], golds, 5)
    seconds = stage_seconds([s.trace for s in condensed])["condense"]
    retrieval = [{"query": "last message", "r@5": round(r5(last), 4)},
                 {"query": "whole conversation", "r@5": round(r5(history), 4)},
                 {"query": "condensed", "r@5": round(condensed_r5, 4),
                  "condense_s_per_question": round(seconds, 3)}]
    samples = [{"follow_up": c.question, "standalone": s.standalone, "gold": c.gold_doc}
               for c, s in list(zip(conversations, condensed))[:: max(1, len(conversations) // 10)]]

    runs = {"last message": best_qa(index, generator, condense=False),
            "condensed": best_qa(index, generator)}
    answers, em = [], {}
    for name, pipeline in runs.items():
        predictions = run_qa(pipeline, conversations, args.out / name.replace(" ", "-"))
        em[name] = [p.scores["em"] for p in predictions]
        summary = summarize_qa(conversations, predictions)
        answers.append({"system": name, "em": round(summary["em"], 4),
                        "f1": round(summary["f1"], 4), "acc": round(summary["acc"], 4)})
    low, high = paired_bootstrap_interval(em["condensed"], em["last message"])
    answers[1] |= {"minus_last_message": round(statistics.mean(em["condensed"])
                                               - statistics.mean(em["last message"]), 4),
                   "minus_last_message_paired_95": [round(low, 4), round(high, 4)]}

    summary = {"followup_r5_last": retrieval[0]["r@5"], "followup_r5_history": retrieval[1]["r@5"],
               "followup_r5_condensed": retrieval[2]["r@5"],
               "followup_em_last": answers[0]["em"], "followup_em_condensed": answers[1]["em"],
               "condense_s_per_question": retrieval[2]["condense_s_per_question"],
               "conversations": len(conversations)}
    setup = {"data": "vital-followups: the factual set's test split, turn 2 naming its subject "
                     "by a pronoun", "model": args.model, "generator": generator,
             "retrieval": "hybrid BM25 + MiniLM/HNSW, reciprocal-rank fusion, top 5",
             "answers": "best_qa (k=3, extractive 2x) with and without its condense stage"}
    write_results("conversation", setup, {"retrieval": retrieval, "answers": answers,
                                          "condensed samples": samples}, summary=summary)


if __name__ == "__main__":
    main()
