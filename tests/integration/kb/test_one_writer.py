"""One writer per knowledge base across processes with different LLMOPS_HOMEs (as two pods), one real Milvus
(`milvus-lite server`); and a run with nothing to do, or with bad input, that never loads the model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from kb_helpers import ROOT, job_env, start_job, write_corpus

from llmops.kb.errors import KbAlreadyRunning
from llmops.kb.index import connect, disconnect
from llmops.kb.lease import MilvusLease
from llmops.kb.pipeline import reindex

RESULT = re.compile(r"^LLMOPS_RESULT (.*)$", re.MULTILINE)


def _own(tmp_path, name: str):
    """A directory of its own for one process: its registry copy and its LLMOPS_HOME (another pod, in effect)."""
    (tmp_path / name).mkdir(exist_ok=True)
    return tmp_path / name


def _result(output: str) -> dict:
    found = RESULT.findall(output)
    assert found, output[-3000:]
    return json.loads(found[-1])


def _wait_for(job: subprocess.Popen, pattern: str, timeout_s: float = 600) -> str:
    """Read the job's output until a line matches `pattern`; return what was read."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = job.stdout.readline()
        if not line and job.poll() is not None:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    pytest.fail(f"no line matching {pattern!r}: {''.join(seen)[-3000:]}")


def test_two_homes_one_milvus_never_build_one_knowledge_base_at_once(make_kb, corpus, tmp_path, milvus_lite_server,
                                                                     open_index):
    """A full build holds the lease in Milvus; a second process with another LLMOPS_HOME exits 'already running'
    (status 0, nothing written); SIGKILLed mid-build, the lease expires and a waiting run takes over and builds."""
    write_corpus(corpus, 36)
    kb = make_kb(embedder={"batch_size": 8})
    args = ["--kb", kb.name, "--mode", "full", "--milvus-uri", milvus_lite_server, "--progress-every", "0.5"]
    first = start_job(args, job_env(kb, _own(tmp_path, "a"), LLMOPS_KB_LEASE_TTL_S="3"))
    try:
        _wait_for(first, r"progress .*: embedding into")
        second = subprocess.run([sys.executable, "-m", "llmops.jobs.kb_reindex", *args], cwd=ROOT, timeout=300,
                                env=job_env(kb, _own(tmp_path, "b")), capture_output=True, text=True)
        assert second.returncode == 0, second.stdout + second.stderr
        out = second.stdout + second.stderr
        result = _result(out)
        assert result["already_running"] is True and "pid" in result["reason"], result
        assert "loading the embedder" not in out and "sentence_transformers" not in out
        # The holder keeps working; SIGKILL it (no clean-up runs): its lease expires after the ttl.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        third = subprocess.run([sys.executable, "-m", "llmops.jobs.kb_reindex", *args], cwd=ROOT, timeout=900,
                               env=job_env(kb, _own(tmp_path, "c"), LLMOPS_KB_LEASE_WAIT_S="120"),
                               capture_output=True, text=True)
        assert third.returncode == 0, (third.stdout + third.stderr)[-3000:]
        built = _result(third.stdout)
        assert built["mode"] == "full" and built["rows"] > 0 and not built.get("already_running"), built
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    index = open_index(kb, milvus_lite_server)
    assert index.live_collection() == built["collection"]
    assert index.count(built["collection"]) == built["rows"]


def test_contenders_racing_for_the_lease_get_exactly_one_holder(milvus_lite_server, tmp_path):
    """Eight clients (own connections, threads) claim one knowledge base's lease at the same moment, three rounds:
    one holds it each round, the others get KbAlreadyRunning; released, the next round has a new holder."""
    clients = [connect(milvus_lite_server, tmp_path) for _ in range(8)]
    try:
        for round_ in range(3):
            leases = [MilvusLease(client, "race_kb", ttl_s=30, holder=f"contender {n}") for n, client in
                      enumerate(clients)]
            start, outcomes = threading.Barrier(len(leases)), {}

            def claim(lease: MilvusLease, start: threading.Barrier = start, outcomes: dict = outcomes) -> None:
                start.wait()
                try:
                    lease.acquire(wait_s=0)
                    outcomes[lease.holder] = "held"
                except KbAlreadyRunning:
                    outcomes[lease.holder] = "busy"

            threads = [threading.Thread(target=claim, args=(lease,)) for lease in leases]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            holders = [lease for lease in leases if outcomes.get(lease.holder) == "held"]
            assert len(holders) == 1 and len(outcomes) == len(leases), (round_, outcomes)
            assert holders[0].still_held()
            holders[0].release()
        # Only the last holder's collection and its generation's alias are left behind.
        names = [name for name in clients[0].list_collections() if name.startswith("llmops_lease_race_kb")]
        assert len(names) == 1, names
    finally:
        for client in clients:
            disconnect(client, milvus_lite_server, tmp_path)


