"""Python source split at top-level `def`/`class` boundaries with the `ast` module.

Each top-level function or class (with its decorators and the comments right above it) is one
chunk; module-level code between them joins the following definition. Text that does not parse
as Python falls back to recursive splitting, so a mixed corpus chunks without errors.
"""

from __future__ import annotations

import ast
from functools import cached_property

from pydantic import Field

from rag.chunkers.base import Chunker
from rag.chunkers.recursive import RecursiveChunker
from rag.registry import ComponentConfig, register
from rag.types import Document

DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@register("chunker", "python")
class PythonChunker(Chunker):
    """One chunk per top-level definition; unparsable text goes to the recursive chunker."""

    class Config(ComponentConfig):
        fallback_size: int = Field(default=200, gt=0, description="token budget of the fallback")

    config: Config

    @cached_property
    def fallback(self) -> RecursiveChunker:
        return RecursiveChunker(size=self.config.fallback_size)

    def spans(self, doc: Document) -> list[tuple[int, int]]:
        try:
            tree = ast.parse(doc.text)
        except (SyntaxError, ValueError):
            return self.fallback.spans(doc)
        line_starts = [0]
        for line in doc.text.splitlines(keepends=True):
            line_starts.append(line_starts[-1] + len(line))
        cuts = []
        for node in tree.body:
            if isinstance(node, DEFINITIONS):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                cuts.append(self._with_comments_above(doc.text, line_starts, first - 1))
        bounds = sorted({0, *cuts, len(doc.text)})
        spans = []
        for start, end in zip(bounds, bounds[1:]):
            piece = doc.text[start:end]
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                spans.append((start + lead, start + len(piece.rstrip())))
        return spans

    @staticmethod
    def _with_comments_above(text: str, line_starts: list[int], line: int) -> int:
        """Offset of `line`, moved up over the comment lines directly above it."""
        while line > 0:
            above = text[line_starts[line - 1] : line_starts[line]].strip()
            if not above.startswith("#"):
                break
            line -= 1
        return line_starts[line]
