"""Ingestion of a user's files: each format on small files written here, the metadata their
chunks carry, and every file that cannot be read reported with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import docx
import pytest
from fpdf import FPDF
from typer.testing import CliRunner

from rag.chunkers import FixedTokenChunker
from rag.cli import app
from rag.corpus import load_corpus, read_corpus
from rag.errors import CorpusError, EmptyCorpusError
from rag.ingest import read_files
from rag.prompts.templates import format_passages
from rag.types import Chunk, Citation, Hit

BODY = ("The widget turns blue when it is fully charged and red when its battery runs low. "
        "Keep it away from water and clean it with a dry cloth. ")


def write_pdf(path: Path, pages: list[str], title: str = "", bookmarks: bool = True,
              **encryption: str) -> Path:
    """A PDF with one page per heading: the heading set large (a bookmark too), then body text."""
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    if encryption:
        pdf.set_encryption(**encryption)
    for heading in pages:
        pdf.add_page()
        if bookmarks:
            pdf.start_section(heading)
        pdf.set_font("helvetica", size=22)
        pdf.cell(text=heading)
        pdf.ln(14)
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, f"{heading}: {BODY * 3}")
    pdf.output(str(path))
    return path


def write_docx(path: Path, core_title: str = "", headings: bool = True) -> Path:
    document = docx.Document()
    document.core_properties.title = core_title
    if headings:
        document.add_heading("Widget Notes", 0)
    document.add_paragraph("Notes on the widget, kept by the support team.")
    if headings:
        document.add_heading("Charging", 1)
    document.add_paragraph(BODY)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "colour", "blue"
    document.save(str(path))
    return path


PAGE = """<html><head><title>Widget Guide</title><script>var tracking = 1;</script></head><body>
<header>ACME site header</header>
<nav><a href="/">Home</a> <a href="/shop">Shop the catalogue</a></nav>
<main><h1>The widget</h1><p>The widget turns <b>blue</b> when charged.</p>
<h2>Cleaning</h2><p>Wipe it with a dry cloth,<br>never with water.</p>
<pre>widget --charge
widget   --status</pre>
<table><tr><td>colour</td><td>blue</td></tr></table></main>
<aside>Related products you may like</aside>
<footer>Copyright ACME. Privacy policy.</footer></body></html>"""


def by_id(path: Path) -> dict:
    return {d.id: d for d in read_files(path).documents}


def test_markdown_and_text_keep_their_text_and_headings_as_sections(tmp_path):
    (tmp_path / "guide.md").write_text(
        "# Widget Guide\n\nIntro.\n\n```sh\n# a shell comment, no heading\n```\n\n"
        "## Charging\n\nPlug it in.\n\nCleaning\n--------\n\nA dry cloth.\n")
    (tmp_path / "plain.txt").write_text("Just a line of text with no heading at all.\n")
    docs = by_id(tmp_path)
    guide = docs["guide.md"]
    assert guide.text == (tmp_path / "guide.md").read_text()  # kept as written: exact spans
    assert guide.title == "Widget Guide"
    assert [s for _, s in guide.metadata["section_starts"]] == [
        "Widget Guide", "Charging", "Cleaning"]
    assert all(guide.text[o:].lstrip("# ").startswith(s)
               for o, s in guide.metadata["section_starts"])
    assert docs["plain.txt"].title == "plain"  # no heading: the file name is the fallback
    assert docs["plain.txt"].metadata["source"] == "plain.txt"


def test_html_keeps_main_text_title_and_headings_and_drops_boilerplate(tmp_path):
    (tmp_path / "guide.html").write_text(PAGE)
    (tmp_path / "untitled.htm").write_text("<body><h1>Only a heading</h1><p>Text.</p></body>")
    docs = by_id(tmp_path)
    page = docs["guide.html"]
    assert page.title == "Widget Guide"
    assert page.text == ("The widget\n\nThe widget turns blue when charged.\n\nCleaning\n\n"
                         "Wipe it with a dry cloth, never with water.\n\n"
                         "widget --charge\nwidget   --status\n\ncolour blue")
    for boilerplate in ("header", "Shop", "tracking", "Related", "Copyright"):
        assert boilerplate not in page.text
    assert [s for _, s in page.metadata["section_starts"]] == ["The widget", "Cleaning"]
    assert docs["untitled.htm"].title == "Only a heading"


def test_docx_reads_paragraphs_headings_and_tables(tmp_path):
    write_docx(tmp_path / "notes.docx", core_title="stale template title")
    write_docx(tmp_path / "plain.docx", core_title="Support notes", headings=False)
    docs = by_id(tmp_path)
    notes = docs["notes.docx"]
    assert notes.title == "Widget Notes"  # the first heading, before the file's title property
    assert [s for _, s in notes.metadata["section_starts"]] == ["Widget Notes", "Charging"]
    assert "colour | blue" in notes.text and BODY.strip() in notes.text
    assert docs["plain.docx"].title == "Support notes"


def test_pdf_pages_titles_and_bookmarks(tmp_path):
    write_pdf(tmp_path / "manual.pdf", ["Introduction", "Charging", "Cleaning"],
              title="Widget Manual")
    write_pdf(tmp_path / "untitled.pdf", ["Quick Start", "Safety"], bookmarks=False)
    docs = by_id(tmp_path)
    manual = docs["manual.pdf"]
    assert manual.title == "Widget Manual"
    pages = manual.metadata["page_starts"]
    assert [p for _, p in pages] == [1, 2, 3]
    assert [manual.text[o:].split("\n")[0] for o, _ in pages] == [
        "Introduction", "Charging", "Cleaning"]
    assert manual.metadata["section_starts"] == [(o, h) for (o, _), h in zip(pages, [
        "Introduction", "Charging", "Cleaning"])]
    # No title property and no bookmarks: the largest text on the first page.
    assert docs["untitled.pdf"].title == "Quick Start"
    assert docs["untitled.pdf"].metadata["section_starts"] == []  # no bookmarks: no sections


def test_chunks_carry_source_title_section_and_page(tmp_path):
    (tmp_path / "docs").mkdir()
    write_pdf(tmp_path / "docs" / "manual.pdf", ["Introduction", "Charging", "Cleaning"],
              title="Widget Manual")
    (tmp_path / "docs" / "guide.md").write_text(
        f"Preface without a heading.\n\n# Guide\n\n{BODY}\n\n## Charging\n\n{BODY * 2}")
    docs = load_corpus(tmp_path)
    chunks = FixedTokenChunker(size=24).chunk_all(docs)
    pdf = [c for c in chunks if c.doc_id == "docs/manual.pdf"]
    starts = next(d for d in docs if d.id == "docs/manual.pdf").metadata["page_starts"]
    for chunk in pdf:
        assert chunk.metadata["source"] == "docs/manual.pdf"
        assert chunk.metadata["title"] == chunk.title == "Widget Manual"
        assert chunk.metadata["page"] == max(p for o, p in starts if o <= chunk.start)
        assert chunk.metadata["section"] == ["Introduction", "Charging", "Cleaning"][
            chunk.metadata["page"] - 1]
        assert "page_starts" not in chunk.metadata and "section_starts" not in chunk.metadata
    assert {c.metadata["page"] for c in pdf} == {1, 2, 3}
    md = [c for c in chunks if c.doc_id == "docs/guide.md"]
    assert md[0].metadata["section"] == ""  # before the first heading
    assert md[-1].metadata["section"] == "Charging" and "page" not in md[-1].metadata
    assert {c.metadata["title"] for c in md} == {"Guide"}


def test_jsonl_in_a_folder_keeps_its_records(tmp_path):
    (tmp_path / "faq.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": 1, "title": "Colour", "text": "It is blue.", "product": "widget"},
        {"id": 2, "text": "Use a dry cloth."}]))
    docs = load_corpus(tmp_path)
    assert [(d.id, d.title) for d in docs] == [("faq.jsonl:1", "Colour"), ("faq.jsonl:2", "")]
    assert docs[0].metadata == {"product": "widget", "source": "faq.jsonl"}
    assert [d.id for d in load_corpus(tmp_path / "faq.jsonl")] == ["1", "2"]  # as before


def write_unreadable(folder: Path) -> dict[str, str]:
    """One file of each kind that cannot be read, and the words its reason must hold."""
    folder.mkdir(exist_ok=True)
    scanned = FPDF()
    scanned.add_page()  # a page with no text layer, as a scan without OCR
    scanned.output(str(folder / "scan.pdf"))
    write_pdf(folder / "locked.pdf", ["Secret"], owner_password="o", user_password="u")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a PDF")
    (folder / "broken.docx").write_bytes(b"not a zip file")
    (folder / "table.csv").write_text("a,b\n1,2\n")
    (folder / "empty.md").write_text("\n\n")
    return {"scan.pdf": "no text layer", "locked.pdf": "needs a password",
            "broken.pdf": "corrupt or not a .pdf file", "broken.docx": "corrupt or not a .docx",
            "table.csv": "no reader for .csv", "empty.md": "no text"}


def test_unreadable_files_are_listed_with_their_reason(tmp_path):
    expected = write_unreadable(tmp_path)
    write_pdf(tmp_path / "owner-only.pdf", ["Open"], owner_password="o")  # no user password
    (tmp_path / ".hidden.md").write_text("# Hidden\n\nleft out, as hidden files are")
    ingested = read_corpus(tmp_path)
    assert [d.id for d in ingested.documents] == ["owner-only.pdf"]
    reasons = {u.path: u.reason for u in ingested.unreadable}
    assert reasons.keys() == expected.keys()
    for path, words in expected.items():
        assert words in reasons[path], (path, reasons[path])
    with pytest.warns(UserWarning, match="6 file\\(s\\) .* scan.pdf: no text layer"):
        load_corpus(tmp_path)


def test_a_folder_with_nothing_readable_and_a_missing_path_are_named_errors(tmp_path):
    write_unreadable(tmp_path / "bad")
    with pytest.raises(EmptyCorpusError, match="no readable document(.|\n)*locked.pdf: encrypted"):
        load_corpus(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyCorpusError):
        load_corpus(tmp_path / "empty")
    with pytest.raises(EmptyCorpusError, match="scan.pdf: no text layer"):
        load_corpus(tmp_path / "bad" / "scan.pdf")  # one file given alone
    with pytest.raises(CorpusError, match="corpus not found"):
        load_corpus(tmp_path / "nope")


def test_citations_and_passage_headers_show_file_page_and_section():
    chunk = Chunk(id="manual.pdf#3", doc_id="manual.pdf", text="Charge it.", start=0, end=10,
                  title="Widget Manual",
                  metadata={"source": "manual.pdf", "page": 4, "section": "Charging"})
    assert Citation.of(2, chunk).label == "manual.pdf p. 4"
    plain = chunk.model_copy(update={"metadata": {}})
    assert Citation.of(1, plain).label == "Widget Manual"
    hits = [Hit(chunk=chunk, score=1.0, retriever="bm25"), Hit(chunk=plain, score=0.5,
                                                               retriever="bm25")]
    assert format_passages(hits) == ("[1] Widget Manual / Charging\nCharge it.\n\n"
                                     "[2] Widget Manual\nCharge it.")


def test_cli_indexes_a_mixed_folder_and_lists_what_it_could_not_read(tmp_path):
    folder = tmp_path / "docs"
    expected = write_unreadable(folder)
    write_pdf(folder / "manual.pdf", ["Introduction", "Charging"], title="Widget Manual")
    (folder / "guide.html").write_text(PAGE)
    write_docx(folder / "notes.docx")
    (folder / "readme.md").write_text(f"# Readme\n\n{BODY}")
    (folder / "todo.txt").write_text(BODY)
    (folder / "faq.jsonl").write_text(json.dumps({"id": "q1", "text": BODY}) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["index", str(folder), "--out", str(tmp_path / "idx"),
                                 "--chunk-size", "48"])
    assert result.exit_code == 0, result.output
    assert "of 6 documents" in result.output
    assert "6 file(s) could not be read" in result.output
    for path, words in expected.items():
        assert f"{path}: " in result.output and words in result.output
    from rag.retrievers import open_index

    hits = open_index(tmp_path / "idx").search(["widget charged blue"], k=50)[0]
    assert {h.chunk.doc_id for h in hits} == {
        "manual.pdf", "guide.html", "notes.docx", "readme.md", "todo.txt", "faq.jsonl:q1"}
    assert {h.chunk.metadata.get("page") for h in hits if h.chunk.doc_id == "manual.pdf"} == {1, 2}

    for bad, message in [(folder / "scan.pdf", "scan.pdf: no text layer"),
                         (tmp_path / "nope", "corpus not found")]:
        failed = runner.invoke(app, ["index", str(bad), "--out", str(tmp_path / "idx2")])
        assert failed.exit_code == 2 and message in failed.output, failed.output
        assert not (tmp_path / "idx2").exists()
