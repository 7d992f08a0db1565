"""Turn a document's bytes into text lines, streaming: markdown, plain text, HTML and PDF.

Every loader yields lines (without their newline). HTML headings come out as markdown headings so
the markdown-aware chunker keeps section context for HTML too. A document that cannot be decoded or
parsed raises `DocumentError`; the pipeline skips and reports it and indexes the rest.
"""

from __future__ import annotations

import codecs
import shutil
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import IO

from llmops.kb.errors import DocumentError
from llmops.kb.sources import SourceDocument

LOADER_KINDS = ("markdown", "text", "html", "pdf")
DEFAULT_LOADERS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
                   ".rst": "text", ".html": "html", ".htm": "html", ".pdf": "pdf"}
_BLOCK = 64 * 1024


def _decoded_lines(stream: IO[bytes], doc_id: str) -> Iterator[str]:
    """Decode UTF-8 block by block and yield lines; time and memory are linear in the document's size
    (a line longer than a block is collected as pieces and joined once, never re-scanned)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    pieces: list[str] = []  # the current line's text so far
    offset = 0
    while True:
        block = stream.read(_BLOCK)
        buffered = len(decoder.getstate()[0])  # bytes of a character split by the previous block
        try:
            text = decoder.decode(block or b"", final=not block)
        except UnicodeDecodeError as exc:
            raise DocumentError(
                f"{doc_id}: is not UTF-8 text (bad byte at offset {offset - buffered + exc.start})",
                fix="convert it to UTF-8 or exclude it with source.include") from None
        offset += len(block or b"")
        start = 0
        while (end := text.find("\n", start)) >= 0:
            pieces.append(text[start:end])
            yield "".join(pieces).rstrip("\r")
            pieces = []
            start = end + 1
        if start < len(text):
            pieces.append(text[start:])
        if not block:
            break
    if pieces:
        yield "".join(pieces).rstrip("\r")


def load_text(stream: IO[bytes], doc_id: str) -> Iterator[str]:
    yield from _decoded_lines(stream, doc_id)


load_markdown = load_text  # markdown structure is the chunker's business


class _HtmlToText(HTMLParser):
    _SKIP = {"script", "style", "noscript", "template"}
    _BLOCKS = {"p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "br", "li",
               "ul", "ol", "table", "tr", "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "title",
               "dt", "dd", "hr", "form", "figure", "figcaption"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._current: list[str] = []
        self._skip_depth = 0
        self._title_seen = False

    def _flush(self) -> None:
        text = " ".join("".join(self._current).split())
        if text:
            self.lines.append(text)
            self.lines.append("")
        self._current = []

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skip_depth += 1
            return
        if tag in self._BLOCKS:
            self._flush()
        if tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
            self._current.append("#" * int(tag[1]) + " ")
        elif tag == "li":
            self._current.append("- ")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if tag in self._BLOCKS:
            self._flush()

    def handle_data(self, data):
        if not self._skip_depth:
            self._current.append(data)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def load_html(stream: IO[bytes], doc_id: str) -> Iterator[str]:
    parser = _HtmlToText()
    pending: list[str] = []
    for line in _decoded_lines(stream, doc_id):
        pending.append(line)
        if len(pending) >= 256:
            parser.feed("\n".join(pending) + "\n")
            pending = []
            yield from parser.take()
    parser.feed("\n".join(pending))
    parser.close()
    parser._flush()
    yield from parser.take()


def load_pdf(stream: IO[bytes], doc_id: str) -> Iterator[str]:
    """Extract text page by page with pypdf. The PDF is spooled to a temporary file (pypdf needs seeks)."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:  # the Airflow env has no pypdf; the worker env does
        raise DocumentError(f"{doc_id}: PDF support needs pypdf", fix="run in the worker environment") from exc
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(stream, spool, _BLOCK)
        spool.seek(0)
        try:
            reader = PdfReader(spool)
            for page in reader.pages:
                text = page.extract_text() or ""
                yield from text.splitlines()
                yield ""
        except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
            raise DocumentError(f"{doc_id}: is not a readable PDF ({exc.__class__.__name__}: {exc})",
                                fix="re-export it or exclude it with source.include") from None


_LOADERS = {"markdown": load_markdown, "text": load_text, "html": load_html, "pdf": load_pdf}


def loader_for(doc: SourceDocument, loaders: dict[str, str] | None = None) -> str:
    table = {**DEFAULT_LOADERS, **(loaders or {})}
    kind = table.get(doc.suffix)
    if kind is None:
        raise DocumentError(f"{doc.doc_id}: no loader for {doc.suffix or 'files without a suffix'!r}",
                            fix=f"add it to loaders in knowledge_bases.yaml (one of {', '.join(LOADER_KINDS)}) "
                            "or exclude it with source.include")
    return kind


def load_lines(doc: SourceDocument, loaders: dict[str, str] | None = None) -> Iterator[str]:
    """Open `doc` and yield its text lines with the loader its suffix maps to."""
    kind = loader_for(doc, loaders)
    try:
        stream = doc.open()
    except OSError as exc:
        raise DocumentError(f"{doc.doc_id}: cannot be opened ({exc.strerror or exc})",
                            fix="check that the file exists and is readable") from None
    try:
        yield from _LOADERS[kind](stream, doc.doc_id)
    except OSError as exc:
        raise DocumentError(f"{doc.doc_id}: read failed ({exc})", fix="check the file or the storage") from None
    finally:
        stream.close()
