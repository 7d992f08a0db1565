"""Progress a person can follow: a heartbeat line at a fixed interval, whatever the run is doing.

A background thread logs one line at once and then every `every_s` seconds: the phase (opening Milvus,
loading the embedder, hashing, counting chunks, embedding, validating...), documents and chunks done out
of their totals, the embedding rate and the time left. Work is counted by the pipeline (`advance`); the
thread only reads the counters, so a slow batch never delays a line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("llmops.kb.progress")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Counters of one run plus the heartbeat thread that reports them (`with Progress(...) as progress:`).

    The rate and the ETA are averaged over the whole embedding phase and weighted by characters: the writer
    embeds the longest chunks of each flush first, so a chunk count alone swings the ETA with every flush. A line
    that says nothing new (a phase with no counters, such as loading the embedder) is not repeated every beat:
    it comes again only after `REPEAT_S`, with how long the phase has lasted.
    """

    REPEAT_S = 60.0

    def __init__(self, kb: str, every_s: float = 5.0):
        self.kb = kb
        self.every_s = max(float(every_s), 0.1)
        self.phase = "starting"
        self.phase_since = time.monotonic()
        self.docs_done = 0
        self.docs_total = 0
        self.chunks_done = 0
        self.chunks_total: int | None = None
        self.chars_done = 0
        self.chars_total: int | None = None
        self.embedding_since: float | None = None
        self.guard: Callable[[], None] | None = None  # called at every step (the lease's check: stop if lost)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[str, float] | None = None  # the last line logged and when

    # --- the pipeline's side ----------------------------------------------------------------------

    def set_phase(self, phase: str, docs_total: int = 0, chunks_total: int | None = None,
                  chars_total: int | None = None) -> None:
        if self.guard is not None:
            self.guard()
        with self._lock:
            self.phase, self.docs_total, self.docs_done = phase, docs_total, 0
            self.phase_since = time.monotonic()
            self.chunks_total, self.chunks_done = chunks_total, 0
            self.chars_total, self.chars_done = chars_total, 0
            self.embedding_since = time.monotonic() if chunks_total is not None else None

    def advance(self, documents: int = 0, chunks: int = 0, chars: int = 0) -> None:
        if self.guard is not None:
            self.guard()
        with self._lock:
            self.docs_done += documents
            self.chunks_done += chunks
            self.chars_done += chars

    # --- the reader's side ------------------------------------------------------------------------

    def rate(self) -> float | None:
        """Chunks embedded per second, averaged over the current embedding phase."""
        if self.embedding_since is None or not self.chunks_done:
            return None
        return self.chunks_done / max(time.monotonic() - self.embedding_since, 1e-9)

    def seconds_left(self) -> float | None:
        """The rest of the phase at the rate averaged over it so far: by characters when their total is known."""
        if self.embedding_since is None or not self.chunks_done or self.chunks_total is None:
            return None
        elapsed = max(time.monotonic() - self.embedding_since, 1e-9)
        if self.chars_total and self.chars_done:
            return max(self.chars_total - self.chars_done, 0) / (self.chars_done / elapsed)
        return max(self.chunks_total - self.chunks_done, 0) / (self.chunks_done / elapsed)

    def line(self) -> str:
        with self._lock:
            parts = [f"progress {self.kb}: {self.phase}"]
            if self.chunks_total is not None:
                total = max(self.chunks_total, 1)
                rate, left = self.rate(), self.seconds_left()
                parts.append(f"{self.chunks_done}/{self.chunks_total} chunks ({100.0 * self.chunks_done / total:.0f}%)")
                parts.append(f"{self.docs_done}/{self.docs_total} documents")
                parts.append(f"{rate:.1f} chunks/s" if rate else "rate pending")
                parts.append(f"ETA {duration(left)}" if left is not None else "ETA pending")
            elif self.docs_total:
                parts.append(f"{self.docs_done}/{self.docs_total} documents")
            return ", ".join(parts)

    def beat(self, now: float | None = None) -> str | None:
        """The line to log now, or None when it would only repeat the last one (see the class docstring)."""
        now = time.monotonic() if now is None else now
        line = self.line()
        if self._last is not None and self._last[0] == line and now - self._last[1] < self.REPEAT_S:
            return None
        repeated = self._last is not None and self._last[0] == line
        self._last = (line, now)
        return f"{line} (still, for {duration(now - self.phase_since)})" if repeated else line

    def __enter__(self) -> Progress:
        self._thread = threading.Thread(target=self._beat, name=f"progress-{self.kb}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while True:
            text = self.beat()
            if text is not None:
                log.info("%s", text)
            if self._stop.wait(self.every_s):
                return
