"""vLLM's automatic prefix caching, made to pay: a shared prefix found and computed once.

vLLM hashes prompt blocks by (parent hash, block tokens), so only a byte-identical,
block-aligned prefix is reused: the prompt builders put what repeats (system prompt,
instructions, a fixed demonstration set) first. `warm_prefix` runs that shared prefix once, so
that even the first query finds it cached; each `Usage.cached_prompt_tokens` then reports how
many prompt tokens hit the cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rag.errors import RagError
from rag.generators.base import LocalGenerator, PromptLike
from rag.types import SamplingParams, Usage


def shared_prefix(generator: LocalGenerator, prompts: Sequence[PromptLike]) -> str:
    """The longest text every prompt starts with, after the chat template is applied."""
    if not prompts:
        raise RagError("shared_prefix() needs at least one prompt")
    return os.path.commonprefix([generator.render(p) for p in prompts])


def warm_prefix(generator: LocalGenerator, prompts: Sequence[PromptLike]) -> Usage:
    """Prefill the prompts' shared prefix once (one token generated) and return its usage."""
    if not getattr(generator.config, "enable_prefix_caching", False):
        raise RagError(f"{generator.name} generator has prefix caching off: warming is useless")
    prefix = shared_prefix(generator, prompts)
    if not prefix:
        raise RagError("the prompts share no prefix; put the fixed instructions first")
    return generator.generate([prefix], SamplingParams(max_tokens=1))[0].usage
