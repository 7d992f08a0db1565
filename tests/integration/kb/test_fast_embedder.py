"""The local embedder's ONNX Runtime backend: real export of the packaged MiniLM, real ONNX Runtime, real Milvus Lite."""

from __future__ import annotations

import logging
import math
import sys

import pytest

from llmops.config.schema import Embedder
from llmops.kb.embedders import EmbedderError, build_embedder
from llmops.kb.pipeline import reindex

SENTENCES = ["How do I install Orbit with pip?", "The scheduler retries a failed job after five minutes.",
             "Mute Slack notifications during a maintenance window.", "Only administrators can create API tokens."]


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_int8_onnx_backend_embeds_like_torch_and_exports_once(minilm, tmp_path, caplog):
    cache = tmp_path / "cache"
    spec = Embedder(backend="onnx", quantize="int8", dimension=384)
    fast = build_embedder(spec, cache_dir=cache)
    torch_vectors, fast_vectors = minilm.embed(SENTENCES), fast.embed(SENTENCES)
    assert all(_cosine(t, f) > 0.99 for t, f in zip(torch_vectors, fast_vectors, strict=True))
    assert fast.embed(SENTENCES) == fast_vectors  # deterministic, like the torch backend

    (export,) = [p for p in cache.iterdir()]  # one published export, no temporary directory left behind
    assert export.name.startswith("all-minilm-l6-v2-onnx-int8-") and (export / "export.json").is_file()
    written = (export / "model.onnx").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="llmops.kb.onnx_backend"):
        again = build_embedder(spec, cache_dir=cache)
    assert "reused" in caplog.text and (export / "model.onnx").stat().st_mtime_ns == written
    assert again.embed(SENTENCES) == fast_vectors
    # int8 activations are quantized per batch (dynamic scales), so a sentence's vector moves a little with
    # the batch it is in; it stays as close to torch's as in any batch.
    assert _cosine(again.embed(SENTENCES[:1])[0], torch_vectors[0]) > 0.99

    (export / "model.onnx").write_bytes(b"truncated by a full disk")  # a damaged cache names its fix
    with pytest.raises(EmbedderError, match=f"fix: delete {export}"):
        build_embedder(spec, cache_dir=cache)


def test_backend_auto_measures_once_per_machine_and_runs_the_faster(minilm, tmp_path, caplog):
    """`backend: auto`: torch and ONNX int8 timed (CPU time) on this CPU at first use, the choice cached with the
    numbers and the reason, reused afterwards; whichever runs, its vectors agree with torch's."""
    import json

    from llmops.kb.onnx_backend import AUTO_MIN_SPEEDUP, cpu_name

    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="llmops.kb.embedders"):
        chosen = build_embedder(Embedder(backend="auto"), cache_dir=cache)
    (record,) = cache.glob("choice-*.json")
    choice = json.loads(record.read_text())
    assert choice["cpu"] == cpu_name() and choice["torch_cpu_s"] > 0 and choice["onnx_int8_cpu_s"] > 0
    faster = choice["speedup"] >= AUTO_MIN_SPEEDUP
    assert (chosen.backend, chosen.quantize) == (("onnx", "int8") if faster else ("torch", None)), choice
    assert f"embedder backend auto on {choice['cpu']}: {'onnx-int8' if faster else 'torch'} runs" in caplog.text
    assert all(_cosine(t, f) > 0.99 for t, f in zip(minilm.embed(SENTENCES), chosen.embed(SENTENCES), strict=True))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="llmops.kb.embedders"):
        again = build_embedder(Embedder(backend="auto"), cache_dir=cache)
    assert "measured before, cached in" in caplog.text and again.backend == chosen.backend
    assert Embedder(backend="auto").identity() == {"kind": "sentence-transformers", "model": "all-MiniLM-L6-v2",
                                                   "backend": "auto"}  # one fingerprint whichever CPU chose what


def test_switching_the_backend_forces_a_full_rebuild(make_kb, tmp_path, open_index, embedder):
    kb = make_kb()
    index = open_index(kb, str(tmp_path / "milvus.db"))
    assert reindex(kb, "incremental", index=index, embedder=embedder).mode == "full"  # first build, torch

    fast_kb = make_kb(embedder={"backend": "onnx"})
    fast = build_embedder(fast_kb.embedder, cache_dir=tmp_path / "cache")
    summary = reindex(fast_kb, "incremental", index=index, embedder=fast)
    assert summary.mode == "full" and "fingerprint changed" in summary.reason  # never mixes two backends' vectors
    assert index.fingerprint(index.live_collection())["embedder"]["backend"] == "onnx"
    assert summary.recall == 1.0 and index.versions() == [1, 2]
    again = reindex(fast_kb, "incremental", index=index, embedder=fast)
    assert again.mode == "incremental" and again.embedded_chunks == 0


def test_missing_onnx_runtime_fails_before_the_model_loads_and_names_the_fix(monkeypatch, tmp_path):
    """onnxruntime is installed here, so its absence is simulated by blocking its import (sys.modules)."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EmbedderError, match="onnxruntime.*fix: run the job in the worker environment.*backend: torch"):
        build_embedder(Embedder(backend="onnx"), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_unwritable_export_cache_names_the_fix(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(EmbedderError, match="cannot be created.*fix: point LLMOPS_HOME at a writable directory"):
        build_embedder(Embedder(backend="onnx"), cache_dir=blocker / "cache")


def test_sigterm_during_the_first_onnx_export_exits_143_leaves_nothing_and_the_next_run_continues(make_kb, tmp_path):
    """Airflow's on_kill or a pod's termination during the one-time export: exit 143 (resumable, not 'permanent'),
    no half-written export in the cache, and the next run exports and builds."""
    import json
    import os
    import re
    import signal
    import subprocess

    from kb_helpers import ROOT, job_env, start_job

    kb = make_kb(embedder={"backend": "onnx", "quantize": "int8"})
    env = job_env(kb, tmp_path)
    args = ["--kb", kb.name, "--mode", "full", "--milvus-uri", str(tmp_path / "milvus.db")]
    job = start_job(args, env)
    seen = []
    try:
        for line in job.stdout:
            seen.append(line)
            if "exporting all-MiniLM-L6-v2 to ONNX" in line:
                job.send_signal(signal.SIGTERM)
                break
        output = "".join(seen) + job.communicate(timeout=600)[0]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert job.returncode == 143, output[-3000:]
    assert "stopped by signal SIGTERM" in output and "not retried" not in output and "backend: torch" not in output
    cache = tmp_path / "home" / "cache" / "embedders"
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".tmp-")] == [], list(cache.iterdir())
    assert not any((p / "export.json").exists() for p in cache.iterdir())

    done = subprocess.run([sys.executable, "-m", "llmops.jobs.kb_reindex", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads(re.findall(r"^LLMOPS_RESULT (.*)$", done.stdout, re.MULTILINE)[-1])
    assert result["mode"] == "full" and result["rows"] > 0
    assert [p.name for p in cache.iterdir() if (p / "export.json").is_file()]
