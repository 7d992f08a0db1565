"""One real Airflow for the tests in tests/airflow: api-server, scheduler, dag-processor, triggerer on
127.0.0.1 with the project's DAGs and the local stand-ins, started by the same code as `make ui`
(support.airflow_stack). Pipeline state lives in a fresh temporary folder; the trained demo model is cached
under $LLMOPS_HOME/test/cache.

The registry is include/config plus one model whose repository is not on the hub mirror (a typo in
`repo_id`, as a user would make): its refresh must end failed; tiny-llama-chat's rollout defaults differ from
the schema's (REGISTRY_ROLLOUT), so a trigger that leaves them out shows which ones applied."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from support._proc import ROOT
from support.airflow_stack import local_airflow

HERE = Path(__file__).resolve().parent

MISSING_MODEL = "not-on-the-hub"
# tiny-llama-chat's rollout defaults in the stack's registry: none equals the schema's default
REGISTRY_ROLLOUT = {"steps": [50, 100], "analysis_window_s": 30,
                    "thresholds": {"max_p95_latency_ratio": 4.0, "max_error_rate": 0.05, "min_golden_pass_rate": 0.5}}  # a model of the test registry whose repo_id the hub mirror does not have
# tests/conftest.py points AIRFLOW_HOME and friends at the in-process test DB; the stack sets its own.
_INHERITED = {key: value for key, value in os.environ.items()
              if not key.startswith("AIRFLOW__") and key not in ("AIRFLOW_HOME", "LLMOPS_CONFIG_DIR", "LLMOPS_STORE_URI")}


# The stack (api-server, scheduler, dag-processor, triggerer) is shared by the tests in tests/airflow and
# stopped as soon as the session leaves this directory (pytest_runtest_teardown below), so its background CPU
# (DAG parsing, heartbeats) does not skew the latency comparisons of the rollout tests that run later on the
# same cores. (A "package" scope would not do: tests/airflow cannot be a package, its name is airflow's.)
_running: list[contextlib.ExitStack] = []


def pytest_runtest_teardown(item, nextitem):
    if _running and (nextitem is None or HERE not in Path(nextitem.path).parents):
        while _running:
            _running.pop().close()


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory, venvs):
    root = tmp_path_factory.mktemp("airflow-stack")
    config = root / "registry"
    shutil.copytree(ROOT / "include" / "config", config)
    models = yaml.safe_load((config / "models.yaml").read_text())
    missing = {**models["models"][0], "name": MISSING_MODEL, "repo_id": "llmops-demo/no-such-repo"}
    models["models"].append(missing)
    (config / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    deployments = yaml.safe_load((config / "deployments.yaml").read_text())  # registry values unlike the schema's
    deployments["deployments"][0]["rollout"].update(REGISTRY_ROLLOUT)
    (config / "deployments.yaml").write_text(yaml.safe_dump(deployments, sort_keys=False))

    pauses = root / "pauses"  # llmops.seams: a test holds a task at a named point to kill it there
    pauses.mkdir()
    started = time.monotonic()
    running = contextlib.ExitStack()
    _running.append(running)
    with running:
        airflow = running.enter_context(local_airflow(
            root / "state", base_env={**_INHERITED, "LLMOPS_PAUSE_DIR": str(pauses)}, venvs=venvs, config_dir=config,
            demo_model_cache=venvs.parent / "cache" / "demo-models", timeout=420,
            echo=lambda line: print(f"[airflow_stack] {line}")))
        print(f"[airflow_stack] ready in {time.monotonic() - started:.0f} s at {airflow.url}")
        yield airflow


@pytest.fixture(scope="session")
def missing_model() -> str:
    return MISSING_MODEL


@pytest.fixture
def registry_rollout() -> dict:
    """The rollout values the stack's registry gives tiny-llama-chat (a fixture: `from conftest import` finds
    whichever conftest module pytest imported first under that name)."""
    return REGISTRY_ROLLOUT


@pytest.fixture(scope="session")
def rest_runs(airflow_stack, missing_model) -> dict[str, tuple[str, str]]:
    """The REST-triggered runs of test_scheduler_runs.py, triggered together as soon as Airflow is up so that
    they run while the browser test works (kb_reindex and model_refresh side by side; the scheduler queues a
    DAG's next run behind its running one): name -> (dag_id, run id)."""
    wanted = {
        "kb": ("kb_reindex", {"knowledge_base": "all", "mode": "incremental"}),
        "missing_model": ("model_refresh", {"model": missing_model}),
        "refresh": ("model_refresh", {"model": "tiny-llama", "recipes": ["modelopt-fp8"]}),
        # only deployment and version, as a script would send: the registry's rollout values apply
        "rollout": ("model_rollout", {"deployment": "tiny-llama-chat", "version": "latest"}),
    }
    return {name: (dag_id, airflow_stack.trigger(dag_id, conf)) for name, (dag_id, conf) in wanted.items()}
