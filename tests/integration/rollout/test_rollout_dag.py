"""model_rollout wired as a DAG (`airflow dags test`, local runtime): what must hold before anything is created.

The full deploy/analyse/decide path through the DAG (deferrable readiness included) runs in
scripts/demo_model_rollout.sh and in the runner tests against real vLLM; here each run is ~30 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.settings import PROJECT_ROOT


@pytest.fixture(scope="module")
def dag_env(rollout_tmp, rollout_store, airflow_db, venvs):
    home = rollout_tmp / "dag-home"
    return {**os.environ, "LLMOPS_HOME": str(home), "LLMOPS_STORE_URI": (rollout_tmp / "store").as_uri(),
            "LLMOPS_RUNTIME": "local", "LLMOPS_WORKER_PYTHON": str(venvs / "worker" / "bin" / "python"),
            "LLMOPS_SERVING_PYTHON": str(venvs / "serving" / "bin" / "python"),
            "PYTHONPATH": os.pathsep.join(str(PROJECT_ROOT / p) for p in ("include", "plugins", "dags"))}


def dags_test(env: dict, conf: dict) -> tuple[int, str]:
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "test", "model_rollout", "-c", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def nothing_serves(env: dict) -> bool:
    state = Path(env["LLMOPS_HOME"], "serving", "tiny-llama-chat", "state.json")
    if state.is_file():
        data = json.loads(state.read_text())
        if data.get("stable") or data.get("canary"):
            return False
    return not Path(env["LLMOPS_HOME"], "serving", "tiny-llama-chat", "rollout.lock").exists()


def test_dry_run_passes_preflight_and_creates_nothing(dag_env, rollout_store):
    _, uris = rollout_store
    rc, log = dags_test(dag_env, {"version": uris["healthy"], "dry_run": True})
    assert rc == 0, log[-4000:]
    assert "pre-flight passed" in log and "dry run: would apply 7 objects" in log
    assert nothing_serves(dag_env)


def test_fp8_on_the_a10_deployment_is_refused_in_preflight(dag_env, rollout_store):
    _, uris = rollout_store
    rc, log = dags_test(dag_env, {"version": uris["fp8"], "steps": [100], "analysis_window_s": 5})
    assert rc != 0
    assert "pre-flight refused" in log and "needs compute capability 8.9+" in log and "fix:" in log
    assert nothing_serves(dag_env)


def test_out_of_range_form_values_are_refused_before_any_task(dag_env, rollout_store):
    _, uris = rollout_store
    rc, log = dags_test(dag_env, {"version": uris["healthy"], "steps": [0, 100]})
    assert rc != 0
    assert "steps" in log and "minimum" in log
    assert "pre-flight passed" not in log
    assert nothing_serves(dag_env)
