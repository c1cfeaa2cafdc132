"""Code-aware compression (CodePromptZip style): drop whole kinds of code tokens, least useful first.

CodePromptZip ranks token types by an ablation of their effect on the task and drops the
lowest-impact types first until the ratio is met; here the order is set in config (default:
comments, docstrings, blank lines, type annotations, bodies of private helper functions, then
the other functions' bodies, leaving their signatures as an outline). Each kind is dropped
whole while the passage is over budget; within the kind that reaches the budget, only as many
items (a comment, a docstring line, a blank line, one definition's annotations, a statement at
the end of a body) as needed go, in source order, so the achieved ratio lands near the target
instead of jumping past it. Signatures and their identifiers are never removed, and every step
leaves code that parses. Passages that are not Python fall back to another compressor
(extractive by default).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from rag.compression.base import Compressed, Compressor, CompressorConfig, with_text
from rag.registry import register
from rag.types import Hit

Step = Literal["comments", "docstrings", "blank_lines", "annotations", "helper_bodies", "function_bodies"]
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def drop_comments(source: str, limit: int | None = None) -> str:
    cuts: dict[int, int] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and (limit is None or len(cuts) < limit):
            cuts[token.start[0]] = token.start[1]
    lines = source.splitlines()
    for row, col in cuts.items():
        lines[row - 1] = lines[row - 1][:col].rstrip()
    return "\n".join(line for i, line in enumerate(lines, 1) if i not in cuts or line.strip()) + "\n"


_OPENING = re.compile(r"[rRbBuUfF]*(\"\"\"|\'\'\'|\"|\')")


def drop_docstrings(source: str, limit: int | None = None) -> str:
    """Docstrings go line by line from their end (examples before the summary), docstrings in
    source order; one with no line left goes whole (`...` where it was the only statement)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    spans = []
    for node in [tree, *(n for n in ast.walk(tree) if isinstance(n, _DEFINITIONS))]:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc = body[0]
            alone = len(body) == 1 and not isinstance(node, ast.Module)
            spans.append((doc.lineno, doc.end_lineno, doc.col_offset, alone))
    left = limit
    cuts = []
    for first, last, col, alone in sorted(spans):
        opening = _OPENING.match(lines[first - 1], col)
        quote = opening.group(1) if opening else ""
        size = last - first + 1 if len(quote) == 3 else 1  # only triple quotes can be cut short
        n = size if left is None else min(left, size)
        if left is not None:
            left -= n
        summary_left = last - n > first or bool(opening and lines[first - 1][opening.end():].strip())
        if 0 < n < size and summary_left:
            kept = lines[first - 1 : last - n]
            kept[-1] = kept[-1].rstrip().rstrip("\\\"'") + quote
            cuts.append((first, last, kept))
        elif n:
            cuts.append((first, last, [" " * col + "..."] if alone else []))
    for first, last, replacement in reversed(cuts):
        lines[first - 1 : last] = replacement
    return "\n".join(lines) + "\n"


def drop_blank_lines(source: str, limit: int | None = None) -> str:
    lines = source.splitlines()
    blank = set([i for i, line in enumerate(lines) if not line.strip()][:limit])
    return "\n".join(line for i, line in enumerate(lines) if i not in blank) + "\n"


