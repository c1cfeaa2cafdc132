"""One parser per file format, registered by suffix: a file in, its text, title and the offsets
where its sections and pages start out.

Each parser imports its library when called, so reading a folder of Markdown never loads the PDF
stack. A file that holds nothing to index raises `Unreadable` with the reason a user can act on
(scanned PDF, password, corrupt file); the folder reader lists it instead of skipping it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Unreadable(Exception):
    """A file holds no text this package can index; the message says why."""


@dataclass
class Parsed:
    """What one file holds: plain text, the title it gives itself ("" when none), and
    (offset, heading) and (offset, page number) pairs in text order."""

    text: str
    title: str = ""
    sections: list[tuple[int, str]] = field(default_factory=list)
    pages: list[tuple[int, int]] = field(default_factory=list)


class TextBuilder:
    """Joins blocks (paragraphs, headings, pages) with blank lines and records where each
    heading and page starts, so that every format's offsets are counted one way."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.length = 0
        self.sections: list[tuple[int, str]] = []
        self.pages: list[tuple[int, int]] = []

    def _next_offset(self) -> int:
        return self.length + 2 if self.blocks else 0

    def block(self, text: str) -> int:
        """Append a non-blank block; returns its offset."""
        text = text.strip()
        offset = self._next_offset()
        if text:
            self.blocks.append(text)
            self.length = offset + len(text)
        return offset

    def heading(self, text: str) -> None:
        text = " ".join(text.split())
        if text:
            self.sections.append((self.block(text), text))

    def page(self, number: int, text: str) -> int:
        """Append one page's text (a page without text is left out); returns its offset."""
        offset = self.block(text)
        if text.strip():
            self.pages.append((offset, number))
        return offset

    def parsed(self, title: str = "") -> Parsed:
        text = "\n\n".join(self.blocks)
        if not text:
            raise Unreadable("no text in it")
        first_heading = self.sections[0][1] if self.sections else ""
        return Parsed(text, title.strip() or first_heading, self.sections, self.pages)


Parser = Callable[[Path], Parsed]
PARSERS: dict[str, Parser] = {}


def parser(*suffixes: str) -> Callable[[Parser], Parser]:
    """Register a parser for the given lower-case suffixes."""

    def register(fn: Parser) -> Parser:
        PARSERS.update(dict.fromkeys(suffixes, fn))
        return fn

    return register


def decode(data: bytes) -> str:
    """UTF-8 (with or without a BOM), else Windows-1252, which decodes any byte string."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def markdown_sections(text: str) -> list[tuple[int, str]]:
    """(offset, heading) of each one-line ATX or setext heading; markdown-it's parse, so that a
    `#` line inside a code block is no heading."""
    from markdown_it import MarkdownIt

    line_starts = [0]
    for line in text.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    tokens = MarkdownIt("commonmark").parse(text)
    sections = []
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type != "heading_open" or not opening.map:
            continue
        first, end = opening.map
        if end - first <= 2 and inline.content.strip():  # a multi-line paragraph above --- is none
            sections.append((line_starts[first], " ".join(inline.content.split())))
    return sections


@parser(".md", ".markdown", ".txt")
def parse_markdown(path: Path) -> Parsed:
    """Markdown and plain text, kept as written; headings (`#`, or a line underlined with === or
    ---, the plain-text convention too) start sections, the first one is the title."""
    text = decode(path.read_bytes())
    if not text.strip():
        raise Unreadable("no text in it")
    sections = markdown_sections(text)
    return Parsed(text, sections[0][1] if sections else "", sections)


# Page chrome: never main text wherever it stands.
HTML_CHROME = ("script, style, noscript, template, nav, aside, footer, form, iframe, svg, button, "
               "[role=navigation], [role=complementary], [role=contentinfo], [aria-hidden=true], "
               "[hidden]")
HTML_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
HTML_BLOCKS = {
    "address", "article", "blockquote", "dd", "details", "div", "dl", "dt", "figcaption",
    "figure", "header", "hr", "li", "main", "ol", "p", "section", "summary", "table", "tr",
    "ul",
}


def _flush(out: TextBuilder, line: list[str]) -> None:
    """End the paragraph being gathered: its pieces joined, runs of white space made one."""
    out.block(" ".join("".join(line).split()))
    line.clear()


def _walk_html(node: Any, out: TextBuilder, line: list[str]) -> None:
    """Text of `node`'s children in document order: block elements end a paragraph, headings
    become sections, inline elements, line breaks and table cells run on within a line (white
    space made one space, except inside `<pre>`)."""
    for child in node.iter(include_text=True):
        if child.tag == "-text":
            line.append(child.text(deep=False))
        elif child.tag in HTML_HEADINGS:
            _flush(out, line)
            out.heading(child.text(separator=" "))
        elif child.tag == "pre":  # code and verse keep their lines
            _flush(out, line)
            out.block(child.text())
        elif child.tag in HTML_BLOCKS:
            _flush(out, line)
            _walk_html(child, out, line)
            _flush(out, line)
        else:
            _walk_html(child, out, line)
            if child.tag in {"td", "th", "br"}:
                line.append(" ")


@parser(".html", ".htm")
def parse_html(path: Path) -> Parsed:
    """The main text of a web page: `<main>` (or its only `<article>`, else `<body>`) without
    navigation, asides, footers, scripts and forms; the page header is dropped when there is no
    main element to leave it outside. Title: `<title>`, else the first `<h1>`."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(decode(path.read_bytes()))
    title_node = tree.css_first("title")
    for node in tree.css(HTML_CHROME):
        node.decompose()
    articles = tree.css("article")
    root = (tree.css_first("main") or tree.css_first("[role=main]")
            or (articles[0] if len(articles) == 1 else None) or tree.body)
    if root is None:
        raise Unreadable("no <body> in it")
    if root.tag == "body":
        for node in root.css("header, [role=banner]"):
            node.decompose()
    out, line = TextBuilder(), []
    _walk_html(root, out, line)
    _flush(out, line)
    h1 = tree.css_first("h1")
    title = (title_node.text() if title_node else "").strip() or (h1.text() if h1 else "")
    return out.parsed(title)


