"""Blue/green full builds: validation gates the alias, a killed build never touches it, rollback, retention."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from kb_helpers import job_env, start_job, write_corpus

from llmops.kb.errors import IndexValidationError, RollbackError
from llmops.kb.pipeline import reindex, search


def test_full_builds_rotate_versions_and_roll_back(make_kb, milvus_uri, open_index, embedder):
    kb = make_kb(retention=2)
    index = open_index(kb, milvus_uri)
    summaries = [reindex(kb, "full", index=index, embedder=embedder) for _ in range(3)]
    assert [s.collection for s in summaries] == [f"{kb.alias}_v{n}" for n in (1, 2, 3)]
    assert summaries[2].previous_collection == f"{kb.alias}_v2"
    assert summaries[2].dropped_collections == [f"{kb.alias}_v1"]
    assert index.versions() == [2, 3] and index.live_collection() == f"{kb.alias}_v3"
    assert all(s.recall == 1.0 and s.rows == s.embedded_chunks for s in summaries)

    previous, current = index.rollback()
    assert (previous, current) == (f"{kb.alias}_v3", f"{kb.alias}_v2")
    assert search(kb, index, embedder, "Is Orbit free?", limit=1)[0]["doc_id"] == "faq/pricing.txt"
    with pytest.raises(RollbackError, match="no earlier version.*fix:"):
        index.rollback()
    # The next build replaces the version that was rolled back from instead of resurrecting it.
    rebuilt = reindex(kb, "full", index=index, embedder=embedder)
    assert rebuilt.dropped_collections[0] == f"{kb.alias}_v3"
    assert rebuilt.collection == f"{kb.alias}_v4" and index.versions() == [2, 4]


def test_failed_golden_queries_keep_the_alias(make_kb, milvus_uri, open_index, embedder):
    kb = make_kb()
    index = open_index(kb, milvus_uri)
    reindex(kb, "full", index=index, embedder=embedder)
    strict = make_kb(min_recall=1.0, golden_queries=[
        {"query": "Is Orbit free to use?", "expected_document": "guides/installation.md"}])
    with pytest.raises(IndexValidationError, match=r"recall@3 is 0.00.*alias .* was not moved"):
        reindex(strict, "full", index=index, embedder=embedder)
    assert index.live_collection() == f"{kb.alias}_v1"
    assert index.versions() == [1, 2]  # the rejected build is left for inspection ...
    done = reindex(kb, "full", index=index, embedder=embedder)
    assert done.dropped_collections == [f"{kb.alias}_v2"]  # ... and dropped by the next build
    assert index.live_collection() == done.collection == f"{kb.alias}_v3"


def _run_until_mid_embedding(job, kb, sig: int) -> tuple[list[str], float | None]:
    """Read the job's log; send `sig` to its group once the heartbeat shows the build half done."""
    seen, first_heartbeat, started = [], None, time.monotonic()
    mid = re.compile(rf"progress {kb.name}: embedding into {kb.alias}_v\d+, (\d+)/(\d+) chunks")
    try:
        for line in job.stdout:
            seen.append(line)
            if first_heartbeat is None and f"progress {kb.name}: " in line:
                first_heartbeat = time.monotonic() - started
            match = mid.search(line)
            if match and 0 < int(match.group(1)) < int(match.group(2)):
                os.killpg(job.pid, sig)  # mid-build, between two batches
                break
            assert time.monotonic() - started < 300, "".join(seen[-20:])
        seen.extend(job.stdout)
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    return seen, first_heartbeat


