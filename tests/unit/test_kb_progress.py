"""The heartbeat: an unchanged line is not repeated every beat, and the ETA follows the rate averaged over the run."""

from __future__ import annotations

import time

from llmops.kb.progress import Progress


def test_an_unchanged_line_comes_again_only_after_a_minute_with_how_long_it_lasted():
    progress = Progress("docs", every_s=5)
    progress.set_phase("loading the embedder sentence-transformers:m")
    now = time.monotonic()
    first = progress.beat(now)
    assert first == "progress docs: loading the embedder sentence-transformers:m"
    assert [progress.beat(now + s) for s in (5, 10, 55)] == [None, None, None]
    again = progress.beat(now + 61)
    assert again.startswith(first + " (still, for ") and progress.beat(now + 66) is None
    progress.set_phase("hashing documents", docs_total=3)
    assert progress.beat(now + 67) == "progress docs: hashing documents, 0/3 documents"
    progress.advance(1)
    assert progress.beat(now + 68) == "progress docs: hashing documents, 1/3 documents"


def test_the_eta_is_weighted_by_characters_averaged_over_the_phase():
    progress = Progress("docs")
    progress.set_phase("embedding", docs_total=2, chunks_total=4, chars_total=4000)
    progress.embedding_since = time.monotonic() - 10  # ten seconds into the phase
    progress.advance(chunks=1, chars=2000)  # the longest chunk first: half of the work in one chunk of four
    left = progress.seconds_left()
    assert 9 <= left <= 11, left  # by characters: as long again; by chunks it would say 30 s
    assert "ETA 10 s" in progress.line() or "ETA 11 s" in progress.line() or "ETA 9 s" in progress.line()
