"""Rerankers: reorder first-stage hits with a cross-encoder or an LLM (pointwise, RankGPT, FIRST)."""

from rag.rerankers.base import Reranker
from rag.rerankers.cross_encoder import CrossEncoderReranker
from rag.rerankers.listwise import FirstReranker, RankGPTReranker, parse_permutation, windows
from rag.rerankers.pointwise import PointwiseReranker

__all__ = [
    "CrossEncoderReranker",
    "FirstReranker",
    "PointwiseReranker",
    "RankGPTReranker",
    "Reranker",
    "parse_permutation",
    "windows",
]
