from __future__ import annotations

import pytest

from rag.chunkers import FixedTokenChunker
from rag.errors import ConfigError, RagError
from rag.types import Document


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
