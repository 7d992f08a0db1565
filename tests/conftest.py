"""Test-wide settings: all state under $LLMOPS_HOME/test, Airflow pointed at this project.

Set before anything imports Airflow, so the DAG files, plugins and config resolve the same way as
under `make demo`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LLMOPS_HOME = Path(os.environ.setdefault("LLMOPS_HOME", str(ROOT / ".llmops")))
TEST_HOME = LLMOPS_HOME / "test"
AIRFLOW_HOME = TEST_HOME / "airflow"
AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)

os.environ.setdefault("AIRFLOW_HOME", str(AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("LLMOPS_RUNTIME", "local")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT / "dags"), os.environ.get("PYTHONPATH", "")]
).rstrip(os.pathsep)


@pytest.fixture(autouse=True)
def fresh_settings():
    """Settings are read from the environment once per process; a test that changes the environment (monkeypatch)
    gets a fresh read, and the next test one of the environment restored."""
    from llmops.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB for dag.test(); created once per test session."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def venvs() -> Path:
    return LLMOPS_HOME / "venvs"
