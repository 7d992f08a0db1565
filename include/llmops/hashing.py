"""Streaming digests of files and streams: memory stays flat whatever the size. The one place that reads
bytes to hash them (artefact manifests and publication, hub verification, knowledge-base documents)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

CHUNK = 8 * 1024 * 1024


class RunningSha256:
    """sha256 and byte count of data seen chunk by chunk, for code that hashes what it copies."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def sha256_stream(stream: IO[bytes], chunk_size: int = CHUNK) -> tuple[str, int]:
    """(sha256 hex, size) of a binary stream, read to its end in chunks."""
    running = RunningSha256()
    while chunk := stream.read(chunk_size):
        running.update(chunk)
    return running.hexdigest(), running.size


def sha256_file(path: Path, chunk_size: int = CHUNK) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks into one reused buffer."""
    running = RunningSha256()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            running.update(view[:count])
    return running.hexdigest(), running.size


def git_blob_sha1(path: Path, chunk_size: int = CHUNK) -> str:
    """The git object id of a file (what the Hub reports as `blob_id` for files not stored in LFS)."""
    size = Path(path).stat().st_size
    digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
