"""Readers are never locked out: on the local runtime's served Milvus, a second process keeps searching the live
alias while a full rebuild runs, gets the live version's answers throughout, and sees the new version once the
alias moves. A plain Milvus Lite file held by a run fails a reader at once, before any model is loaded. The
documented CLI runs as written and answers fast once the model is loaded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from kb_helpers import ROOT, job_env, start_job, write_corpus

from llmops.jobs._cli import parse_result
from llmops.kb.pipeline import reindex

pytestmark = pytest.mark.slow

QUERY = "How do I install Orbit with pip?"


def test_search_answers_from_the_live_version_throughout_a_full_rebuild(make_kb, corpus, tmp_path,
                                                                         milvus_lite_server, open_index, embedder):
    write_corpus(corpus, 48)
    kb = make_kb(embedder={"batch_size": 8})
    index = open_index(kb, milvus_lite_server)
    first = reindex(kb, "full", index=index, embedder=embedder)
    live = index.live_collection()
    vector = embedder.embed([QUERY])
    expected = [(hit["doc_id"], hit["chunk_index"]) for hit in index.search(kb.alias, vector, 3)[0]]
    new_text = "Orbit also installs with the orbit-setup wizard on every platform."
    (corpus / "guides" / "installation.md").write_text(
        (corpus / "guides" / "installation.md").read_text() + f"\n\n## Wizard\n\n{new_text}\n")

    # The job's registry names a Milvus Lite file; LLMOPS_MILVUS_URI serves it, as on the local runtime.
    kb_file = kb.model_copy(update={"milvus": kb.milvus.model_copy(update={"uri": "kb.db"})})
    job = start_job(["--kb", kb.name, "--mode", "full", "--progress-every", "1"],
                    job_env(kb_file, tmp_path, LLMOPS_MILVUS_URI=milvus_lite_server))
    answers, during_build = 0, 0
    try:
        while job.poll() is None:
            hits = index.search(kb.alias, vector, 3)[0]
            if index.live_collection() == live:
                assert [(hit["doc_id"], hit["chunk_index"]) for hit in hits] == expected
                assert all(new_text not in hit["text"] for hit in hits)
                answers += 1
                during_build += 2 in index.versions()  # the next version exists: the build is under way
            time.sleep(0.2)
        output = job.stdout.read()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, output[-4000:]
    assert during_build >= 3, f"only {during_build} of {answers} answers were given while v2 was being built"
    assert index.live_collection() == f"{kb.alias}_v2" != live
    hits = index.search(kb.alias, vector, 3)[0]
    assert any(new_text in hit["text"] for hit in hits)
    assert index.count(live) == first.rows  # the previous version is kept for rollback


def test_a_lite_file_held_by_a_run_fails_a_reader_before_any_model_load(make_kb, tmp_path, open_index, embedder):
    kb = make_kb(milvus={"uri": str(tmp_path / "held.db")})
    index = open_index(kb, kb.milvus.uri)  # this process holds the file, as a running re-index would
    reindex(kb, "full", index=index, embedder=embedder)
    started = time.monotonic()
    job = start_job(["--kb", kb.name, "--mode", "search", "--query", QUERY], job_env(kb, tmp_path))
    output = job.communicate(timeout=120)[0]
    assert job.returncode == 75, output  # transient: retried once the holder is done
    assert "is held by another process" in output and "milvus-lite server --data-dir" in output
    assert "LLMOPS_MILVUS_URI" in output
    assert "embedder" not in output and "sentence_transformers" not in output  # failed before loading the model
    assert time.monotonic() - started < 60


def test_the_documented_cli_searches_in_under_two_seconds_once_warm(make_kb, tmp_path, open_index, embedder):
    """`scripts/kb` as the README writes it, while `make ui` serves $LLMOPS_HOME's Milvus: the worker environment
    finds that server by its record (no LLMOPS_MILVUS_URI in its environment), the answer is timed."""
    from llmops.kb.index import LOCAL_SERVER_RECORD
    from support.milvus import milvus_lite_server

    kb = make_kb()  # its milvus.uri is a Lite file: the recorded server replaces it, as under make ui
    env = job_env(kb, tmp_path, LLMOPS_WORKER_PYTHON=sys.executable)
    env.pop("PYTHONPATH")  # the wrapper sets it
    home = Path(env["LLMOPS_HOME"])
    with milvus_lite_server(home / "milvus" / "milvus.db", record=home / LOCAL_SERVER_RECORD) as served:
        reindex(kb, "full", index=open_index(kb, served), embedder=embedder)
        done = subprocess.run([str(ROOT / "scripts" / "kb"), "--kb", kb.name, "--mode", "search", "--query",
                               "Which role can create API tokens?"], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
    assert not (home / LOCAL_SERVER_RECORD).exists()  # removed with the server
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("1. reference/permissions.html (chunk ")
    result = parse_result(done.stdout)
    assert result["answer_s"] < 2.0 and result["hits"][0]["doc_id"] == "reference/permissions.html"
    assert "answered in" in done.stderr
