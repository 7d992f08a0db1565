"""Benchmark the rollout's own overhead on the local runtime (real vLLM processes on CPU).

    python bench/rollout.py                       # ~3-4 min: one stable start, one full canary rollout
    python bench/rollout.py --window-s 15 --steps 50,100

What a rollout cannot avoid is waiting for the canary to become ready and analysing it for the
configured windows. Everything else (pre-flight: resolve, download + sha256 verify, compatibility,
capacity, lock; traffic steps; promotion: stopping the old stable; report rendering and storing) is
overhead. Measured in the same run:

    ratio = total rollout wall time / (canary ready time + configured analysis window x steps)

Target: <= 1.15. The stable vLLM is started before the measurement (it is not part of a rollout).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from llmops.rollout.runner import execute, run_preflight, store_report

from _common import ROOT  # noqa: F401 - puts include/ on sys.path
from llmops.artefacts import Manifest, open_store
from llmops.config import load_registry
from llmops.rollout.demo import build_tiny_model
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.serving.local import LocalBackend, LocalRuntime
from llmops.settings import get_settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-s", type=int, default=15)
    parser.add_argument("--steps", default="50,100")
    parser.add_argument("--target", type=float, default=1.15)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    settings = get_settings()
    model_dir = build_tiny_model(settings.home / "demo" / "rollout" / "tiny-llama")
    registry = load_registry()

    with tempfile.TemporaryDirectory(prefix="llmops-bench-rollout-") as tmp:
        tmp = Path(tmp)
        store = open_store((tmp / "store").as_uri())
        uris = []
        for sha in ("1" * 40, "2" * 40):
            manifest = Manifest.for_directory(model_dir, model="tiny-llama", source_repo="local/make_tiny_model",
                                              source_sha=sha, recipe="unquantized", serving_runtime="vllm",
                                              quantization_format="none", min_compute_capability=0.0,
                                              max_model_len=512)
            uris.append(store.publish(model_dir, manifest.prefix, manifest))
        runtime = LocalRuntime(tmp / "home", "tiny-llama-chat", "tiny-llama", serving_python=settings.serving_python)
        backend = LocalBackend(runtime, model_cache=tmp / "home" / "models")
        try:
            stable = store.resolve(uris[0], "tiny-llama")
            backend.verify_artefact(store, stable)
            runtime.deploy("stable", stable.uri, backend.model_dir(stable))
            print(f"[bench] stable ready after {runtime.wait_ready('stable', timeout_s=600):.1f} s (not measured)")

            resolved = resolve_request(RolloutRequest(model="tiny-llama", deployment="tiny-llama-chat",
                                                      version=uris[1], steps=steps, analysis_window_s=args.window_s,
                                                      max_p95_latency_ratio=3.0), registry)
            started = time.monotonic()
            pre = run_preflight(resolved, store=store, backend=backend, registry=registry, run_id="bench")
            report = execute(resolved, pre, backend=backend, run_id="bench", readiness_timeout_s=600)
            locations = store_report(report, store=store, manifest=pre.manifest, local_dir=tmp / "report")
            total = time.monotonic() - started
        finally:
            runtime.stop_all()

    ready = report.timings.get("canary_ready_s", float("nan"))
    configured = args.window_s * len(steps)
    ratio = total / (ready + configured)
    result = {"outcome": report.outcome, "total_s": round(total, 1), "canary_ready_s": round(ready, 1),
              "configured_analysis_s": configured, "measured_analysis_s": round(report.timings.get("analysis_s", 0), 1),
              "overhead_s": round(total - ready - configured, 1), "ratio": round(ratio, 3), "target": args.target,
              "report_stored": bool(locations.get("store_markdown"))}
    print(json.dumps(result, indent=1))
    print(f"[bench] rollout wall time / (canary ready + analysis window) = {ratio:.3f} (target <= {args.target})")
    return 0 if ratio <= args.target and report.outcome == "promoted" else 1


if __name__ == "__main__":
    sys.exit(main())
