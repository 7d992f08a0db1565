"""Shared bits of the benchmarks: import paths, test data, timing statistics."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "include", ROOT / "tests"):  # llmops and the stand-ins in tests/support
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

MiB = 1024 * 1024


def write_incompressible(path: Path, size: int) -> Path:
    """`size` bytes that no server can compress or deduplicate, written fast (one random block, salted per MiB)."""
    block = os.urandom(16 * MiB)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        written, counter = 0, 0
        while written < size:
            chunk = memoryview(block)[: min(len(block), size - written)]
            for start in range(0, len(chunk), MiB):
                handle.write(counter.to_bytes(8, "little"))
                handle.write(chunk[start + 8: start + MiB])
                counter += 1
            written += len(chunk)
        handle.truncate(size)
    return path


def alternate(runs: int, **contenders: Callable[[int], None]) -> dict[str, list[float]]:
    """Time each contender `runs` times, interleaved (A B A B ...) so drift hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for run in range(runs):
        for name, contender in contenders.items():
            started = time.perf_counter()
            contender(run)
            times[name].append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)
