"""Split text lines into overlapping chunks of at most `size` characters.

Markdown-aware mode starts a new chunk at every heading (outside fenced code) and prefixes each
chunk with its heading path ("Install > Linux"), so a chunk found by search says where it came from.
Paragraphs are packed whole while they fit; a paragraph longer than a chunk is cut at whitespace.
Consecutive chunks of a section share up to `overlap` characters (cut at a word boundary).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0 or not text:
        return ""
    tail = text[-overlap:]
    if len(text) > overlap and not text[-overlap - 1].isspace():
        cut = tail.find(" ")
        tail = tail[cut + 1:] if cut >= 0 else ""
    return tail.strip()


def _split_long(paragraph: str, length: int) -> Iterator[str]:
    start = 0
    while start < len(paragraph):
        end = start + length
        if end < len(paragraph):
            cut = paragraph.rfind(" ", start + length // 2, end)
            if cut > start:
                end = cut
        piece = paragraph[start:end].strip()
        if piece:
            yield piece
        start = end


class _Packer:
    def __init__(self, size: int, overlap: int, prefix: str):
        self.prefix = prefix
        self.budget = max(size - len(prefix), size // 2)
        self.overlap = min(overlap, self.budget // 2)
        self.body = ""
        self.fresh = False  # holds text that has not been emitted yet (not only an overlap tail)

    def add(self, paragraph: str) -> Iterator[str]:
        if len(paragraph) > self.budget:
            for piece in _split_long(paragraph, self.budget - self.overlap - 1):
                yield from self._add_piece(piece, joiner=" ")
        else:
            yield from self._add_piece(paragraph, joiner="\n\n")

    def _add_piece(self, piece: str, joiner: str) -> Iterator[str]:
        if not self.body:
            self.body, self.fresh = piece, True
        elif len(self.body) + len(joiner) + len(piece) <= self.budget:
            self.body, self.fresh = self.body + joiner + piece, True
        else:
            if self.fresh:
                yield self.prefix + self.body
            tail = _tail(self.body, self.overlap)
            if tail and len(tail) + 1 + len(piece) <= self.budget:
                self.body = tail + " " + piece
            else:
                self.body = piece
            self.fresh = True

    def finish(self) -> Iterator[str]:
        if self.fresh and self.body.strip():
            yield self.prefix + self.body
        self.body, self.fresh = "", False


def chunk_lines(lines: Iterable[str], size: int, overlap: int, markdown_aware: bool = True) -> Iterator[str]:
    """Yield chunk texts for a document given as lines."""
    path: list[tuple[int, str]] = []
    packer = _Packer(size, overlap, "")
    paragraph: list[str] = []
    in_fence = False

    def paragraph_text() -> str:
        return "\n".join(paragraph).strip()

    for line in lines:
        if markdown_aware and _FENCE.match(line):
            in_fence = not in_fence
        heading = _HEADING.match(line) if markdown_aware and not in_fence else None
        if heading:
            if paragraph_text():
                yield from packer.add(paragraph_text())
            paragraph = []
            yield from packer.finish()
            level, title = len(heading.group(1)), heading.group(2).strip()
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
            prefix = " > ".join(t for _, t in path if t)
            packer = _Packer(size, overlap, prefix + "\n" if prefix else "")
            continue
        if not line.strip() and not in_fence:
            if paragraph_text():
                yield from packer.add(paragraph_text())
            paragraph = []
        else:
            paragraph.append(line.rstrip())
    if paragraph_text():
        yield from packer.add(paragraph_text())
    yield from packer.finish()
