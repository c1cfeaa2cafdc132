"""Evaluation: metrics for retrieval and answers."""

from rag.eval.metrics import mrr_at, recall_at

__all__ = ["mrr_at", "recall_at"]
