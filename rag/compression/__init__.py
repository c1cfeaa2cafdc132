"""Prompt compression: shrink retrieved passages to a target ratio (extractive, LLMLingua, code)."""

from rag.compression.base import Compressed, Compressor
from rag.compression.code import CodeCompressor
from rag.compression.extractive import ExtractiveCompressor
from rag.compression.llmlingua import LLMLinguaCompressor

__all__ = ["CodeCompressor", "Compressed", "Compressor", "ExtractiveCompressor", "LLMLinguaCompressor"]