@parser(".docx")
def parse_docx(path: Path) -> Parsed:
    """Paragraphs and table rows in order; paragraphs styled Title or Heading N start sections.
    Title: the first of them, else the file's title property."""
    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    out = TextBuilder()
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            for row in item.rows:
                out.block(" | ".join(cell.text.strip() for cell in row.cells))
        elif item.style is not None and item.style.name.startswith(("Heading", "Title")):
            out.heading(item.text)
        else:
            out.block(item.text)
    return out.parsed("" if out.sections else document.core_properties.title or "")


def _largest_text(page: Any) -> str:
    """The first stretch of the page's largest text, when that is larger than its body text
    (the size most characters are set in); "" when every line is one size."""
    runs: list[tuple[str, float]] = []

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        if text.strip():  # the size as printed: the font size scaled by both matrices
            runs.append((text.strip(), round(size * abs(tm[3] or 1) * abs(cm[3] or 1), 1)))

    page.extract_text(visitor_text=visit)
    sizes: Counter[float] = Counter()
    for text, size in runs:
        sizes[size] += len(text)
    if not sizes or max(sizes) <= sizes.most_common(1)[0][0] * 1.15:
        return ""
    largest = max(sizes)
    first = next(i for i, (_, size) in enumerate(runs) if size == largest)
    heading = []
    for text, size in runs[first:]:
        if size != largest:
            break
        heading.append(text)
    return " ".join(heading)


def _outline(reader: Any) -> list[tuple[int, str]]:
    """(page index, title) of every bookmark, nested ones included."""
    found: list[tuple[int, str]] = []

    def visit(items: list[Any]) -> None:
        for item in items:
            if isinstance(item, list):
                visit(item)
            elif (page := reader.get_destination_page_number(item)) is not None:
                found.append((page, str(item.title)))

    visit(reader.outline)
    return found


@parser(".pdf")
def parse_pdf(path: Path) -> Parsed:
    """The text layer, page by page (numbers kept); bookmarks start sections, found in their
    page's text where it holds them. Title: the document's title property, else the largest
    text on the first page."""
    from pypdf import PasswordType, PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise Unreadable("encrypted: it needs a password")
    out = TextBuilder()
    page_starts: dict[int, tuple[int, str]] = {}
    for index, page in enumerate(reader.pages):
        text = (page.extract_text() or "").strip()
        page_starts[index] = (out.page(index + 1, text), text)
    if not out.blocks:
        raise Unreadable(f"no text layer on its {len(reader.pages)} page(s): scanned? run OCR "
                         "first")
    for page_index, title in _outline(reader):
        offset, text = page_starts[page_index]
        out.sections.append((offset + max(text.find(title), 0), " ".join(title.split())))
    out.sections.sort()
    title = (reader.metadata.title if reader.metadata else None) or ""
    first_page = next(p for i, p in enumerate(reader.pages) if page_starts[i][1])
    return out.parsed(title or _largest_text(first_page))