def test_stopped_or_killed_full_builds_never_touch_the_alias_and_leave_nothing_behind(
        make_kb, corpus, tmp_path, milvus_lite_server, open_index, embedder):
    write_corpus(corpus, 36)
    kb = make_kb(embedder={"batch_size": 8})
    index = open_index(kb, milvus_lite_server)
    first = reindex(kb, "full", index=index, embedder=embedder)
    old = index.live_collection()
    env = job_env(kb, tmp_path)
    args = ["--kb", kb.name, "--mode", "full", "--milvus-uri", milvus_lite_server, "--progress-every", "0.5"]

    # SIGTERM (Airflow's on_kill, a pod's termination): it says what it did and drops the unfinished version.
    seen, first_heartbeat = _run_until_mid_embedding(start_job(args, env), kb, signal.SIGTERM)
    log = "".join(seen)
    assert first_heartbeat is not None and first_heartbeat < 10, log[-3000:]
    assert re.search(r"ETA \d+", log) and "chunks/s" in log
    assert re.search(rf"{kb.name}: stopped while embedding into {kb.alias}_v2, \d+/\d+ chunks", log), log[-3000:]
    assert f"dropped the unfinished {kb.alias}_v2; the alias {kb.alias} still points at {old}" in log
    assert index.live_collection() == old and index.versions() == [1]

    # SIGKILL: nothing can run; the half-built version stays unpublished until the next run of any mode.
    seen, _ = _run_until_mid_embedding(start_job(args, env), kb, signal.SIGKILL)
    assert index.live_collection() == old
    partial = f"{kb.alias}_v2"  # the number the stopped build had, freed when it was dropped
    assert index.versions() == [1, 2] and index.count(partial) < first.rows, "".join(seen[-20:])
    assert index.count(old) == first.rows
    hits = search(kb, index, embedder, "How do I install Orbit with pip?", limit=1)
    assert hits[0]["doc_id"] == "guides/installation.md"

    embedder.reset()
    done = reindex(kb, "incremental", index=index, embedder=embedder)
    assert done.mode == "incremental" and done.dropped_collections == [partial] and embedder.texts == 0
    assert index.versions() == [1] and index.live_collection() == old


def test_pdf_documents_are_indexed(make_kb, corpus, tmp_path, open_index, embedder):
    from llmops.kb.loaders import load_pdf
    from support.pdf import text_pdf

    (corpus / "guides" / "sla.pdf").write_bytes(
        text_pdf([["Service level agreement", "Orbit support answers priority one tickets within four hours."]]))
    with open(corpus / "guides" / "sla.pdf", "rb") as stream:
        assert "priority one tickets" in " ".join(load_pdf(stream, "sla.pdf"))
    kb = make_kb()
    index = open_index(kb, str(tmp_path / "pdf.db"))
    summary = reindex(kb, "full", index=index, embedder=embedder)
    assert summary.failed == [] and summary.embedded_documents == 13
    hits = search(kb, index, embedder, "how fast does support answer priority one tickets", limit=1)
    assert hits[0]["doc_id"] == "guides/sla.pdf"


def test_a_small_knowledge_base_shows_progress_batch_by_batch(make_kb, tmp_path, open_index, minilm):
    """Fewer chunks than one write (flush) of the writer: the heartbeat's chunk count still moves with every
    embedder batch instead of jumping from 0/N to N/N at the end."""
    from llmops.kb.progress import Progress

    lines: list[str] = []

    class Recorded(Progress):  # the real Progress; only remembers the line the heartbeat would log
        def advance(self, documents: int = 0, chunks: int = 0, chars: int = 0) -> None:
            super().advance(documents, chunks, chars)
            if chunks and self.chunks_total:
                lines.append(self.line())

    kb = make_kb(embedder={"batch_size": 4})
    index = open_index(kb, str(tmp_path / "progress.db"))
    summary = reindex(kb, "full", index=index, embedder=minilm, progress=Recorded(kb.name))
    total = summary.chunks_to_embed
    assert 8 < total < 64, total  # one flush of the writer (64 chunks) holds the whole knowledge base
    done = [int(re.search(r", (\d+)/\d+ chunks", line).group(1)) for line in lines]
    assert done == [*range(4, total, 4), total], lines
    assert f", 4/{total} chunks" in lines[0] and "chunks/s" in lines[0] and "ETA" in lines[0]
