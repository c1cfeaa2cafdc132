"""Demonstration KV: in-context examples precomputed once, assembled per query.

The same mechanism as retrieved chunks, in the plain-text prompt of `DemoTemplate.plain`: the
instruction is the fixed prefix, each pool demonstration (`input_prefix input output_prefix
output`) is a piece whose cache is computed once right after it, and the query block is
prefilled. Whatever selector picks the demonstrations (kNN, EPR, ...), their caches are
re-rotated to their places instead of prefilled; each demonstration then attends only to the
instruction and itself, as in Structured Prompting's independently encoded groups.

Such a demonstration reads as if it were the first of the prompt, and 16 of them loaded lose 17
points of topic accuracy against full prefill (docs/benchmarks.md). A situated store
(`situated_context`) encodes each demonstration after its own nearest neighbours in the pool,
ordered as a kNN selector orders them; at query time a selector's picks are such neighbours of
one another, so the cache has seen a context like the one it lands in. Pieces are
tokenized apart, so a token may split at a blank line where the whole prompt's tokenization
would merge it ('.' + '\n\n'); every mode, full prefill included, reads the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.errors import RagError
from rag.kvcache.reuse import Frame
from rag.registry import build
from rag.selectors.base import Selector
from rag.selectors.prompt import DemoTemplate, ordered
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


def situated_context(template: DemoTemplate, pool: Sequence[Demo], k: int = 4,
                     selector: Selector | None = None) -> dict[str, list[Chunk]]:
    """For `ChunkKV.build(context=...)`: each pool demonstration's `k` nearest other pool
    demonstrations (by `selector`, a kNN selector on the default encoder unless given), most
    similar last, as the pieces it is encoded after. Only the pool is read, never a query."""
    if k < 1:
        raise RagError(f"a situated store needs k >= 1 neighbours, got {k}")
    chosen = selector or build("selector", {"type": "knn"})
    picks = chosen.fit(pool).select([d.input for d in pool], k + 1)
    return {demo.id: demo_chunks(template, ordered([n for n in near if n.id != demo.id][:k],
                                                   "similar_last"))
            for demo, near in zip(pool, picks)}
