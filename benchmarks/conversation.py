"""Follow-up questions in context: the second turn of two-turn conversations, searched and
answered with the last message alone, with the whole conversation, condensed, and condensed with
the whole conversation's ranking fused in (what `best_qa` does).

Data: vital-followups (`rag.eval.followups`, built from the factual set's `--split`): turn 1
asks about an article's subject, the assistant answers with the article's first sentence, turn
2 asks a fact from that article naming the subject only by a pronoun. Index: the 10,033 vital
articles, one chunk each, the default hybrid (BM25 + MiniLM/HNSW) fused by reciprocal rank, as
`best_qa` searches it. Generator: `bench` through vLLM.

1. Retrieval, R@5 of the gold article for turn 2: the last message alone; the conversation's
   messages concatenated (`conversation_query`: the follow-up, then the earlier messages newest
   first); the `condense` stage's standalone question; the standalone question's and the
   conversation's rankings fused by reciprocal rank (`Retrieve(search="fused")`, best_qa's
   default, chosen on the dev split: `--split dev` writes its retrieval rows and nothing else).
   The condense stage's seconds per question (batches of 32, as a pipeline runs) come from the
   same run.
2. Answers, EM: `best_qa` searching each of the four ways (the prompt shows the history and the
   user's own words in every one), each against the last message alone (paired 95% interval).

    python benchmarks/conversation.py [--conversations 300] [--split test] [--work .cache/bench-qa]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rag.corpus import vital_articles
from rag.eval.followups import vital_followups
from rag.eval.metrics import paired_difference, recall_at, stage_seconds
from rag.eval.report import write_results
from rag.eval.runner import run_qa, summarize_qa
from rag.pipeline import Pipeline
from rag.recipes import best_qa, document_chunks, hybrid_index, with_fusion
from rag.retrievers.stage import Retrieve, conversation_query
from rag.state import State

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--split", choices=["dev", "test"], default="test",
                        help="dev: retrieval alone, to choose best_qa's search (no summary)")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-qa"))
    parser.add_argument("--out", type=Path, default=RESULTS / "conversation")
    args = parser.parse_args()

    docs = vital_articles()
    conversations = vital_followups(docs, args.split)[: args.conversations]
    golds = [c.gold_doc or "" for c in conversations]
    index = hybrid_index(document_chunks(docs), out=args.work / "vital-hybrid")
    fused = with_fusion(index, "rrf")
    generator: dict[str, Any] = {"type": "vllm", "model": args.model, "cpu_kv_cache_gib": 1}

    def r5(queries: list[str]) -> float:
        return recall_at([[h.chunk.doc_id for h in hits] for hits in fused.search(queries, k=5)],
                         golds, 5)

    condense = Pipeline([{"type": "condense", "generator": generator},
                         Retrieve(fused, k=5, search="fused")])
    condense.run([State(query="warm-up", history=conversations[0].history)])  # start the engine
    condensed = condense.run([State(query=c.question, history=c.history) for c in conversations],
                             progress=True)
    seconds = stage_seconds([s.trace for s in condensed])["condense"]
    searched = {"last message": [c.question for c in conversations],
                "whole conversation": [conversation_query(c.history, c.question)
                                       for c in conversations],
                "condensed": [s.standalone or s.query for s in condensed]}
    retrieval = [{"query": name, "r@5": round(r5(strings), 4)} for name, strings in searched.items()]
    retrieval.append({"query": "condensed + whole conversation, rank-fused (best_qa)",
                      "r@5": round(recall_at([[h.chunk.doc_id for h in s.hits] for s in condensed],
                                             golds, 5), 4),
                      "condense_s_per_question": round(seconds, 3)})
    samples = [{"follow_up": c.question, "standalone": s.standalone, "gold": c.gold_doc}
               for c, s in list(zip(conversations, condensed))[:: max(1, len(conversations) // 10)]]
    setup = {"data": f"vital-followups: the factual set's {args.split} split, turn 2 naming its "
                     "subject by a pronoun", "conversations": len(conversations),
             "model": args.model, "generator": generator,
             "retrieval": "hybrid BM25 + MiniLM/HNSW, reciprocal-rank fusion, top 5; the whole "
                          "conversation newest message first (Retrieve's conversation_query)",
             "answers": "best_qa (k=3, passages whole) searching each of the four ways"}
    if args.split == "dev":
        rows = {"retrieval (dev)": retrieval, "condensed samples (dev)": samples}
        write_results("conversation", dict.fromkeys(rows, setup), rows, keep_other_sections=True)
        return

    runs = {"last message": best_qa(index, generator, condense=False, search="query"),
            "whole conversation": best_qa(index, generator, condense=False,
                                          search="conversation"),
            "condensed": best_qa(index, generator, search="query"),
            "condensed + whole conversation (best_qa)": best_qa(index, generator)}
    answers, em = [], {}
    for name, pipeline in runs.items():
        folder = args.out / name.split(" (")[0].replace(" + ", "-and-").replace(" ", "-")
        predictions = run_qa(pipeline, conversations, folder)
        em[name] = [p.scores["em"] for p in predictions]
        summary = summarize_qa(conversations, predictions)
        diff, interval = paired_difference(em[name], em["last message"])
        answers.append({"system": name, "em": round(summary["em"], 4),
                        "f1": round(summary["f1"], 4), "acc": round(summary["acc"], 4),
                        "minus_last_message": diff, "minus_last_message_paired_95": interval})

    r5s = {row["query"]: row["r@5"] for row in retrieval}
    summary = {"followup_r5_last": r5s["last message"],
               "followup_r5_history": r5s["whole conversation"],
               "followup_r5_condensed": retrieval[-1]["r@5"],
               "followup_em_last": answers[0]["em"], "followup_em_condensed": answers[-1]["em"],
               "condense_s_per_question": retrieval[-1]["condense_s_per_question"],
               "conversations": len(conversations)}
    rows = {"retrieval": retrieval, "answers": answers, "condensed samples": samples}
    write_results("conversation", dict.fromkeys(rows, setup), rows, keep_other_sections=True,
                  summary=summary)


if __name__ == "__main__":
    main()
