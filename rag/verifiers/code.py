"""Programs from LLM replies, checks from docstrings, and running both in the sandbox.

A *check* is an assert statement (from a `>>>` example in the task's docstring, or written by
the LLM); a *probe* is an expression whose value is recorded (the example's call), so programs
can be compared by what they compute. Each program runs once in the sandbox with all its checks
and probes, each under its own alarm, so one hanging check fails alone.
"""

from __future__ import annotations

import ast
import doctest
import inspect
import json
import math
import re
import secrets
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from rag.verifiers.sandbox import ExecResult, Sandbox

TESTS_PROMPT = (
    "Here is a Python function to test:\n\n```python\n{prompt}    ...\n```\n\n"
    "Write {count} different assert statements that check `{entry_point}` on typical and edge-case "
    "inputs, one per line, in one Python code block."
)
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.S)


def extract_code(reply: str) -> str:
    """The code in an LLM reply: its longest fenced block, else the reply itself."""
    blocks = _FENCE.findall(reply)
    return max(blocks, key=len).strip("\n") if blocks else reply.strip("\n")


class Program(BaseModel):
    """A program taken from one sampled completion, with what the LM thought of it."""

    code: str
    logprob: float | None = Field(default=None, description="sum over the completion's tokens")
    tokens: int = 0

    @property
    def mean_logprob(self) -> float:
        return -math.inf if self.logprob is None else self.logprob / max(self.tokens, 1)


class CodeCheck(BaseModel):
    """An assert statement programs are run against, and where it came from."""

    source: str
    origin: Literal["example", "generated"]


def entry_point_of(task_prompt: str) -> str | None:
    """The function a task asks for: the last one its prompt defines."""
    names = _DEF.findall(task_prompt)
    return names[-1] if names else None


def program_for(task_prompt: str, reply: str, entry_point: str) -> str:
    """A runnable program: the reply's function with the task's imports, or the task's
    prompt continued by the reply when the reply is only a function body."""
    code = extract_code(reply)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        imports = [ln for ln in task_prompt.splitlines() if ln.startswith(("import ", "from "))]
        return "\n".join([*imports, "", code]) if imports else code
    return task_prompt + code


def _docstring_sources(source: str) -> list[str]:
    """Each docstring as written in the source, escapes kept: an example such as
    `f("a\\nb")` stays one line, where the evaluated docstring would split it."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [source]
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(node):
            literal = ast.get_source_segment(source, node.body[0]) or ""
            quotes = re.match(r"[rRuU]?(\"{3}|'{3}|\"|')", literal)
            if quotes:
                docs.append(inspect.cleandoc(literal[quotes.end() : -len(quotes.group(1))]))
    return docs


def doctest_examples(task_prompt: str) -> list[tuple[str, str]]:
    """(expression, expected output) for each `>>>` example with an expected output; a
    docstring whose examples doctest cannot parse gives none."""
    found = []
    for doc in _docstring_sources(task_prompt):
        try:
            examples = doctest.DocTestParser().get_examples(doc)
        except ValueError:
            continue
        for e in examples:
            want = re.split(r"\"{3}|'{3}", e.want)[0].strip()  # the regex fallback sees quotes
            if want:
                found.append((e.source.strip(), want))
    return found


def example_checks(examples: Sequence[tuple[str, str]]) -> list[str]:
    """Assert statements for doctest examples, comparing as doctest does (by repr), or by value."""
    return [f"assert _matches({expr}, {want!r})" for expr, want in examples]


def probe_of(check: str) -> str | None:
    """The call a check tests (`f(2)` in `assert f(2) == 4`), to compare programs on its input."""
    try:
        statement = ast.parse(check).body[0]
    except (SyntaxError, IndexError):
        return None
    if isinstance(statement, ast.Assert) and isinstance(statement.test, ast.Compare):
        left = statement.test.left
        if isinstance(left, ast.Call):
            return ast.unparse(left)
    return None


def generated_checks(reply: str, entry_point: str, limit: int) -> list[str]:
    """Distinct one-line assert statements that call `entry_point`, from an LLM's reply."""
    found: list[str] = []
    for line in extract_code(reply).splitlines():
        line = line.strip()
        if line.startswith("assert ") and f"{entry_point}(" in line and line not in found:
            try:
                compile(line, "<check>", "exec")
            except SyntaxError:
                continue
            found.append(line)
    return found[:limit]


HARNESS = '''

import json as _json, signal as _signal

def _matches(value, want):
    if repr(value) == want:
        return True
    try:
        return value == eval(want)
    except Exception:
        return False

def _alarm(signum, frame):
    raise TimeoutError("check timed out")

_signal.signal(_signal.SIGALRM, _alarm)
_report = {{"checks": [], "probes": []}}
for _kind, _sources in (("checks", {checks!r}), ("probes", {probes!r})):
    for _source in _sources:
        _signal.setitimer(_signal.ITIMER_REAL, {seconds!r})
        try:
            _value = eval(_source) if _kind == "probes" else exec(_source)
            _report[_kind].append([True, None, repr(_value)[:200]])
        except BaseException as _error:
            _report[_kind].append([False, type(_error).__name__, None])
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
print({marker!r} + _json.dumps(_report))
'''


class Outcome(BaseModel):
    """One check or probe: did it pass, what it raised, what it returned (probes)."""

    ok: bool
    error: str | None = None
    value: str | None = None


class Execution(BaseModel):
    """A program run with its checks and probes."""

    result: ExecResult
    checks: list[Outcome] = Field(default_factory=list)
    probes: list[Outcome] = Field(default_factory=list)

    @property
    def passed(self) -> list[bool]:
        return [c.ok for c in self.checks]

    @property
    def signature(self) -> tuple[str | None, ...]:
        """What the program computed on the probes (error names where it raised)."""
        return tuple(p.value if p.ok else f"!{p.error}" for p in self.probes)


def execute(
    sandbox: Sandbox,
    programs: Sequence[str],
    checks: Sequence[str] = (),
    probes: Sequence[str] = (),
    seconds_per_check: float = 2.0,
) -> list[Execution]:
    """Run every program against all checks and probes, programs in parallel."""
    marker = f"@@rag-report-{secrets.token_hex(8)}@@"
    harness = HARNESS.format(
        checks=list(checks), probes=list(probes), seconds=seconds_per_check, marker=marker
    )
    results = sandbox.run_many([program + harness for program in programs])
    return [_parse(result, marker, len(checks), len(probes)) for result in results]


def _parse(result: ExecResult, marker: str, n_checks: int, n_probes: int) -> Execution:
    failed = result.exception or result.status
    report = None
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(marker):
            report = json.loads(line[len(marker):])
            break
    if report is None:  # the program died before the harness could report: everything failed
        return Execution(
            result=result,
            checks=[Outcome(ok=False, error=failed)] * n_checks,
            probes=[Outcome(ok=False, error=failed)] * n_probes,
        )
    return Execution(result=result, checks=_outcomes(report["checks"]), probes=_outcomes(report["probes"]))


def _outcomes(rows: list[list]) -> list[Outcome]:
    return [Outcome(ok=ok, error=error, value=value) for ok, error, value in rows]


def run_unit_tests(
    sandbox: Sandbox, programs: Sequence[str], test_source: str, entry_point: str
) -> list[ExecResult]:
    """Run a HumanEval-style `check(candidate)` test against each program, in parallel."""
    suffix = f"\n\n{test_source}\n\ncheck({entry_point})\n"
    return sandbox.run_many([program + suffix for program in programs])
