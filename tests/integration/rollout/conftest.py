"""Real stand-ins for rollout tests: tiny models published to a file store, a stable vLLM on CPU.

Three versions of `tiny-llama` are published: `stable` and `healthy` hold the same trained weights
(different source shas), `garbage` is an untrained model (seed 1, 0 steps) whose greedy output fails
every golden prompt. The stable vLLM process starts once per session; each test's canary is a real
vLLM process started by the code under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from llmops.artefacts import Manifest, open_store
from llmops.config import load_registry
from llmops.demo.tiny_model import demo_model
from llmops.serving.errors import LocalRuntimeError
from llmops.serving.local import LocalRuntime
from llmops.settings import PROJECT_ROOT, get_settings

SHAS = {"stable": "a" * 40, "healthy": "b" * 40, "garbage": "c" * 40}


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    # the machine's one accepted build of the demo model (built once, then cached), and an untrained one
    return {"trained": demo_model(), "garbage": demo_model("--seed", "1", "--train-steps", "0")}


@pytest.fixture(scope="session")
def rollout_tmp():
    """Session scratch space under $LLMOPS_HOME/test (not /tmp/pytest-of-*: concurrent pytest sessions on
    this machine rotate those away, and vLLM processes keep reading their model files for minutes)."""
    base = get_settings().home / "test" / "rollout"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="session-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def rollout_store(rollout_tmp, tiny_models):
    root = rollout_tmp / "store"
    store = open_store(root.as_uri())
    uris = {}
    for name, sha in SHAS.items():
        model_dir = tiny_models["garbage" if name == "garbage" else "trained"]
        manifest = Manifest.for_directory(
            model_dir, model="tiny-llama", source_repo="llmops-demo/tiny-llama", source_sha=sha,
            recipe="unquantized", serving_runtime="vllm", quantization_format="none",
            min_compute_capability=0.0, max_model_len=512)
        uris[name] = store.publish(model_dir, manifest.prefix, manifest)
    # an FP8 build: compute capability 8.9+, which an A10 (8.6) cannot run
    fp8 = Manifest.for_directory(
        tiny_models["trained"], model="tiny-llama", source_repo="llmops-demo/tiny-llama", source_sha="e" * 40,
        recipe="llmcompressor-fp8-dynamic", serving_runtime="vllm", quantization_format="FP8_DYNAMIC",
        min_compute_capability=8.9, max_model_len=512)
    uris["fp8"] = store.publish(tiny_models["trained"], fp8.prefix, fp8)
    return store, uris


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture(scope="session")
def local_backend(rollout_tmp, rollout_store):
    """A local runtime whose stable track serves the `stable` version (started once, stopped at the end)."""
    store, uris = rollout_store
    home = rollout_tmp / "home"
    backend = LocalRuntime(home, "tiny-llama-chat", "tiny-llama", serving_python=get_settings().serving_python,
                           model_cache=home / "models")
    stable = store.resolve(uris["stable"], "tiny-llama")
    assert backend.verify_artefact(store, stable) == []
    try:
        for attempt in (1, 2):
            backend.deploy("stable", stable.uri, backend.model_dir(stable))
            try:
                backend.wait_ready("stable")  # LLMOPS_VLLM_READY_TIMEOUT_S: ~40 s alone; minutes with 8 suites on 2 cores
                break
            except LocalRuntimeError as exc:
                # Seen on the shared dev machine: the server SIGKILLed seconds after start with an empty log,
                # i.e. from outside (another suite's cleanup signalling a reused PID). Start it once more.
                if attempt == 2:
                    log_tail = Path(backend.load().stable.log_path).read_text(errors="replace")[-3000:]
                    raise LocalRuntimeError(f"{exc}\n{log_tail}") from None
        yield backend
    finally:
        backend.stop_all()


# --- `airflow dags test model_rollout`: the path users run ------------------------------------------

def dag_env(home: Path, store_root: Path, venvs: Path, **extra: str) -> dict:
    return {**os.environ, "LLMOPS_HOME": str(home), "LLMOPS_STORE_URI": store_root.as_uri(),
            "LLMOPS_RUNTIME": "local", "LLMOPS_WORKER_PYTHON": str(venvs / "worker" / "bin" / "python"),
            "LLMOPS_SERVING_PYTHON": str(venvs / "serving" / "bin" / "python"),
            "PYTHONPATH": os.pathsep.join(str(PROJECT_ROOT / p) for p in ("include", "plugins", "dags")), **extra}


def dags_test_command(conf: dict) -> list[str]:
    import json
    import sys

    return [str(Path(sys.executable).with_name("airflow")), "dags", "test", "model_rollout", "-c", json.dumps(conf)]


def dags_test(env: dict, conf: dict, *, timeout: float = 900) -> tuple[int, str]:
    done = subprocess.run(dags_test_command(conf), env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def newest_report(home: Path) -> str:
    reports = sorted((home / "reports" / "rollouts" / "tiny-llama-chat").glob("*/report.md"),
                     key=lambda p: p.stat().st_mtime)
    assert reports, "no rollout report was written"
    return reports[-1].read_text()


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree (walked through /proc/<pid>/stat parent ids)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found
