"""Naive RAG over Wikipedia vital articles: index, retrieve, answer with citations.

    python examples/naive_rag.py            # 2,000 articles
    RAG_EXAMPLE_DOCS=400 python examples/naive_rag.py
"""

import os
import tempfile

from rag.corpus import vital_articles
from rag.recipes import index_corpus, naive_rag

QUESTIONS = ["Which 1968 film did Stanley Kubrick direct?", "Who painted the Mona Lisa?"]


def main() -> None:
    docs = vital_articles()[: int(os.environ.get("RAG_EXAMPLE_DOCS", "2000"))]
    with tempfile.TemporaryDirectory() as folder:
        index = index_corpus(docs, folder)  # fixed 200-token chunks, MiniLM, HNSW
        pipeline = naive_rag(index, {"type": "vllm", "model": "tiny"}, k=3)
        for answer in pipeline.answer(QUESTIONS):
            print(f"Q: {answer.query}\nA: {answer.text}")
            print("   cited:", [c.title for c in answer.citations])
            print("   seconds per stage:", {t.stage: round(t.seconds, 2) for t in answer.trace})


if __name__ == "__main__":  # vLLM starts worker processes: keep engine start-up under main
    main()
