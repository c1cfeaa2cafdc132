from __future__ import annotations

import pytest

from rag.chunkers import FixedTokenChunker
from rag.errors import ConfigError, RagError
from rag.types import Chunk, Document


@pytest.fixture(scope="module")
def chunker():
    return FixedTokenChunker(size=32, overlap=8)


def test_spans_are_exact_and_cover_the_document(chunker, vital_slice):
    for doc in vital_slice[:50]:
        chunks = chunker.chunk(doc)
        assert all(doc.text[c.start:c.end] == c.text for c in chunks)
        assert chunks[0].start == 0 and chunks[-1].end == len(doc.text.rstrip())
        assert all(c.doc_id == doc.id and c.title == doc.title for c in chunks)


def test_windows_have_the_configured_size_and_overlap(chunker):
    tokenizer = chunker.tokenizer
    doc = Document(id="d", text=" ".join(["the cat sat on a mat"] * 40))  # one token a word
    chunks = chunker.chunk(doc)
    counts = [len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert all(n == 32 for n in counts[:-1]) and 0 < counts[-1] <= 32
    assert chunks[1].start < chunks[0].end  # consecutive windows overlap


@pytest.mark.parametrize("size, overlap", [(0, 0), (-5, 0), (10, 10), (10, -1)])
def test_bad_sizes_are_refused(size, overlap):
    with pytest.raises(ConfigError):
        FixedTokenChunker(size=size, overlap=overlap)


def test_empty_document_is_refused(chunker):
    with pytest.raises(RagError, match="empty"):
        chunker.chunk(Document(id="e", text="  \n"))


# ---- sentence, recursive and code chunkers ---------------------------------------------------

import ast  # noqa: E402
import inspect  # noqa: E402

import numpy as np  # noqa: E402

from rag.chunkers import (  # noqa: E402
    LateChunkingEmbedder,
    NaiveEmbedder,
    PythonChunker,
    RecursiveChunker,
    SentenceChunker,
    SituatedPrefixEmbedder,
    SituatedWindowEmbedder,
)
from rag.errors import EncoderMismatchError  # noqa: E402


@pytest.mark.parametrize("make", [SentenceChunker, lambda: SentenceChunker(sentences=3, overlap=1),
                                  lambda: RecursiveChunker(size=40)])
def test_every_chunker_keeps_exact_spans_on_real_text(make, vital_slice):
    chunker = make()
    for doc in vital_slice[:60]:
        chunks = chunker.chunk(doc)
        assert chunks and all(doc.text[c.start:c.end] == c.text and c.text.strip() for c in chunks)


def test_sentence_splitter_handles_abbreviations_decimals_and_quotes():
    text = ('Dr. Smith paid $3.50 for it. "Is it?" he asked. The U.S. economy grew 2.5% in '
            "2001. It was directed by him.")
    chunks = SentenceChunker().chunk(Document(id="d", text=text))
    assert [c.text for c in chunks] == [
        "Dr. Smith paid $3.50 for it.", '"Is it?" he asked.',
        "The U.S. economy grew 2.5% in 2001.", "It was directed by him."]


def test_recursive_chunks_fit_the_budget_and_prefer_paragraphs():
    chunker = RecursiveChunker(size=30)
    paragraph = "The cat sat on the mat and looked at the birds outside. " * 2
    doc = Document(id="d", text=f"{paragraph}\n\n{paragraph}\n\n{'word ' * 100}")
    chunks = chunker.chunk(doc)
    assert all(chunker._tokens(c.text) <= 30 for c in chunks)
    assert chunks[0].text == paragraph.strip()


def test_python_chunker_splits_a_real_module_at_top_level_definitions():
    import rag.chunkers.recursive as module

    source = inspect.getsource(module)
    chunks = PythonChunker().chunk(Document(id="m", text=source))
    assert all(source[c.start:c.end] == c.text for c in chunks)
    defined = [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    assert any(c.text.startswith("@register") and "class RecursiveChunker" in c.text for c in chunks)
    assert len(chunks) == 1 + len(defined)  # the module header, then each definition
    broken = PythonChunker().chunk(Document(id="b", text="def broken(:\n    pass\n" * 3))
    assert broken and all(c.text for c in broken)  # falls back to recursive splitting


@pytest.mark.parametrize("make", [lambda: SentenceChunker(sentences=0),
                                  lambda: SentenceChunker(sentences=2, overlap=2),
                                  lambda: RecursiveChunker(size=0)])
def test_bad_chunk_sizes_are_refused(make):
    with pytest.raises(ConfigError):
        make()


# ---- late chunking and situated embeddings ---------------------------------------------------


@pytest.fixture(scope="module")
def late(encoder):
    return LateChunkingEmbedder(encoder, title=False)


def test_late_chunk_vectors_are_the_mean_of_their_token_states(late, encoder):
    doc = Document(id="b", text="Berlin is the capital of Germany. Its more than 3.85 million "
                                "inhabitants make it the most populous city.")
    chunks = SentenceChunker().chunk(doc)
    vectors = late.embed([doc], chunks)
    tokenizer = encoder.tokenizer
    ids = tokenizer(doc.text, return_tensors="pt")
    with __import__("torch").no_grad():
        states = encoder.model[0].auto_model(**ids).last_hidden_state[0].numpy()
    words = tokenizer.convert_ids_to_tokens(ids["input_ids"][0])
    split = words.index(".") + 1  # [CLS] + first sentence | second sentence + [SEP]
    for vector, rows in zip(vectors, [states[:split], states[split:]]):
        expected = rows.mean(axis=0)
        np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)


def test_one_span_over_the_document_is_the_plain_embedding(late, encoder, vital_slice):
    doc = vital_slice[1]
    whole = [Chunk(id="w", doc_id=doc.id, text=doc.text, start=0, end=len(doc.text))]
    np.testing.assert_allclose(late.embed([doc], whole)[0],
                               encoder.encode_documents([doc.text])[0], atol=1e-5)


def test_late_chunking_resolves_it_to_the_documents_subject(encoder):
    doc = Document(id="k", title="2001: A Space Odyssey", text=(
        "2001: A Space Odyssey is a 1968 science fiction film by Stanley Kubrick. "
        "It was directed by him."))
    chunks = SentenceChunker().chunk(doc)
    assert chunks[1].text == "It was directed by him."
    query = encoder.encode_queries(["Stanley Kubrick's science fiction film"])[0]
    naive = NaiveEmbedder(encoder).embed([doc], chunks)[1]
    late = LateChunkingEmbedder(encoder).embed([doc], chunks)[1]
    assert query @ late > query @ naive + 0.1


def test_long_documents_are_covered_without_losing_a_token(encoder, vital_slice):
    text = " ".join(d.text for d in vital_slice[:8])  # far beyond the 256-token window
    [(states, offsets)] = encoder.token_states([text], overlap=64)
    n = len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert n > 600 and states.shape == (n + 2, encoder.dim) and len(offsets) == n
    short = vital_slice[0].text  # W >= n: long late chunking is plain late chunking
    [(one, _)] = encoder.token_states([short], overlap=64)
    [(again, _)] = encoder.token_states([short], overlap=0)
    np.testing.assert_allclose(one, again, atol=1e-5)
    doc = Document(id="long", text=text)
    chunks = SentenceChunker().chunk(doc)
    vectors = LateChunkingEmbedder(encoder).embed([doc], chunks)
    assert np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1)


