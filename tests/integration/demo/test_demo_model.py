"""The demo model is the same everywhere: built once per machine (two builders at once train it once), accepted only
with safe margins, and checked with another torch thread count (other float reduction orders, as on another
CPU) in a process of its own, it still gives the golden answers with those margins in float32 and bfloat16."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmops.jobs._cli import parse_result

ROOT = Path(__file__).resolve().parents[3]
MIN_MARGIN = 3.0  # llmops.demo.tiny_model.MIN_MARGIN (that module needs torch: the worker environment)
PROMPTS = {"One, two, three,", "Kubernetes schedules", "The capital of France is"}


def _job(python: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    done = subprocess.run([str(python), "-m", "llmops.jobs.make_tiny_model", *args], capture_output=True, text=True,
                          env=env, timeout=3600)
    return done, parse_result(done.stdout)


@pytest.fixture(scope="module")
def worker_python(venvs) -> Path:
    python = venvs / "worker" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} missing; fix: scripts/envs.sh worker")
    return python


def test_two_builders_at_once_train_once_and_another_thread_count_gives_the_answers_with_safe_margins(
        tmp_path, worker_python):
    with ThreadPoolExecutor(2) as pool:  # built with the default thread count (1)
        runs = list(pool.map(lambda _: _job(worker_python, "--cache", str(tmp_path / "cache")), range(2)))
    for done, _ in runs:
        assert done.returncode == 0, done.stderr[-3000:]
    (first, a), (second, b) = runs
    assert a["path"] == b["path"], "two builders of the same inputs must share one build"
    assert sorted([a["built"], b["built"]]) == [False, True], "the second builder must wait and reuse the first's"
    built_with = a["torch_threads"]
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [Path(a["path"]).name]

    done, checked = _job(worker_python, "--check", a["path"], "--torch-threads", str(built_with + 1))
    assert done.returncode == 0, done.stderr[-3000:]
    assert checked["torch_threads"] == built_with + 1
    assert checked["problems"] == []
    expected = {f"{prompt} @ {dtype}" for prompt in PROMPTS for dtype in ("float32", "bfloat16")}
    assert set(checked["margins"]) == expected
    assert min(checked["margins"].values()) >= MIN_MARGIN, checked["margins"]
    accepted = json.loads((Path(a["path"]) / "accepted.json").read_text())
    assert accepted["golden_checked"] and min(accepted["margins"].values()) >= MIN_MARGIN


def test_a_cached_build_is_reused_without_training(worker_python):
    """The demo model of `make ui` / `make demo` / the tests: the second request answers from the cache."""
    done, first = _job(worker_python)
    assert done.returncode == 0, done.stderr[-3000:]
    done, again = _job(worker_python)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (again["path"], again["built"]) == (first["path"], False)  # a lookup, no training run
    assert again["train_steps"] == first["train_steps"]
