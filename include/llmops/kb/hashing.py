"""Content hashes and deterministic primary keys."""

from __future__ import annotations

import hashlib
import json
from typing import IO

_BLOCK = 1024 * 1024


def content_hash(stream: IO[bytes]) -> str:
    """sha256 of a stream, read in 1 MiB blocks (memory stays flat in file size)."""
    digest = hashlib.sha256()
    while block := stream.read(_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def chunk_key(doc_id: str, chunk_index: int) -> str:
    """Primary key of a chunk: the same (document, chunk) always lands on the same row, so writes are upserts."""
    return hashlib.sha256(f"{doc_id}\x1f{chunk_index}".encode()).hexdigest()


def text_hash(text: str) -> str:
    """Hash of what is embedded: an unchanged chunk of a changed document keeps its vector."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint_digest(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
