"""model_rollout wired as a DAG (`airflow dags test`, local runtime): what must hold before anything is created.

The deploy/analyse/decide path through the same DAG with real vLLM is in test_rollout_dag_vllm.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import dag_env, dags_test


@pytest.fixture(scope="module")
def env(rollout_tmp, rollout_store, airflow_db, venvs):
    return dag_env(rollout_tmp / "dag-home", rollout_tmp / "store", venvs)


def nothing_serves(env: dict) -> bool:
    state = Path(env["LLMOPS_HOME"], "serving", "tiny-llama-chat", "state.json")
    if state.is_file():
        data = json.loads(state.read_text())
        if data.get("stable") or data.get("canary"):
            return False
    return not Path(env["LLMOPS_HOME"], "serving", "tiny-llama-chat", "rollout.json").exists()  # no record


def test_dry_run_passes_preflight_and_creates_nothing(env, rollout_store):
    _, uris = rollout_store
    rc, log = dags_test(env, {"version": uris["healthy"], "dry_run": True})
    assert rc == 0, log[-4000:]
    # no stable yet: the canary Deployment, 3 Services, HPA, PodDisruptionBudget, ServiceMonitor, HTTPRoute
    assert "pre-flight passed" in log and "dry run: would apply 8 objects" in log
    assert nothing_serves(env)


def test_fp8_on_the_a10_deployment_is_refused_in_preflight(env, rollout_store):
    _, uris = rollout_store
    rc, log = dags_test(env, {"version": uris["fp8"], "steps": [100], "analysis_window_s": 5})
    assert rc != 0
    assert "pre-flight refused" in log and "needs compute capability 8.9+" in log and "fix:" in log
    assert nothing_serves(env)


def test_out_of_range_form_values_are_refused_before_any_task(env, rollout_store):
    _, uris = rollout_store
    rc, log = dags_test(env, {"version": uris["healthy"], "steps": [0, 100]})
    assert rc != 0
    assert "steps" in log and "minimum" in log
    assert "pre-flight passed" not in log
    assert nothing_serves(env)
