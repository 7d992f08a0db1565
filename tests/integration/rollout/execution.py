"""One execution of a run's rollout task in a process of its own, as a second Airflow worker (or a retry on
another one) runs it: `python execution.py '<json>'` with store_uri, version, run_id, deployment, try_number and
mode. It prints `waiting` lines while another execution owns the rollout, then one JSON line: what `driver.run`
returned. Mode `decide`: where the driver must wait for readiness it goes on at once with "not ready" (nothing
gets ready without a GPU); mode `wait`: it waits with the real readiness check, as `airflow dags test` does
inline (a test kills it there)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from llmops.artefacts import open_store
from llmops.config import load_registry
from llmops.rollout import driver
from llmops.rollout.record import Execution
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.serving.kubernetes import KubernetesBackend
from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

UNREACHABLE = "http://127.0.0.1:9/{pod_ip}"


def main() -> int:
    args = json.loads(sys.argv[1])
    registry = load_registry()
    deployment = registry.deployment(args["deployment"])
    backend = KubernetesBackend(VllmKubernetesHook("kubernetes_default"), deployment,
                                registry.gpu_profile(deployment.gpu_profile), pod_url_template=UNREACHABLE,
                                service_url_template=UNREACHABLE)
    resolved = resolve_request(RolloutRequest(deployment=deployment.name, version=args["version"]), registry)
    ctx = driver.RolloutContext(resolved, open_store(args["store_uri"]), backend, registry, args["run_id"],
                                Path(args["report_dir"]))
    me = Execution.new(args["try_number"])
    result = driver.run(ctx, me)
    while isinstance(result, driver.OwnedElsewhere):  # as the operator's record trigger waits, in this process
        print("waiting:", result.message, flush=True)
        time.sleep(0.3)
        result = driver.run(ctx, me)
    owner = isinstance(result, driver.Waiting)
    if owner:
        print("deferred", flush=True)
        event = ({"status": "not_ready", "detail": "no GPU in the emulator"} if args["mode"] == "decide"
                 else driver.wait_blocking(backend, result, poll_s=0.3))
        result = driver.run(ctx, me, event)
    print(json.dumps({"outcome": result.report.outcome, "locations": result.locations, "acted": owner}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
