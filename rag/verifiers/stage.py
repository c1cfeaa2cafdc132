"""Pipeline stages that check answers: programs run in the sandbox and picked, votes, grounding.

A code pipeline reads a task (the query: a signature and docstring) and answers with a program:
`code_prompt -> generate (n, temperature) -> extract_programs -> execute -> pick`.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import Field, model_validator

import rag.verifiers.fields  # noqa: F401 - registers the code state fields
from rag.errors import ConfigError
from rag.generators.base import Generator
from rag.pipeline import Stage, Writes
from rag.registry import ComponentConfig, register
from rag.state import View
from rag.types import Prompt, SamplingParams
from rag.verifiers.code import (
    TESTS_PROMPT, CodeCheck, Program, doctest_examples, entry_point_of, example_checks, execute,
    generated_checks, probe_of, program_for,
)
from rag.verifiers.consistency import majority_answer
from rag.verifiers.grounding import check_grounding
from rag.verifiers.lever import LeverVerifier
from rag.verifiers.pick import PickMethod, pick
from rag.verifiers.sandbox import Sandbox, SandboxLimits


def _entry_point(item: View) -> str | None:
    return item.entry_point or entry_point_of(item.query)


@register("stage", "extract_programs")
class ExtractPrograms(Stage):
    """One program per sampled completion: the reply's function with the task's imports, or the
    task continued by the reply when it is a function body. The first program is the answer."""

    reads = ("query", "entry_point", "generation")
    writes = ("programs", "text")

    def run(self, batch: list[View]) -> list[Writes]:
        out = []
        for item in batch:
            entry = _entry_point(item) or ""
            programs = [Program(code=program_for(item.query, c.text, entry), logprob=c.logprob,
                                tokens=len(c.token_ids)) for c in item.generation.completions]
            out.append({"programs": programs, "text": programs[0].code})
        return out


@register("stage", "execute")
class Execute(Stage):
    """Run every program in the sandbox against checks, and record its values on probes.

    `checks`: `examples` are the docstring's `>>>` examples as asserts; `generated` are asserts
    the `generator` writes (CodeT: `test_samples` replies of `tests` asserts each, deduplicated).
    Probes are the calls those checks make, so MBR-exec and LEVER can compare what programs compute.
    """

    reads = ("query", "entry_point", "programs")
    writes = ("checks", "executions")
    nested = {"generator": "generator"}

    class Config(ComponentConfig):
        generator: dict[str, Any] | None = Field(default=None, description="writes the tests")
        checks: list[Literal["examples", "generated"]] = Field(default_factory=lambda: ["examples"])
        tests: int = Field(default=5, ge=1, description="asserts asked for per reply")
        test_samples: int = Field(default=2, ge=1)
        test_params: SamplingParams = Field(
            default_factory=lambda: SamplingParams(max_tokens=300, temperature=0.8, seed=0))
        limits: SandboxLimits = Field(
            default_factory=lambda: SandboxLimits(timeout_s=10, cpu_seconds=5))
        seconds_per_check: float = Field(default=2.0, gt=0)

        @model_validator(mode="after")
        def _writer(self) -> Execute.Config:
            if "generated" in self.checks and self.generator is None:
                raise ValueError("generated checks need a `generator` to write them")
            return self

    config: Config
    generator: Generator | None

    @cached_property
    def sandbox(self) -> Sandbox:
        return Sandbox(self.config.limits)

    def _generated(self, batch: list[View]) -> list[list[str]]:
        if "generated" not in self.config.checks or self.generator is None:
            return [[] for _ in batch]
        entries = [_entry_point(item) or "" for item in batch]
        prompts = [Prompt.chat(TESTS_PROMPT.format(prompt=item.query, count=self.config.tests,
                                                   entry_point=entry))
                   for item, entry in zip(batch, entries)]
        params = self.config.test_params.model_copy(update={"n": self.config.test_samples})
        replies = self.generator.generate(prompts, params)
        return [list(dict.fromkeys(check for c in reply.completions
                                   for check in generated_checks(c.text, entry, 2 * self.config.tests)))
                for reply, entry in zip(replies, entries)]

    def run(self, batch: list[View]) -> list[Writes]:
        out = []
        for item, written in zip(batch, self._generated(batch), strict=True):
            examples = doctest_examples(item.query) if "examples" in self.config.checks else []
            checks = [CodeCheck(source=s, origin="example") for s in example_checks(examples)]
            checks += [CodeCheck(source=s, origin="generated") for s in written]
            probes = list(dict.fromkeys([e for e, _ in examples] + [q for t in written if (q := probe_of(t))]))
            runs = execute(self.sandbox, [p.code for p in item.programs], [c.source for c in checks],
                           probes, self.config.seconds_per_check)
            out.append({"checks": checks, "executions": runs,
                        "trace": {"checks": len(checks), "probes": len(probes)}})
        return out


@register("stage", "pick")
class Pick(Stage):
    """Answer with one of the sampled programs, chosen by `method` (see `rag.verifiers.pick`)."""

    reads = ("query", "programs")
    optional_reads = ("checks", "executions")
    writes = ("text",)

    class Config(ComponentConfig):
        method: PickMethod = "examples"
        verifier: str | None = Field(default=None, description="LEVER weights (JSON) for `lever`")

    config: Config

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.config.method == "lever" and self.config.verifier is None:
            raise ConfigError("pick: method lever needs `verifier`, a trained LeverVerifier file")

    @cached_property
    def verifier(self) -> LeverVerifier | None:
        return LeverVerifier.load(self.config.verifier) if self.config.verifier else None

    def run(self, batch: list[View]) -> list[Writes]:
        out = []
        for item in batch:
            chosen = pick(self.config.method, item.programs, item.checks, item.executions,
                          self.verifier, seed=item.query)
            out.append({"text": item.programs[chosen].code,
                        "trace": {"method": self.config.method, "chosen": chosen}})
        return out


@register("stage", "vote")
class Vote(Stage):
    """Answer with the majority of the sampled completions (generate with n > 1)."""

    reads = ("generation",)
    writes = ("text", "agreement")

    def run(self, batch: list[View]) -> list[Writes]:
        out = []
        for item in batch:
            completions = item.generation.completions
            texts = [c.text.strip() for c in completions]
            chosen, share = majority_answer(texts, [c.logprob or 0.0 for c in completions])
            out.append({"text": texts[chosen], "agreement": share,
                        "trace": {"samples": len(texts), "agreement": share}})
        return out


@register("stage", "ground")
class Ground(Stage):
    """Mark each answer supported or not by the passages it was shown (`Answer.supported`)."""

    reads = ("query", "hits", "text")
    writes = ("supported",)
    nested = {"generator": "generator"}

    class Config(ComponentConfig):
        generator: dict[str, Any] | None = Field(
            default=None, description="LLM judge for answers that string containment cannot settle"
        )
        threshold: float = Field(default=0.5, gt=0, lt=1)

    config: Config
    generator: Generator | None

    def run(self, batch: list[View]) -> list[Writes]:
        verdicts = check_grounding(
            [i.query for i in batch], [i.text for i in batch],
            [[h.chunk.text for h in i.hits] for i in batch], self.generator, self.config.threshold,
        )
        return [{"supported": verdict.supported, "trace": verdict.model_dump()}
                for verdict in verdicts]