@pytest.mark.parametrize("make", [SituatedWindowEmbedder, SituatedPrefixEmbedder])
def test_situated_variants_also_bring_in_the_subject(make, encoder):
    doc = Document(id="k", title="2001: A Space Odyssey", text=(
        "2001: A Space Odyssey is a 1968 science fiction film by Stanley Kubrick. "
        "It was directed by him."))
    chunks = SentenceChunker().chunk(doc)
    query = encoder.encode_queries(["Stanley Kubrick's science fiction film"])[0]
    naive = NaiveEmbedder(encoder).embed([doc], chunks)[1]
    assert query @ make(encoder).embed([doc], chunks)[1] > query @ naive + 0.1


def test_the_index_records_the_method_and_refuses_another_encoder(encoder, vital_slice, tmp_path):
    from rag.retrievers import HNSWRetriever

    docs = vital_slice[:20]
    chunks = SentenceChunker().chunk_all(docs)
    index = HNSWRetriever(encoder=encoder)
    index.add_embedded(docs, chunks, LateChunkingEmbedder(encoder))
    index.save(tmp_path / "late")
    assert HNSWRetriever.load(tmp_path / "late").vectors_by["type"] == "late"
    other = {"type": "sentence_transformers", "query_prefix": "query: "}
    with pytest.raises(EncoderMismatchError):
        HNSWRetriever(encoder=other).add_embedded(docs, chunks, LateChunkingEmbedder(encoder))


def test_llm_contexts_are_generated_once_then_read_from_the_cache(
        vllm_tiny, encoder, vital_slice, tmp_path, monkeypatch):
    from rag.chunkers import ContextualRetrievalEmbedder

    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    docs = vital_slice[:2]
    chunks = SentenceChunker().chunk_all(docs)
    embedder = ContextualRetrievalEmbedder(vllm_tiny, encoder, max_tokens=24)
    contexts = embedder.contexts(docs, chunks)
    assert len(contexts) == len(chunks) and any(c.strip() for c in contexts)
    assert (tmp_path / "contexts.jsonl").read_text().count("\n") == len(chunks)
    calls = []
    monkeypatch.setattr(vllm_tiny, "generate", lambda *args, **kwargs: calls.append(args) or [])
    assert embedder.contexts(docs, chunks) == contexts and not calls  # all from the cache
    vectors = embedder.embed(docs, chunks)
    assert vectors.shape == (len(chunks), encoder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
