"""The GPU acceptance kit (scripts/gpu_check.sh) rehearsed on the CPU: the same steps, recipes and metric as on a
GPU, so the kit cannot rot between runs on a lent GPU (docs/gpu-results.md has the last one). It takes the
session's trained tiny Llama (this folder's `tiny_model` fixture) rather than training another."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
KIT = ROOT / "scripts" / "gpu_check.sh"


def _kit(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(KIT), *args], capture_output=True, text=True, timeout=1800, cwd=ROOT,
                          env={**os.environ, **env})


def test_the_dry_run_quantizes_and_validates_both_models_with_every_recipe(tmp_path, tiny_model):
    from llmops.jobs.gpu_check import RECIPES

    done = _kit("--dry-run", "--out", str(tmp_path), "--tiny-model", str(tiny_model))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "gpu-check.json").read_text())
    assert results["dry_run"] and results["environment"]["device"] == "cpu"
    steps = {(s["model"], s["step"], s.get("recipe")): s for s in results["steps"]}
    assert steps[("tiny-llama", "build", None)]["copied_from"] == str(tiny_model)
    for model in ("tiny-llama", "qwen2-random"):
        assert steps[(model, "build", None)]["status"] == "ok"
        assert steps[(model, "reference", None)]["status"] == "ok"
        for recipe in RECIPES:
            quantized, validated = steps[(model, "quantize", recipe)], steps[(model, "validate", recipe)]
            assert quantized["status"] == "ok" and validated["status"] == "ok", (quantized, validated)
            assert quantized["checkpoint_mb"] > 0 and quantized["seconds"] > 0
            metric = validated["validation"]
            assert metric["positions"] > 0 and 0 <= metric["mean_kl"] <= metric["thresholds"]["max_mean_kl"]
            assert validated["passed"] is True
    gptq = steps[("tiny-llama", "quantize", "llmcompressor-gptq-w4a16")]["quantization"]
    assert gptq["algorithm"] == "GPTQ" and gptq["calibration"] != "none"
    # the trained tiny Llama is confident somewhere, so top-1 agreement is measured, not only KL
    assert steps[("tiny-llama", "validate", "llmcompressor-w8a8")]["validation"]["confident_positions"] > 0
    page = (tmp_path / "gpu-check.md").read_text()
    assert "CPU dry run" in page and page.count("| validate |") == 2 * len(RECIPES)
    assert not any(tmp_path.glob("**/*.safetensors")), "models and checkpoints belong in a temporary folder"


def test_without_a_gpu_the_kit_refuses_and_names_the_dry_run(tmp_path, worker_python):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA GPU")
    done = _kit("--out", str(tmp_path), "--wheels", str(tmp_path / "none"), LLMOPS_GPU_PYTHON=str(worker_python))
    assert done.returncode != 0
    assert "no CUDA GPU" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "gpu-check.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--dryrun"], "unknown argument --dryrun"),
    (["--dry-run", "--tiny-model", "/nonexistent"], "--tiny-model /nonexistent has no config.json"),
])
def test_bad_arguments_are_refused_with_the_fix(tmp_path, args, message):
    done = _kit(*args, "--out", str(tmp_path))
    assert done.returncode == 2 and message in done.stderr and "fix" in done.stderr
    assert not (tmp_path / "gpu-check.json").exists()
