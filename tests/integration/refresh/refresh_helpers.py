"""Helpers of the refresh tests (a module with a unique name, so `import` finds it from any test folder)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from llmops.config import load_registry
from llmops.config.schema import ModelSpec
from llmops.jobs._cli import parse_result
from llmops.refresh.plan import WorkItem, expand_targets

ROOT = Path(__file__).resolve().parents[3]
SHA = "feedfacefeedfacefeedfacefeedfacefeedface"
GOLDEN = {"golden_prompts": [{"prompt": "The capital of France is"}, {"prompt": "One, two, three,"},
                             {"prompt": "Kubernetes schedules"}], "max_new_tokens": 8, "min_agreement": 0.5}


def run_job(python: Path | str, job: str, *args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, dict | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    done = subprocess.run([str(python), "-m", f"llmops.jobs.{job}", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return done, parse_result(done.stdout)


def plan_items(work_root: Path, recipes: list[str], profiles: list[str] | None = None) -> dict[str, WorkItem]:
    """Local-runtime work items for the tiny model, as the plan task would make them."""
    registry = load_registry()
    spec = ModelSpec(name="tiny-llama", repo_id="llmops-demo/tiny-llama", max_model_len=512, validation=GOLDEN,
                     targets=[{"recipe": r, "gpu_profiles": profiles or ["h20"]} for r in recipes])
    plan = expand_targets([spec], {spec.name: SHA}, registry.gpu_profiles, runtime="local", work_root=str(work_root))
    return {item.recipe: item for item in plan.items}
