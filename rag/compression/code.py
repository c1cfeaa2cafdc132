"""Code-aware compression (CodePromptZip style): drop whole kinds of code tokens, least useful first.

CodePromptZip ranks token types by an ablation of their effect on the task and drops the
lowest-impact types first; here the order is set in config (default: comments, docstrings,
blank lines, type annotations, bodies of private helper functions), applied until the budget is
met. Signatures and their identifiers are never removed, and every step leaves code that parses.
Passages that are not Python fall back to another compressor (extractive by default).
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field

from rag.compression.base import Compressed, Compressor, CompressorConfig, with_text
from rag.registry import build, register
from rag.types import Hit

Step = Literal["comments", "docstrings", "blank_lines", "annotations", "helper_bodies"]
_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def drop_comments(source: str) -> str:
    cuts: dict[int, int] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            cuts[token.start[0]] = token.start[1]
    lines = source.splitlines()
    for row, col in cuts.items():
        lines[row - 1] = lines[row - 1][:col].rstrip()
    return "\n".join(line for i, line in enumerate(lines, 1) if i not in cuts or line.strip()) + "\n"


def drop_docstrings(source: str) -> str:
    tree = ast.parse(source)
    lines = source.splitlines()
    spans = []
    for node in [tree, *(n for n in ast.walk(tree) if isinstance(n, _DEFINITIONS))]:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc = body[0]
            alone = len(body) == 1 and not isinstance(node, ast.Module)
            spans.append((doc.lineno, doc.end_lineno, doc.col_offset if alone else None))
    for first, last, indent in sorted(spans, reverse=True):
        lines[first - 1 : last] = [" " * indent + "..."] if indent is not None else []
    return "\n".join(lines) + "\n"


def drop_blank_lines(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.strip()) + "\n"


class _Strip(ast.NodeTransformer):
    def __init__(self, annotations: bool, helper_bodies: bool) -> None:
        self.annotations, self.helper_bodies = annotations, helper_bodies

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:  # noqa: N802 - ast API
        self.generic_visit(node)
        if self.annotations:
            node.returns = None
            for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    arg.annotation = None
        if self.helper_bodies and node.name.startswith("_") and not node.name.startswith("__"):
            node.body = [ast.Expr(ast.Constant(...))]
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815 - ast API

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:  # noqa: N802 - ast API
        if self.annotations and node.value is not None and isinstance(node.target, ast.Name):
            return ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno)
        return node


def drop_annotations(source: str) -> str:
    return ast.unparse(ast.fix_missing_locations(_Strip(True, False).visit(ast.parse(source)))) + "\n"


def drop_helper_bodies(source: str) -> str:
    return ast.unparse(ast.fix_missing_locations(_Strip(False, True).visit(ast.parse(source)))) + "\n"


STEPS: dict[str, Callable[[str], str]] = {
    "comments": drop_comments, "docstrings": drop_docstrings, "blank_lines": drop_blank_lines,
    "annotations": drop_annotations, "helper_bodies": drop_helper_bodies,
}


@register("compressor", "code")
class CodeCompressor(Compressor):
    nested = ("fallback",)

    class Config(CompressorConfig):
        order: list[Step] = Field(
            default_factory=lambda: ["comments", "docstrings", "blank_lines", "annotations", "helper_bodies"],
            description="kinds of code to drop, first to last, until the budget is met",
        )
        fallback: dict[str, Any] = Field(default_factory=lambda: {"type": "extractive"})

    config: Config

    def __init__(self, fallback: Compressor | dict[str, Any] | None = None, **options: Any) -> None:
        spec = {"type": fallback.name} if isinstance(fallback, Compressor) else (fallback or {"type": "extractive"})
        super().__init__(fallback=spec, **options)  # validate before building anything
        self.fallback: Compressor = fallback if isinstance(fallback, Compressor) else \
            build("compressor", {"ratio": self.config.ratio, **spec})

    def shrink(self, source: str, budget: int) -> str | None:
        """The source with kinds of code dropped until it fits `budget`; None if it is not Python."""
        try:
            ast.parse(source)
        except SyntaxError:
            return None
        for step in self.config.order:
            if self.count(source) <= budget:
                break
            source = STEPS[step](source)
        return source

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
