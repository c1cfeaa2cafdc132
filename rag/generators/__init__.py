"""Generators: one interface (`generate`, `score`) over vLLM, transformers and OpenAI-compatible HTTP."""

from rag.generators.base import Generator, LocalGenerator
from rag.generators.cached import CachedGenerator
from rag.generators.openai import OpenAIGenerator
from rag.generators.transformers import TransformersGenerator
from rag.generators.vllm import VLLMGenerator

__all__ = [
    "CachedGenerator",
    "Generator",
    "LocalGenerator",
    "OpenAIGenerator",
    "TransformersGenerator",
    "VLLMGenerator",
]
