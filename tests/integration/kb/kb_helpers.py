"""Helpers shared by the kb integration tests (a unique module name: `conftest` is taken by tests/)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "include" / "sample_kb" / "product-docs"
STANDINS_PYTHON = Path(os.environ.get("LLMOPS_HOME", ROOT / ".llmops")) / "venvs" / "standins" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rows_of(index, collection: str, doc_id: str) -> list[dict]:
    return index.client.query(collection, filter=f'doc_id == "{doc_id}"', output_fields=["chunk_index", "doc_hash"],
                              consistency_level="Strong")
