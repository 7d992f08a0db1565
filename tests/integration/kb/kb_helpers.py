"""Helpers shared by the kb integration tests (a unique module name: `conftest` is taken by tests/)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
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


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the launcher's process group (the milvus binary is in it), SIGKILL what is left after grace_s.

    Waiting for the launcher alone is not enough: it dies at once while milvus shuts down slowly.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)
