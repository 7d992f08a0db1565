"""One real Airflow per test session for tests/airflow: api-server, scheduler, dag-processor, triggerer on
127.0.0.1 with the project's DAGs and the local stand-ins, started by the same code as `make ui`
(support.airflow_stack). Pipeline state lives in a fresh temporary folder; the trained demo model is cached
under $LLMOPS_HOME/test/cache."""

from __future__ import annotations

import os
import time

import pytest

from support.airflow_stack import local_airflow

# tests/conftest.py points AIRFLOW_HOME and friends at the in-process test DB; the stack sets its own.
_INHERITED = {key: value for key, value in os.environ.items()
              if not key.startswith("AIRFLOW__") and key not in ("AIRFLOW_HOME", "LLMOPS_CONFIG_DIR", "LLMOPS_STORE_URI")}


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory, venvs):
    home = os.environ["LLMOPS_HOME"]
    started = time.monotonic()
    with local_airflow(tmp_path_factory.mktemp("airflow-stack"), base_env=_INHERITED, venvs=venvs,
                       demo_model_dir=venvs.parent / "test" / "cache" / "tiny-llama", timeout=420,
                       echo=lambda line: print(f"[airflow_stack] {line}")) as airflow:
        print(f"[airflow_stack] ready in {time.monotonic() - started:.0f} s at {airflow.url} (LLMOPS_HOME {home})")
        yield airflow
