"""The README's "What it measures" table against the results files it cites: every number in a
row must be in the JSON of the benchmark that row links, so a figure cannot outlive its run."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Each docs link of the table, to the results file the linked section is written from.
LINKED_RESULTS = {
    "docs/benchmarks.md#end-to-end-qa-and-code": "end_to_end.json",
    "docs/benchmarks.md#qa-beyond-its-own-benchmark": "qa_general.json",
    "docs/benchmarks.md#documents-kept-current": "ingest.json",
    "docs/benchmarks.md#follow-up-questions": "conversation.json",
    "docs/benchmarks.md#the-demos-model": "demo_model.json",
    "docs/benchmarks.md#demonstrations-in-the-qa-prompt": "qa_demos.json",
    "docs/benchmarks.md#qa-beside-haystack-and-llamaindex": "peers.json",
    "docs/benchmarks.md#indexing-beside-haystack-and-llamaindex": "peers.json",
    "docs/benchmarks.md#indexing-on-a-cpu-without-bfloat16": "peers-avx2.json",
    "docs/benchmarks.md#compression-beside-llmlingua": "peers.json",
    "docs/benchmarks.md#chunking-beside-chonkie": "peers.json",
    "docs/benchmarks.md#retrieval": "retrieval.json",
    "docs/benchmarks.md#scaling-out": "scale.json",
    "docs/scaling.md#measured-on-one-2-core-machine": "scale.json",
    "docs/scaling.md#serving-replicas-on-ray-serve": "scale.json",
    "docs/benchmarks.md#rerankers-and-verifiers": "rerank_verify.json",
    "docs/benchmarks.md#selectors": "selectors.json",
    "docs/benchmarks.md#inside-vllm-the-kv-connector": "kvcache.json",
    "docs/benchmarks.md#demonstration-kv": "kvcache.json",
    "docs/benchmarks.md#compressed-chunks-then-cached": "kvcache.json",
    "docs/sandbox.md": "sandbox.json",
    "docs/benchmarks.md#machine-limits": "limits.json",
    "docs/cpu.md": "limits.json",
}
NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?"
SIGNED = re.compile(rf"(?<![\w.])[-+−]?{NUMBER}")
INTERVAL = re.compile(rf"CI ({SIGNED.pattern}) to ({SIGNED.pattern})")
UNSIGNED = re.compile(rf"(?<![\d.]){NUMBER}")


def table_rows() -> list[list[str]]:
    """The cells of each row of the README's "What it measures" table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## What it measures", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def as_decimal(figure: str) -> Decimal:
    return Decimal(figure.replace(",", "").replace("−", "-"))


def json_numbers(value: Any) -> Iterator[tuple[float, bool]]:
    """Every number in a results file: (value, signed) for JSON numbers, and the unsigned numbers
    written inside its strings and keys (setups such as "first 500 questions", columns "R@10")."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value), True
    elif isinstance(value, str):
        yield from ((float(as_decimal(m)), False) for m in UNSIGNED.findall(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from json_numbers(key)
            yield from json_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_numbers(item)


def rounds_to(value: float, figure: str) -> bool:
    """Whether `value` is the README's `figure` rounded to its last digit, as a fraction or in
    points/percent (x 100)."""
    wanted = as_decimal(figure)
    half_unit = float(Decimal(1).scaleb(wanted.as_tuple().exponent)) / 2 * (1 + 1e-9)
    return any(abs(v - float(wanted)) <= half_unit for v in (value, 100 * value))


def found(figure: str, numbers: list[tuple[float, bool]]) -> bool:
    """Whether a figure is a number of the file; numbers from its strings match unsigned."""
    unsigned = figure.lstrip("+-−")
    return any(rounds_to(value, figure if signed else unsigned) for value, signed in numbers)


def intervals(value: Any) -> Iterator[list[float]]:
    """Every pair of numbers in a results file: how its scripts write an interval."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        if len(value) == 2 and all(isinstance(v, int | float) for v in value):
            yield value
        for item in value:
            yield from intervals(item)


ROWS = table_rows()


def test_the_readme_table_is_found_and_every_row_links_a_known_results_file():
    assert len(ROWS) >= 10
    for what, _, details in ROWS:
        links = re.findall(r"\]\(([^)]+)\)", details)
        assert links and all(link in LINKED_RESULTS for link in links), (what, links)


@pytest.mark.parametrize("row", ROWS, ids=[row[0][:40] for row in ROWS])
def test_every_number_of_a_readme_row_is_in_the_results_file_it_links(row):
    what, result, details = row
    files = {LINKED_RESULTS[link] for link in re.findall(r"\]\(([^)]+)\)", details)}
    records = [json.loads((RESULTS / name).read_text()) for name in sorted(files)]
    numbers = [n for record in records for n in json_numbers(record)]
    text = re.sub(r"[*`]", "", f"{what} {result}")
    missing = [figure for figure in SIGNED.findall(text) if not found(figure, numbers)]
    assert not missing, f"{what}: not in {sorted(files)}: {missing}"
    pairs = [pair for record in records for pair in intervals(record)]
    for low, high in INTERVAL.findall(text):  # both ends of an interval from one interval
        assert any(rounds_to(a, low) and rounds_to(b, high) for a, b in pairs), (what, low, high)