def _job_in_fresh_process(args: list[str], env: dict) -> tuple[int, str, list[str]]:
    """Run the job's main() in a new interpreter; return its status, output and which heavy modules it imported."""
    code = ("import sys; from llmops.jobs import kb_reindex; rc = kb_reindex.main(sys.argv[1:]); "
            "print('IMPORTED', [m for m in ('torch', 'sentence_transformers', 'pandas') if m in sys.modules]); "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    out = done.stdout + done.stderr
    imported = re.search(r"IMPORTED (\[.*\])", out)
    return done.returncode, out, (eval(imported.group(1)) if imported else None)  # noqa: S307 (our own print)


def test_nothing_to_do_never_loads_the_model_and_bad_input_fails_before_it(make_kb, corpus, tmp_path,
                                                                          milvus_lite_server, open_index, embedder):
    kb = make_kb()
    index = open_index(kb, milvus_lite_server)
    reindex(kb, "full", index=index, embedder=embedder)
    base = ["--kb", kb.name, "--milvus-uri", milvus_lite_server]

    status, out, imported = _job_in_fresh_process([*base, "--mode", "incremental"], job_env(kb, _own(tmp_path, "same")))
    assert status == 0 and _result(out)["skipped_documents"] == _result(out)["documents"] > 0, out[-2000:]
    assert imported == [], (imported, out[-2000:])  # neither torch, sentence-transformers nor pandas

    # A dry run with nothing to embed says so and measures nothing.
    status, out, imported = _job_in_fresh_process([*base, "--mode", "incremental", "--dry-run"],
                                                  job_env(kb, _own(tmp_path, "dry")))
    assert status == 0 and imported == [] and "would embed 0 documents and 0 chunks" in out, out[-2000:]

    # An unknown model name: refused in the planning step, before any load, with the fix; nothing written.
    unknown = make_kb(embedder={"model": "no-such-embedder-model"})
    status, out, imported = _job_in_fresh_process([*base, "--mode", "incremental"], job_env(unknown, _own(tmp_path, "m")))
    assert status == 2 and "'no-such-embedder-model' is not a local directory" in out and "fix:" in out, out[-2000:]
    assert imported == []

    # A declared dimension that contradicts the live collection: refused before any load.
    wrong = make_kb(embedder={"dimension": 768, "model": str(tmp_path / "model768")})
    (tmp_path / "model768" / "1_Pooling").mkdir(parents=True)
    (tmp_path / "model768" / "config.json").write_text("{}")
    (tmp_path / "model768" / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "model768" / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 384}')
    status, out, imported = _job_in_fresh_process([*base, "--mode", "incremental"], job_env(wrong, _own(tmp_path, "d")))
    assert status == 2 and "produces 384-d vectors (its files say so)" in out and "declares dimension 768" in out, \
        out[-2000:]
    assert imported == []

    # A missing source directory: refused before any load, nothing changed.
    gone = make_kb(source={"uri": str(tmp_path / "no-such-dir")})
    status, out, imported = _job_in_fresh_process([*base, "--mode", "incremental"], job_env(gone, _own(tmp_path, "s")))
    assert status == 2 and "does not exist or is not a directory" in out and imported == [], out[-2000:]
    assert index.count(index.live_collection()) == reindex(kb, "incremental", index=index, embedder=embedder).rows

    # An unreachable Milvus server: transient (exit 75, retried by the task), before any load.
    status, out, imported = _job_in_fresh_process(
        ["--kb", kb.name, "--mode", "incremental", "--milvus-uri", "http://127.0.0.1:9"], job_env(kb, _own(tmp_path, "u")))
    assert status == 75 and "cannot be reached" in out and "fix:" in out and imported == [], out[-2000:]
