"""Fixtures for the kb_reindex integration tests: real Milvus Lite, a real Milvus standalone server,
the packaged MiniLM through sentence-transformers.

These tests embed, so they run in the worker environment:
    .llmops/venvs/worker/bin/python -m pytest tests/integration/kb
(the Airflow environment has no torch; there the whole folder is skipped with that reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kb_helpers import ROOT, SAMPLE, STANDINS_PYTHON, free_port, stop_group  # noqa: E402

sys.path.insert(0, str(ROOT / "include"))

try:
    import sentence_transformers  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]  # airflow env: no torch; `make test` runs this folder in the worker env

@pytest.fixture(scope="session")
def minilm():
    from llmops.kb.embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", batch_size=32)


@pytest.fixture
def embedder(minilm):
    """The real MiniLM, counted: tests assert on how many chunks were embedded."""
    from support.embedders import CountingEmbedder

    return CountingEmbedder(minilm)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The `milvus` package's standalone server on 127.0.0.1 (about 10 s to start)."""
    if not STANDINS_PYTHON.exists():
        pytest.fail(f"{STANDINS_PYTHON} is missing; run scripts/envs.sh standins")
    data = tmp_path_factory.mktemp("milvus-server")
    port, etcd, peer = free_port(), free_port(), free_port()
    log = open(data / "launcher.log", "w")  # noqa: SIM115 (closed in the finalizer)
    proc = subprocess.Popen([str(STANDINS_PYTHON), str(Path(__file__).with_name("milvus_standalone.py")),
                             str(data / "d"), str(port), str(etcd), str(peer)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"milvus standalone exited: {(data / 'launcher.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
                MilvusClient(uri=uri, timeout=5).list_collections()
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail("milvus standalone did not answer within 120 s")
                time.sleep(1)
        yield uri
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture(scope="session")
def milvus_lite_server(tmp_path_factory):
    """The local runtime's Milvus: a Milvus Lite data directory served by `milvus-lite server` (about 2 s)."""
    from support.milvus import milvus_lite_server

    with milvus_lite_server(tmp_path_factory.mktemp("milvus-lite") / "milvus.db") as uri:
        yield uri


@pytest.fixture(params=["lite", "server"])
def milvus_uri(request, tmp_path):
    """Each test runs on Milvus Lite (a file) and on the standalone server (a fresh alias namespace)."""
    if request.param == "lite":
        return str(tmp_path / "milvus.db")
    return request.getfixturevalue("milvus_server")


@pytest.fixture
def corpus(tmp_path) -> Path:
    target = tmp_path / "docs"
    shutil.copytree(SAMPLE, target)
    return target


_alias_counter = iter(range(1, 1_000_000))


@pytest.fixture
def make_kb(corpus, tmp_path):
    """A KnowledgeBase like the registry's product-docs, over a private copy of the sample documents."""
    from llmops.config import load_file

    registry = load_file(ROOT / "include" / "config" / "knowledge_bases.yaml")
    base = next(kb for kb in registry.knowledge_bases if kb.name == "product-docs")
    alias = f"kbt_{os.getpid()}_{int(time.time() * 1000) % 10_000_000}_{next(_alias_counter)}"

    def make(**changes):
        data = base.model_dump()
        data["alias"] = alias
        data["source"]["uri"] = str(corpus)
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key].update(value)
            else:
                data[key] = value
        return type(base).model_validate(data)

    return make


@pytest.fixture
def open_index():
    """KbIndex over a MilvusClient; closed after the test (a Lite file is held by one process only)."""
    from llmops.kb.index import KbIndex, connect, disconnect

    opened = []

    def make(kb, uri):
        client = connect(uri, Path("/nonexistent"))
        opened.append((client, uri))
        index = KbIndex.for_kb(client, kb)
        index.close = lambda: disconnect(client, uri, Path("/nonexistent"))
        return index

    yield make
    for client, uri in opened:
        with contextlib.suppress(Exception):
            disconnect(client, uri, Path("/nonexistent"))

