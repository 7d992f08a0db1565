"""A rollout task SIGKILLed mid-analysis under the real scheduler (tests/airflow's stack: LocalExecutor,
triggerer, local runtime with real vLLM on CPU) is retried by Airflow, and the retry resumes the rollout from
its record instead of starting a new one over the live canary: one rollout, one report, consistent state.

The version is the stack's trained demo model, published to the stack's store here. Golden prompts and latency
are not what this test is about (a fresh canary has no stable to compare with on a first deployment, and the
demo model's greedy text differs across CPUs), so the run's thresholds let it pass on the evidence that it
served; the analysis window is long enough to be killed in."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

DEPLOYMENT = "tiny-llama-chat"


def record(home: Path) -> dict | None:
    path = home / "serving" / DEPLOYMENT / "rollout.json"
    try:
        return json.loads(path.read_text())["record"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_rollout_killed_mid_analysis_is_resumed_by_airflows_retry(airflow_stack, rest_runs):
    from llmops.artefacts import Manifest, open_store
    from llmops.serving.local import LocalRuntime
    from llmops.serving.processes import process_alive, tagged_processes

    airflow_stack.wait_for_run(*rest_runs["rollout"], timeout=900)  # that run must not see this version
    home = Path(airflow_stack.env["LLMOPS_HOME"])
    model = airflow_stack.demo_model  # the stack's trained demo model, as published to its hub mirror
    assert model is not None and (model / "config.json").exists(), model
    store = open_store(airflow_stack.env["LLMOPS_STORE_URI"])
    manifest = Manifest.for_directory(model, model="tiny-llama", source_repo="llmops-demo/tiny-llama",
                                      source_sha="d" * 40, recipe="unquantized", serving_runtime="vllm",
                                      quantization_format="none", min_compute_capability=0.0, max_model_len=512)
    uri = store.publish(model, manifest.prefix, manifest)
    backend = LocalRuntime(home, DEPLOYMENT, "tiny-llama", serving_python=airflow_stack.env["LLMOPS_SERVING_PYTHON"])
    run_id = airflow_stack.trigger("model_rollout", {
        "deployment": DEPLOYMENT, "version": uri, "steps": [100], "analysis_window_s": 240,
        "thresholds": {"min_golden_pass_rate": 0.0, "max_p95_latency_ratio": 10.0, "max_error_rate": 1.0}})
    try:
        deadline = time.monotonic() + 1800  # a vLLM start takes minutes on a loaded 2-core machine
        while True:
            seen = record(home)
            if seen and seen["run_id"] == run_id and (seen.get("progress") or {}).get("action", {}).get("kind") == \
                    "analyse" and seen["owner"]["pid"]:
                break
            assert time.monotonic() < deadline, f"the analysis never started: {seen}"
            time.sleep(1)
        time.sleep(10)  # inside the analysis window
        killed = seen["owner"]["pid"]
        canary = backend.load().canary
        os.kill(killed, signal.SIGKILL)
        state = airflow_stack.wait_for_run("model_rollout", run_id, timeout=1800)
        summary = airflow_stack.run_summary("model_rollout", run_id)
        assert "(try 2)" in summary, summary  # Airflow retried the killed task
        final = record(home)
        assert final["run_id"] == run_id and final["status"] == "finished", final
        timeline = [event for _, _, event, _ in final["progress"]["plan"]["timeline"]]
        assert timeline.count("canary_deployed") == 1, timeline  # resumed: no second canary, no second plan
        reports = sorted(Path(store.root_uri.removeprefix("file://")).glob(
            f"**/rollouts/{DEPLOYMENT}/{run_id}*/report.md"))
        assert len(reports) == 1, reports
        assert final["outcome"].upper() in reports[0].read_text()
        served = backend.load()
        assert served.canary is None and backend.lock_holder() is None
        if final["outcome"] == "promoted":
            assert state == "success" and served.stable.version == uri and served.stable.pid == canary.pid
        else:  # e.g. the canary died with its killed owner: rolled back, nothing left serving
            assert state == "failed" and served.stable is None, final["reason"]
            assert not process_alive(canary.pid) and tagged_processes(canary.tag, canary.workdir) == []
    finally:
        backend.stop_all()
