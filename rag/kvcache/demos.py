"""Demonstration KV: in-context examples precomputed once, assembled per query.

The same mechanism as retrieved chunks, in the plain-text prompt of `DemoTemplate.plain`: the
instruction is the fixed prefix, each pool demonstration (`input_prefix input output_prefix
output`) is a piece whose cache is computed once right after it, and the query block is
prefilled. Whatever selector picks the demonstrations (kNN, EPR, ...), their caches are
re-rotated to their places instead of prefilled; each demonstration then attends only to the
instruction and itself, as in Structured Prompting's independently encoded groups. Pieces are
tokenized apart, so a token may split at a blank line where the whole prompt's tokenization
would merge it ('.' + '\n\n'); every mode, full prefill included, reads the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.errors import RagError
from rag.kvcache.reuse import Frame
from rag.selectors.prompt import DemoTemplate
from rag.types import Chunk, Demo


def demo_frame(template: DemoTemplate) -> Frame:
    """The frame whose pieces are demonstrations: the prompt is exactly `template.plain`."""
    if not template.instruction:
        raise RagError("demonstration KV needs an instruction: it is the cached prefix")
    if template.separator != "\n\n":
        raise RagError(f"demonstration KV joins blocks with a blank line, not {template.separator!r}")
    return Frame(prefix=f"{template.instruction}\n\n", before=template.input_prefix,
                 after=template.output_prefix, raw=True)


def demo_chunks(template: DemoTemplate, demos: Sequence[Demo]) -> list[Chunk]:
    """Demonstrations as the pieces a store holds, keyed by demonstration id."""
    chunks = []
    for demo in demos:
        block = template.block(demo)
        chunks.append(Chunk(id=demo.id, doc_id=demo.id, text=block, start=0, end=len(block)))
    return chunks
