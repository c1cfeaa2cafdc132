"""Compressors meet their ratio on real passages, never touch the question, keep code valid."""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest

from rag.chunkers.sentence import sentence_spans
from rag.compression import CodeCompressor, ExtractiveCompressor, LLMLinguaCompressor
from rag.compression.stage import Compress
from rag.errors import ConfigError
from rag.generators.base import LocalGenerator, LocalModelConfig
from rag.pipeline import Pipeline
from rag.prompts import RAG_SYSTEM, RagPrompt
from rag.registry import register
from rag.retrievers.stage import Retrieve
from rag.types import Chunk, Hit


def article_hits(docs, start: int, n: int = 5) -> list[Hit]:
    return [Hit(chunk=Chunk(id=d.id, doc_id=d.id, text=d.text, start=0, end=len(d.text), title=d.title),
                score=1.0, retriever="test") for d in docs[start : start + n]]


@pytest.mark.parametrize("ratio", [2.0, 4.0])
def test_extractive_meets_the_ratio_within_10_percent(encoder, vital_slice, ratio):
    extractive = ExtractiveCompressor(encoder=encoder, ratio=ratio)
    queries = ["American poet", "city in Iraq", "Renaissance painter"]
    hits = [article_hits(vital_slice, 5 * i) for i in range(3)]
    for result, before in zip(extractive.compress(queries, hits), hits):
        assert result.ratio == pytest.approx(ratio, rel=0.10)
        kept_ids = {h.chunk.id for h in result.hits}
        assert kept_ids <= {h.chunk.id for h in before}  # citations still resolve
        for h in result.hits:  # every kept sentence is verbatim from its passage
            original = next(b.chunk.text for b in before if b.chunk.id == h.chunk.id)
            assert all(part in original for part in h.chunk.text.split(". ") if part)


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [2.0, 4.0])
def test_llmlingua_meets_the_ratio_within_10_percent(vllm_tiny, vital_slice, ratio):
    compressor = LLMLinguaCompressor(generator=vllm_tiny, ratio=ratio)
    hits = [article_hits(vital_slice, 40), article_hits(vital_slice, 60)]
    results = compressor.compress(["Which painter made this?", "Where is this city?"], hits)
    for result in results:
        assert result.ratio == pytest.approx(ratio, rel=0.10)
        assert result.hits and all(h.chunk.text.strip() for h in result.hits)


@register("generator", "test_table_lm")
class TableLM(LocalGenerator):
    """Log-probabilities from a table, with `tiny`'s tokenizer: " zebra" is unlikely whatever
    comes before it; " Paris" is unlikely alone and likely once a prompt has named it."""

    Config = LocalModelConfig

    def score(self, prompts, continuations):
        def logprob(token: str, prompt: str) -> float:
            if token == " zebra":
                return -9.0
            if token == " Paris":
                return -0.5 if "Paris" in prompt else -5.0
            return -1.0

        return [[logprob(self.tokenizer.decode([t]), str(p)) for t in self.continuation_ids(c)]
                for p, c in zip(prompts, continuations)]


@pytest.mark.parametrize(("contrastive", "kept", "dropped"),
                         [(False, " zebra", " Paris"), (True, " Paris", " zebra")])
def test_llmlingua_keeps_the_surprising_token_or_the_one_the_question_makes_likely(
        contrastive, kept, dropped):
    text = "The zebra grazed while Paris slept near the river."
    hit = Hit(chunk=Chunk(id="p", doc_id="p", text=text, start=0, end=len(text)), score=1.0,
              retriever="test")
    compressor = LLMLinguaCompressor(generator=TableLM(), ratio=11.0, contrastive=contrastive)
    (result,) = compressor.compress(["Where is Paris?"], [[hit]])
    assert result.hits[0].chunk.text == kept  # self-information, or what the question adds
    assert dropped not in result.hits[0].chunk.text


def as_chunks(docs) -> list[Chunk]:
    return [h.chunk for h in article_hits(docs, 0, len(docs))]


def test_question_free_extractive_keeps_each_passages_lead_within_its_budget(encoder, vital_slice):
    extractive = ExtractiveCompressor(encoder=encoder, ratio=2.0)
    chunks = as_chunks(vital_slice[:20])
    compressed = extractive.compress_passages(chunks, progress=False)
    assert [c.id for c in compressed] == [c.id for c in chunks]
    shrunk = 0
    for before, after in zip(chunks, compressed):
        sentences = [before.text[a:b] for a, b in sentence_spans(extractive.segmenter, before.text)]
        budget = extractive.budget([Hit(chunk=before, score=0.0, retriever="test")])[1]
        if extractive.count(sentences[0]) <= budget:  # the lead fits: it is what is kept first
            assert after.text.startswith(sentences[0])
            assert extractive.count(after.text) <= budget + len(sentences)  # joining spaces
            shrunk += 1
    assert shrunk >= 10
    # a passage compressed alone is what it is in any batch: the cache can be built once
    assert extractive.compress_passages(chunks[3:4], progress=False) == compressed[3:4]


