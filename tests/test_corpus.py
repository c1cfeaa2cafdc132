from __future__ import annotations

import json

import pytest

from rag.corpus import load_corpus, vital_articles
from rag.ingest.jsonl import read_jsonl
from rag.errors import CorpusError, EmptyCorpusError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_fields_and_metadata(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"id": 1, "text": "Alpha text.", "title": "Alpha", "lang": "en"}),
        json.dumps({"id": "2", "contents": '"Beta"\nBeta text.'}),  # FlashRAG layout
    ])
    docs = list(read_jsonl(path))
    assert [(d.id, d.title, d.text) for d in docs] == [("1", "Alpha", "Alpha text."),
                                                      ("2", "Beta", "Beta text.")]
    assert docs[0].metadata == {"lang": "en"}


@pytest.mark.parametrize("bad_line, message", [
    ('{"id": 3, "text": "unterminated', "invalid JSON"),
    ('["not", "an", "object"]', "expected a JSON object"),
    ('{"id": 3}', "missing or empty 'text'"),
    ('{"text": "no id"}', "missing 'id'"),
    ('{"id": 1, "text": "same id again"}', "duplicate id '1' \\(first at .*:1\\)"),
])
def test_a_broken_line_is_reported_with_its_number(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "c.jsonl", [
        json.dumps({"id": 1, "text": "fine"}), json.dumps({"id": 2, "text": "fine"}), bad_line,
    ])
    with pytest.raises(CorpusError, match=f"c.jsonl:3: {message}"):
        load_corpus(path)


def test_folder_of_text_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# A\nalpha")
    (tmp_path / "sub" / "b.txt").write_text("beta")
    (tmp_path / "listed.bin").write_bytes(b"\0")
    with pytest.warns(UserWarning, match="listed.bin: no reader for .bin"):
        docs = load_corpus(tmp_path)
    assert [(d.id, d.title) for d in docs] == [("a.md", "A"), ("sub/b.txt", "b")]


def test_vital_articles_are_complete_and_labelled():
    docs = vital_articles()
    assert len(docs) == 10_033
    assert len({d.id for d in docs}) == len(docs)
    film = next(d for d in docs if d.id == "2001: A Space Odyssey")
    assert film.metadata["description"] == "1968 film by Stanley Kubrick"
    assert load_corpus("vital-articles", limit=5) == docs[:5]


def test_missing_or_unsupported_sources_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="corpus not found"):
        load_corpus(tmp_path / "nope.jsonl")
    (tmp_path / "c.csv").write_text("a,b")
    with pytest.raises(EmptyCorpusError, match="c.csv: no reader for .csv"):
        load_corpus(tmp_path / "c.csv")
    with pytest.raises(CorpusError, match="limit"):
        load_corpus("vital-articles", limit=0)
