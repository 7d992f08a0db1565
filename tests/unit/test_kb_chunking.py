"""Chunking: size bounds, overlap, markdown sections, code fences, determinism."""

from __future__ import annotations

import pytest

from llmops.kb.chunking import chunk_lines


def _words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


@pytest.mark.parametrize(("size", "overlap"), [(120, 0), (120, 30), (400, 100), (800, 100)])
def test_chunks_respect_size_and_keep_every_word(size, overlap):
    text = _words(900)
    chunks = list(chunk_lines([text], size, overlap, markdown_aware=False))
    assert len(chunks) > 1
    assert all(len(c) <= size for c in chunks)
    seen = {word for c in chunks for word in c.split()}
    assert seen == set(text.split())  # nothing lost at chunk borders


def test_consecutive_chunks_overlap_at_word_boundaries():
    chunks = list(chunk_lines([_words(400)], 200, 50, markdown_aware=False))
    for before, after in zip(chunks, chunks[1:], strict=False):
        b, a = before.split(), after.split()
        shared = max(k for k in range(0, 30) if b[len(b) - k:] == a[:k])  # after starts with before's tail
        assert 0 < len(" ".join(a[:shared])) <= 50, (before[-60:], after[:60])


def test_no_overlap_means_no_repeated_words():
    chunks = list(chunk_lines([_words(400)], 200, 0, markdown_aware=False))
    words = [w for c in chunks for w in c.split()]
    assert len(words) == len(set(words)) == 400


def test_markdown_sections_start_new_chunks_with_their_heading_path():
    lines = ["# Guide", "", "Intro.", "", "## Install", "", "Run pip.", "", "### Linux", "", "Use apt.", "",
             "## Use", "", "Call it."]
    chunks = list(chunk_lines(lines, 500, 50, markdown_aware=True))
    assert chunks == ["Guide\nIntro.", "Guide > Install\nRun pip.", "Guide > Install > Linux\nUse apt.",
                      "Guide > Use\nCall it."]


def test_headings_inside_code_fences_are_code():
    lines = ["# Real", "", "```bash", "# not a heading", "echo hi", "```", "", "after"]
    chunks = list(chunk_lines(lines, 500, 0, markdown_aware=True))
    assert len(chunks) == 1 and "# not a heading" in chunks[0] and chunks[0].startswith("Real\n")


def test_plain_mode_ignores_markdown_headings():
    chunks = list(chunk_lines(["# Title", "", "body"], 500, 0, markdown_aware=False))
    assert chunks == ["# Title\n\nbody"]


def test_paragraphs_are_packed_whole_while_they_fit():
    paragraphs = [_words(10, f"p{i}_") for i in range(6)]
    lines = [line for p in paragraphs for line in (p, "")]
    chunks = list(chunk_lines(lines, 2 * len(paragraphs[0]) + 10, 0, markdown_aware=False))
    assert chunks == ["\n\n".join(paragraphs[i:i + 2]) for i in range(0, 6, 2)]


def test_empty_document_has_no_chunks_and_output_is_deterministic():
    assert list(chunk_lines(["", "   ", ""], 100, 10)) == []
    lines = ["# A", "", _words(300), "", "## B", "", _words(50, "b")]
    assert list(chunk_lines(lines, 150, 40)) == list(chunk_lines(lines, 150, 40))
