"""Deterministic primary keys and digests of what is embedded (documents are hashed by llmops.hashing)."""

from __future__ import annotations

import hashlib


def chunk_key(doc_id: str, chunk_index: int) -> str:
    """Primary key of a chunk: the same (document, chunk) always lands on the same row, so writes are upserts."""
    return hashlib.sha256(f"{doc_id}\x1f{chunk_index}".encode()).hexdigest()


def text_hash(text: str) -> str:
    """Hash of what is embedded: an unchanged chunk of a changed document keeps its vector."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
