"""Benchmark the rollout driver on the local runtime (real vLLM processes on CPU), the code the DAG runs.

    python bench/rollout.py                       # ~6-9 min: one stable start, a promoted and a rolled back canary,
                                                  # a warm and a cold roll back
    python bench/rollout.py --window-s 15 --steps 50,100

Four rollouts through `llmops.rollout.driver` (waiting in-process with the same readiness check the
DAG's trigger runs):

1. **promote ratio**: a canary with the stable's weights is promoted. What a rollout cannot avoid is
   waiting for the canary to become ready and analysing it for the configured windows; everything else
   (pre-flight: resolve, download + sha256 verify, compatibility, capacity, lock; traffic steps;
   promotion; report rendering and storing) is overhead:
       ratio = total wall time / (canary ready time + configured window x steps)      target <= 1.15
2. **time to roll back**: a canary that fails its golden prompts (an untrained model). Decisive evidence
   ends the analysis at once, so the rollout is over soon after the canary is ready:
       time to roll back - canary ready time                                           target <= 15 s
   with the same (long) windows, which a judge without early stopping would sit through.
3. **warm vs cold roll back** (`version: previous`): right after the promotion the replaced stable process is
   kept (keep_previous), so the roll back checks it (readiness, golden prompts) and gives it the traffic again
   (warm); then `version: previous` once more, with nothing kept, goes back the normal way: a canary vLLM
   start, the same steps and windows, promotion (cold, the baseline measured in the same run):
       warm roll back wall time / cold roll back wall time                              target <= 0.25
   Both also report when the previous version had the traffic again (warm: the switch; cold: 100 % canary).

The stable vLLM is started before the measurement (it is not part of a rollout).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT  # noqa: F401 - puts include/ on sys.path
from llmops.artefacts import open_store
from llmops.config import load_registry
from llmops.demo.rollout import publish_local_build
from llmops.demo.tiny_model import demo_model
from llmops.rollout import driver
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.serving.local import LocalRuntime
from llmops.settings import get_settings


def rollout(registry, store, backend, uri: str, run_id: str, steps: list[int], window_s: int, tmp: Path):
    resolved = resolve_request(RolloutRequest(deployment="tiny-llama-chat", version=uri, steps=steps,
                                              analysis_window_s=window_s), registry)
    ctx = driver.RolloutContext(resolved, store, backend, registry, run_id, tmp / "reports" / run_id)
    started = time.monotonic()
    finished = driver.run_blocking(ctx)
    return finished, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-s", type=int, default=15)
    parser.add_argument("--steps", default="50,100")
    parser.add_argument("--target", type=float, default=1.15)
    parser.add_argument("--roll-back-target-s", type=float, default=15.0)
    parser.add_argument("--warm-target", type=float, default=0.25, help="warm / cold roll back wall time, at most")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    settings = get_settings()
    trained, untrained = demo_model(), demo_model("--seed", "1", "--train-steps", "0")
    registry = load_registry()

    with tempfile.TemporaryDirectory(prefix="llmops-bench-rollout-") as tmp:
        tmp = Path(tmp)
        store = open_store((tmp / "store").as_uri())
        stable_uri, candidate_uri = publish_local_build(store, trained, "1" * 40), publish_local_build(store, trained, "2" * 40)
        broken_uri = publish_local_build(store, untrained, "3" * 40)
        backend = LocalRuntime(tmp / "home", "tiny-llama-chat", "tiny-llama",
                               serving_python=settings.serving_python, model_cache=tmp / "home" / "models")
        try:
            stable = store.resolve(stable_uri, "tiny-llama")
            backend.verify_artefact(store, stable)
            backend.deploy("stable", stable.uri, backend.model_dir(stable))
            print(f"[bench] stable ready after {backend.wait_ready('stable'):.1f} s (not measured)")
            broken, broken_s = rollout(registry, store, backend, broken_uri, "bench-roll-back", steps,
                                       args.window_s * 4, tmp)
            promoted, total = rollout(registry, store, backend, candidate_uri, "bench-promote", steps,
                                      args.window_s, tmp)
            kept = backend.load().kept
            print(f"[bench] promoted; the replaced stable is kept: {kept is not None}")
            warm, warm_s = rollout(registry, store, backend, "previous", "bench-warm-roll-back", steps,
                                   args.window_s, tmp)  # back to the first version, on its kept process
            cold, cold_s = rollout(registry, store, backend, "previous", "bench-cold-roll-back", steps,
                                   args.window_s, tmp)  # back again: nothing is kept after a warm roll back
        finally:
            backend.stop_all()

    ready = promoted.report.timings.get("canary_ready_s", float("nan"))
    configured = args.window_s * len(steps)
    ratio = total / (ready + configured)
    broken_ready = broken.report.timings.get("canary_ready_s", float("nan"))
    after_ready = broken_s - broken_ready
    result = {
        "promote": {"outcome": promoted.report.outcome, "reason": promoted.report.reason, "total_s": round(total, 1), "canary_ready_s": ready,
                    "configured_analysis_s": configured,
                    "measured_analysis_s": promoted.report.timings.get("analysis_s", 0),
                    "overhead_s": round(total - ready - configured, 1), "ratio": round(ratio, 3),
                    "target": args.target, "report_stored": bool(promoted.locations.get("store_markdown"))},
        "roll_back": {"outcome": broken.report.outcome, "reason": broken.report.reason,
                      "time_to_roll_back_s": round(broken_s, 1), "canary_ready_s": broken_ready,
                      "after_ready_s": round(after_ready, 1), "configured_window_s": args.window_s * 4,
                      "target_after_ready_s": args.roll_back_target_s},
    }
    warm_ratio = warm_s / cold_s
    result["roll_back_previous"] = {
        "warm": {"outcome": warm.report.outcome, "warm": warm.report.warm_roll_back, "wall_s": round(warm_s, 1),
                 "traffic_back_s": warm.report.timings.get("traffic_restored_s")},
        "cold": {"outcome": cold.report.outcome, "warm": cold.report.warm_roll_back, "wall_s": round(cold_s, 1),
                 "traffic_back_s": _full_traffic_s(cold.report), "canary_ready_s": cold.report.timings.get(
                     "canary_ready_s")},
        "ratio": round(warm_ratio, 3), "target": args.warm_target}
    print(json.dumps(result, indent=1))
    print(f"[bench] rollout wall time / (canary ready + analysis window) = {ratio:.3f} (target <= {args.target})")
    print(f"[bench] time to roll back a canary failing golden prompts = canary ready + {after_ready:.1f} s "
          f"(target <= + {args.roll_back_target_s:g} s)")
    print(f"[bench] time to roll back (version previous): warm {warm_s:.1f} s (traffic back after "
          f"{warm.report.timings.get('traffic_restored_s', float('nan')):.1f} s), cold {cold_s:.1f} s (traffic back "
          f"after {_full_traffic_s(cold.report) or float('nan'):.1f} s); warm / cold = {warm_ratio:.3f} "
          f"(target <= {args.warm_target})")
    ok = (ratio <= args.target and promoted.report.outcome == "promoted" and broken.report.outcome == "rolled_back"
          and after_ready <= args.roll_back_target_s and warm.report.warm_roll_back
          and not cold.report.warm_roll_back and cold.report.outcome == "promoted" and warm_ratio <= args.warm_target)
    return 0 if ok else 1


def _full_traffic_s(report) -> float | None:
    """Seconds from the start until the canary (the previous version, on a cold roll back) had 100 %."""
    start = report.timeline[0][0] if report.timeline else None
    full = [at for at, _, event, detail in report.timeline if event == "weights_set" and detail == "canary 100 %"]
    return round(full[0] - start, 1) if start is not None and full else None


if __name__ == "__main__":
    sys.exit(main())
