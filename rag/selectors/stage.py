"""Pipeline stages for in-context learning: pick demonstrations, then build the prompt."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import Field

from rag.pipeline import Stage, Writes
from rag.registry import ComponentConfig, register
from rag.selectors.base import Selector
from rag.selectors.prompt import DemoTemplate, Order, ordered, within_budget
from rag.state import View
from rag.types import Demo, Prompt


@register("stage", "select")
class Select(Stage):
    """Fill each state's demos with the selector's top k for its query."""

    reads = ("query",)
    writes = ("demos",)
    nested = {"selector": "selector"}

    class Config(ComponentConfig):
        selector: dict[str, Any]
        k: int = Field(default=4, ge=1)

    config: Config
    selector: Selector

    def run(self, batch: list[View]) -> list[Writes]:
        chosen = self.selector.select([item.query for item in batch], self.config.k)
        return [{"demos": demos} for demos in chosen]


@register("stage", "icl_prompt")
class IclPrompt(Stage):
    """Demonstrations then the query, in plain text or as chat turns, within a token budget."""

    reads = ("query", "demos")
    writes = ("prompt",)

    class Config(ComponentConfig):
        template: DemoTemplate = Field(default_factory=DemoTemplate)
        style: Literal["plain", "chat"] = "plain"
        order: Order = Field(default="similar_last",
                             description="similar_last: best demonstration next to the query")
        max_prompt_tokens: int | None = Field(default=None, ge=1, description="drop demos to fit")
        tokenizer: str = Field(default="tiny", description="model whose tokenizer counts tokens")

    config: Config

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        from rag.models import resolve_model

        return AutoTokenizer.from_pretrained(resolve_model(self.config.tokenizer))

    def prompt(self, demos: list[Demo], query: str) -> Prompt:
        shown = ordered(demos, self.config.order)
        if self.config.style == "chat":
            return self.config.template.chat(shown, query)
        return Prompt(text=self.config.template.plain(shown, query))

    def _tokens(self, prompt: Prompt) -> int:
        if prompt.text is not None:
            return len(self.tokenizer.encode(prompt.text, add_special_tokens=False))
        messages = [m.model_dump() for m in prompt.messages or []]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def run(self, batch: list[View]) -> list[Writes]:
        budget = self.config.max_prompt_tokens
        out = []
        for item in batch:
            query, demos = item.query, item.demos
            kept = demos if budget is None else within_budget(
                demos, lambda d: self._tokens(self.prompt(d, query)) <= budget)
            out.append({"prompt": self.prompt(kept, query),
                        "trace": {"demos": len(kept), "dropped": len(demos) - len(kept)}})
        return out