@pytest.mark.slow
def test_question_free_llmlingua_meets_the_ratio_on_each_passage_alone(vllm_tiny, vital_slice):
    compressor = LLMLinguaCompressor(generator=vllm_tiny, ratio=2.0)
    chunks = as_chunks(vital_slice[40:46])
    compressed = compressor.compress_passages(chunks, progress=False)
    for before, after in zip(chunks, compressed):
        assert compressor.count(before.text) / compressor.count(after.text) == pytest.approx(2.0, rel=0.15)
    assert compressor.compress_passages(chunks[2:3], progress=False) == compressed[2:3]


def test_the_question_and_instructions_reach_the_prompt_untouched(encoder, dense_dir):
    from rag.retrievers import HNSWRetriever

    question = "Who painted the Mona Lisa, and in which city is it kept?"
    extractive = ExtractiveCompressor(encoder=encoder, ratio=3.0)
    pipeline = Pipeline([Retrieve(HNSWRetriever.load(dense_dir), k=4), Compress(extractive), RagPrompt()])
    (state,) = pipeline.run([question])
    system, user = state.prompt.messages[0].content, state.prompt.messages[-1].content
    assert system == RAG_SYSTEM and user.endswith(f"Question: {question}")
    trace = state.trace[1].info
    assert trace["original_tokens"] > trace["kept_tokens"] > 0


def test_code_compression_keeps_valid_code_and_every_signature():
    import json.decoder as module

    source = inspect.getsource(module)
    hit = Hit(chunk=Chunk(id="m", doc_id="m", text=source, start=0, end=len(source)), score=1.0, retriever="t")

    def signatures(code: str) -> set[tuple[str, tuple[str, ...]]]:
        return {(n.name, tuple(a.arg for a in n.args.args)) for n in ast.walk(ast.parse(code))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    for ratio in (1.5, 2.0, 4.0):
        (result,) = CodeCompressor(ratio=ratio).compress(["decode JSON"], [[hit]])
        code = result.hits[0].chunk.text
        assert signatures(code) == signatures(source)
        assert result.original_tokens / result.kept_tokens == pytest.approx(ratio, rel=0.1)
    mild = CodeCompressor(ratio=1.1).shrink(source, budget=int(0.9 * CodeCompressor(ratio=1.1).count(source)))
    assert "#" not in "".join(line.split("'")[0] for line in mild.splitlines())  # comments go first


def test_code_compressor_falls_back_for_text_that_is_not_python(encoder):
    prose = "This is plain prose. It is not code at all. " * 10
    hit = Hit(chunk=Chunk(id="p", doc_id="p", text=prose, start=0, end=len(prose)), score=1.0, retriever="t")
    compressor = CodeCompressor(ratio=2.0, fallback=ExtractiveCompressor(encoder=encoder, ratio=2.0))
    (result,) = compressor.compress(["prose"], [[hit]])
    assert 0 < result.kept_tokens < result.original_tokens


@pytest.mark.parametrize("ratio", [1.0, 0.5, 100.0, 250.0])
def test_a_ratio_outside_1_to_100_is_refused(ratio):
    with pytest.raises(ConfigError, match="ratio must be above 1 and below 100"):
        CodeCompressor(ratio=ratio)


def test_docstring_only_bodies_stay_valid():
    from rag.compression.code import drop_docstrings

    source = textwrap.dedent('''
        def f(x: int) -> int:
            """Only a docstring."""

        class C:
            """Doc."""
            def g(self):
                """Doc."""
                return 1
    ''')
    out = drop_docstrings(source)
    ast.parse(out)
    assert "Doc" not in out and "def f(x: int) -> int:" in out


def test_the_kind_that_meets_the_budget_goes_only_as_far_as_needed():
    from rag.compression.code import drop_docstrings, drop_function_bodies

    source = textwrap.dedent('''
        def f(x):
            """Summary line.

            >>> f(1)
            2
            """
            y = x + 1
            return y
    ''')
    assert drop_docstrings(source, 0).strip() == source.strip()
    two_lines_less = drop_docstrings(source, 2)  # the closing line and the example's output
    assert ast.get_docstring(ast.parse(two_lines_less).body[0]) == "Summary line.\n\n>>> f(1)"
    summary_only = drop_docstrings(source, 4)
    assert ast.get_docstring(ast.parse(summary_only).body[0]) == "Summary line."
    assert ast.get_docstring(ast.parse(drop_docstrings(source, 5)).body[0]) is None
    body = ast.parse(drop_function_bodies(drop_docstrings(source), 1)).body[0].body
    assert [type(s).__name__ for s in body] == ["Assign", "Expr"]  # the last statement went