class _Strip(ast.NodeTransformer):
    """Strips one kind of code from at most `limit` definitions, in source order."""

    def __init__(self, kind: Step, limit: int | None) -> None:
        self.kind, self.left = kind, limit

    def _take(self, wanted: int = 1) -> int:
        """How many of `wanted` units the limit still allows (all when there is none)."""
        if self.left is None:
            return wanted
        granted = max(0, min(wanted, self.left))
        self.left -= granted
        return granted

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:  # noqa: N802 - ast API
        self.generic_visit(node)
        args = [a for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                            node.args.vararg, node.args.kwarg] if a is not None]
        annotated = node.returns is not None or any(a.annotation is not None for a in args)
        if self.kind == "annotations" and annotated and self._take():
            node.returns = None
            for arg in args:
                arg.annotation = None
        helper = node.name.startswith("_") and not node.name.startswith("__")
        stub = len(node.body) == 1 and isinstance(node.body[0], ast.Expr) \
            and isinstance(node.body[0].value, ast.Constant) and node.body[0].value.value is ...
        wanted = self.kind == "function_bodies" or (self.kind == "helper_bodies" and helper)
        if wanted and not stub and (cut := self._take(len(node.body))):  # statements from the end
            node.body = [*node.body[: len(node.body) - cut], ast.Expr(ast.Constant(...))]
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815 - ast API

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:  # noqa: N802 - ast API
        if self.kind == "annotations" and node.value is not None and isinstance(node.target, ast.Name) \
                and self._take():
            return ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno)
        return node


def _stripper(kind: Step) -> Callable[[str, int | None], str]:
    def drop(source: str, limit: int | None = None) -> str:
        tree = _Strip(kind, limit).visit(ast.parse(source))
        return ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    return drop


drop_annotations = _stripper("annotations")
drop_helper_bodies = _stripper("helper_bodies")
drop_function_bodies = _stripper("function_bodies")

STEPS: dict[str, Callable[[str, int | None], str]] = {
    "comments": drop_comments, "docstrings": drop_docstrings, "blank_lines": drop_blank_lines,
    "annotations": drop_annotations, "helper_bodies": drop_helper_bodies,
    "function_bodies": drop_function_bodies,
}


@register("compressor", "code")
class CodeCompressor(Compressor):
    nested = {"fallback": "compressor"}

    class Config(CompressorConfig):
        order: list[Step] = Field(
            default_factory=lambda: ["comments", "docstrings", "blank_lines", "annotations",
                                     "helper_bodies", "function_bodies"],
            description="kinds of code to drop, first to last, until the budget is met",
        )
        fallback: dict[str, Any] = Field(default_factory=lambda: {"type": "extractive"},
                                         description="for text that is not Python; its ratio "
                                         "is this compressor's unless it names its own")

        @model_validator(mode="after")
        def _fallback_ratio(self) -> CodeCompressor.Config:
            self.fallback = {"ratio": self.ratio, **self.fallback}
            return self

    config: Config
    fallback: Compressor

    def shrink(self, source: str, budget: int) -> str | None:
        """The source with kinds of code dropped until it fits `budget`; None if it is not Python."""
        try:
            ast.parse(source)
        except SyntaxError:
            return None
        for step in self.config.order:
            if self.count(source) <= budget:
                break
            drop = STEPS[step]
            whole = drop(source, None)
            if self.count(whole) > budget:
                source = whole
                continue
            return drop(source, self._fewest(lambda n: self.count(drop(source, n)) <= budget))
        return source

    @staticmethod
    def _fewest(fits: Callable[[int], bool]) -> int:
        """The smallest item count n with fits(n), given that dropping every item fits.

        Doubling then bisection: n past the number of items drops them all, so the doubling ends.
        """
        high = 1
        while not fits(high):
            high *= 2
        low = high // 2  # fits(low) is false, or low is 0
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle, high)
        return 0 if high == 1 and fits(0) else high

    def compress(self, queries: Sequence[str], hits: Sequence[Sequence[Hit]]) -> list[Compressed]:
        out = []
        for query, hs in zip(queries, hits):
            original = sum(self.count(h.chunk.text) for h in hs)
            new: list[Hit] = []
            for h in hs:
                code = self.shrink(h.chunk.text, max(1, round(self.count(h.chunk.text) / self.config.ratio)))
                new.append(with_text(h, code) if code is not None
                           else (self.fallback.compress([query], [[h]])[0].hits or [with_text(h, "")])[0])
            new = [h for h in new if h.chunk.text.strip()]
            out.append(Compressed(hits=new, original_tokens=original,
                                  kept_tokens=sum(self.count(h.chunk.text) for h in new)))
        return out
