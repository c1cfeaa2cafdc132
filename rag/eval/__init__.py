"""Evaluation: retrieval metrics, and result files with provenance for benchmarks."""

from rag.eval.metrics import mrr_at, recall_at
from rag.eval.report import table, write_results

__all__ = ["mrr_at", "recall_at", "table", "write_results"]
