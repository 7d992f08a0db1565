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
from llmops.serving.local import LocalBackend, LocalRuntime, LocalRuntimeError
from llmops.settings import PROJECT_ROOT, get_settings

SHAS = {"stable": "a" * 40, "healthy": "b" * 40, "garbage": "c" * 40}


def build_model(out: Path, *args: str) -> Path:
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out  # deterministic for a seed: reuse across sessions
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "include")}
    subprocess.run([get_settings().worker_python, "-m", "llmops.jobs.make_tiny_model", "--out", str(out), *args],
                   check=True, capture_output=True, env=env, timeout=600)
    return out


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    root = get_settings().home / "test" / "rollout" / "models"
    return {"trained": build_model(root / "trained"),
            "garbage": build_model(root / "garbage", "--seed", "1", "--train-steps", "0")}


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
    runtime = LocalRuntime(home, "tiny-llama-chat", "tiny-llama", serving_python=get_settings().serving_python)
    backend = LocalBackend(runtime, model_cache=home / "models")
    stable = store.resolve(uris["stable"], "tiny-llama")
    assert backend.verify_artefact(store, stable) == []
    try:
        for attempt in (1, 2):
            runtime.deploy("stable", stable.uri, backend.model_dir(stable))
            try:
                runtime.wait_ready("stable", timeout_s=300)
                break
            except LocalRuntimeError:
                # Seen on the shared dev machine: the server SIGKILLed seconds after start with an empty log,
                # i.e. from outside (another suite's cleanup signalling a reused PID). Start it once more.
                if attempt == 2:
                    raise
        yield backend
    finally:
        runtime.stop_all()
