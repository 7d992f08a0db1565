"""Helpers shared by the kb integration tests (a unique module name: `conftest` is taken by tests/)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

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


def write_corpus(root: Path, documents: int) -> None:
    """`documents` notes of four paragraphs each (one or two chunks apiece): enough to make a build take a while."""
    topics = ["scheduling", "retries", "alerts", "storage", "permissions", "upgrades", "metrics", "backups"]
    for number in range(documents):
        topic = topics[number % len(topics)]
        body = "\n\n".join(
            f"Paragraph {p} of note {number} about {topic}. " + " ".join(
                f"The {topic} subsystem handles case {number}-{p}-{w} carefully." for w in range(6))
            for p in range(4))
        (root / f"note-{number:03d}.md").write_text(f"# Note {number}: {topic}\n\n{body}\n")


def job_env(kb, tmp_path: Path, **extra: str) -> dict:
    """Environment of a `python -m llmops.jobs.kb_reindex` subprocess whose registry holds just `kb`."""
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "knowledge_bases.yaml").write_text(yaml.safe_dump(
        {"knowledge_bases": [kb.model_dump(mode="json")]}, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if key != "LLMOPS_MILVUS_URI"}
    env.update(PYTHONPATH=str(ROOT / "include"), LLMOPS_HOME=str(tmp_path / "home"), LLMOPS_CONFIG_DIR=str(config),
               **extra)
    return env


def start_job(args: list[str], env: dict, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "llmops.jobs.kb_reindex", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)
