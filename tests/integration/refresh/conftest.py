"""Fixtures of the refresh tests: the trained tiny model and its quantized checkpoints, built once per session
by the real jobs in the worker environment (`python -m llmops.jobs.quantize`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from refresh_helpers import plan_items, run_job

from llmops.refresh.plan import WorkItem


def _venv_python(venvs: Path, name: str) -> Path:
    python = venvs / name / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} missing; fix: scripts/envs.sh {name}")
    return python


@pytest.fixture(scope="session")
def worker_python(venvs) -> Path:
    return _venv_python(venvs, "worker")


@pytest.fixture(scope="session")
def serving_python(venvs) -> Path:
    return _venv_python(venvs, "serving")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, worker_python) -> Path:
    done, result = run_job(worker_python, "make_tiny_model", timeout=1800)  # the machine's cached build
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(result["path"])


@pytest.fixture(scope="session")
def quantized(tmp_path_factory, worker_python, tiny_model) -> dict[str, tuple[WorkItem, dict, float]]:
    """llmcompressor-w8a8, llmcompressor-w4a16 and modelopt-fp8 checkpoints of the tiny model, items of one source
    commit: {recipe: (item, job result, seconds)}."""
    work_root = tmp_path_factory.mktemp("refresh-work")
    items = plan_items(work_root, ["llmcompressor-w8a8", "llmcompressor-w4a16", "modelopt-fp8"])
    built = {}
    for recipe, item in items.items():
        source = Path(item.source_dir)
        source.parent.mkdir(parents=True, exist_ok=True)
        if not source.exists():
            source.symlink_to(tiny_model, target_is_directory=True)
        started = time.monotonic()
        done, result = run_job(worker_python, "quantize", "--item", item.to_json())
        assert done.returncode == 0, f"quantize {recipe} failed:\n{done.stderr[-4000:]}"
        built[recipe] = (item, result, time.monotonic() - started)
    return built
