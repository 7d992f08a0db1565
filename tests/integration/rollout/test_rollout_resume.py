"""A rollout resumes, never restarts (issue 19): its record (lock, resolved request, progress) is stored beside
the deployment and written by compare-and-swap, so a second execution of the same run waits for the first, a
retry after a kill takes over where the killed one stopped, and each run stores exactly one report.

Kubernetes: kmock's emulator over real HTTP (with resourceVersion and PUT, tests/support/kube_emulator.py) and a
TensorRT-LLM deployment, whose canary never gets Ready without a GPU, so the rollouts here end rolled back
without any model server. The second executions are real processes (execution.py) racing the first.
The record's compare-and-swap on the local runtime is raced by processes too."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llmops.rollout import driver
from llmops.rollout.record import Execution, RolloutRecord
from llmops.serving.local import LocalRuntime
from llmops.settings import PROJECT_ROOT

from . import test_rollout_trtllm_kubernetes as trt

hook, registry, store = trt.hook, trt.registry, trt.store  # the emulator's nodes, the registry, published builds
backend_for, context = trt.backend_for, trt.context

NS = "llmops"
HERE = Path(__file__).resolve().parent


def execution(store_uri: str, version: str, run_id: str, tmp_path: Path, *, try_number: int = 1,
              mode: str = "decide") -> subprocess.Popen:
    conf = {"store_uri": store_uri, "version": version, "run_id": run_id, "deployment": "tiny-llama-trtllm",
            "try_number": try_number, "mode": mode, "report_dir": str(tmp_path / f"report-{run_id}-{try_number}")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(PROJECT_ROOT / p) for p in ("include", "plugins", "tests"))}
    return subprocess.Popen([sys.executable, str(HERE / "execution.py"), json.dumps(conf)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def read_until(process: subprocess.Popen, prefix: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"no {prefix!r} line:\n{''.join(lines)[-4000:]}")


def result_of(process: subprocess.Popen, timeout: float = 180) -> dict:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def reports(store_root: Path, run_id: str) -> list[Path]:
    return sorted(store_root.glob(f"**/rollouts/tiny-llama-trtllm/{run_id}*/report.md"))


def canary_creations(kube) -> int:
    return sum(1 for w in kube.writes() if w == f"POST /apis/apps/v1/namespaces/{NS}/deployments")


def record(backend) -> RolloutRecord:
    data, _ = backend.read_record()
    return RolloutRecord.from_dict(data)


def test_two_executions_of_one_run_started_together_act_once_and_report_once(kube, hook, registry, store, tmp_path):
    store, uris = store
    racers = [execution(store.root_uri, uris["trt_fp8"], "manual__twice", tmp_path) for _ in range(2)]
    results = [result_of(p) for p in racers]
    assert sorted(r["acted"] for r in results) == [False, True], results  # one acted, the other waited for it
    assert [r["outcome"] for r in results] == ["rolled_back", "rolled_back"]
    assert results[0]["locations"]["store_markdown"] == results[1]["locations"]["store_markdown"]
    assert len(reports(tmp_path / "store", "manual__twice")) == 1
    assert canary_creations(kube) == 1
    backend = backend_for(hook, registry, registry.deployment("tiny-llama-trtllm"))
    assert backend.lock_holder() is None and hook.get("Deployment", "tiny-llama-trtllm-canary", NS) is None


def test_a_second_execution_waits_for_the_deferred_first_then_returns_its_outcome(kube, hook, registry, store,
                                                                                   tmp_path):
    store, uris = store
    backend = backend_for(hook, registry, registry.deployment("tiny-llama-trtllm"))
    ctx = context(backend, registry, store, uris["trt_fp8"], tmp_path, run_id="manual__deferred")
    me = Execution.new(1)
    waiting = driver.run(ctx, me)
    assert isinstance(waiting, driver.Waiting) and record(backend).owner.pid is None  # deferred: no process
    second = execution(store.root_uri, uris["trt_fp8"], "manual__deferred", tmp_path)
    read_until(second, "waiting:")  # the first's lease covers its wait: the second does not act
    finished = driver.run(ctx, me, {"status": "not_ready", "detail": "no GPU in the emulator"})
    assert finished.report.outcome == "rolled_back"
    assert result_of(second) == {"outcome": "rolled_back", "locations": finished.locations, "acted": False}
    assert len(reports(tmp_path / "store", "manual__deferred")) == 1 and canary_creations(kube) == 1
    # a third execution, after the end: the recorded outcome, no action, no second report
    again = driver.run(context(backend, registry, store, uris["trt_fp8"], tmp_path, run_id="manual__deferred"),
                       Execution.new(3))
    assert again.report.outcome == "rolled_back" and again.locations == finished.locations
    assert len(reports(tmp_path / "store", "manual__deferred")) == 1 and canary_creations(kube) == 1


def test_a_retry_after_sigkill_resumes_the_killed_rollout_instead_of_starting_over(kube, hook, registry, store,
                                                                                  tmp_path):
    """Try 1 dies by SIGKILL while it waits for the canary (as `dags test` waits inline); try 2 (Airflow's retry)
    takes the rollout over at once and resumes at the wait: no second canary, the same plan and timeline."""
    store, uris = store
    backend = backend_for(hook, registry, registry.deployment("tiny-llama-trtllm"))
    first = execution(store.root_uri, uris["trt_fp8"], "manual__killed", tmp_path, mode="wait")
    read_until(first, "deferred")
    before = record(backend)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert before.status == "active" and before.progress["action"]["kind"] == "wait_ready"
    retry = Execution.new(2)
    ctx = context(backend, registry, store, uris["trt_fp8"], tmp_path, run_id="manual__killed")
    waiting = driver.run(ctx, retry)
    assert isinstance(waiting, driver.Waiting) and waiting.target.track == "canary"
    after = record(backend)
    assert after.owner.token == retry.token and after.progress["plan"]["timeline"] == before.progress["plan"]["timeline"]
    assert canary_creations(kube) == 1  # resumed at the wait: the canary was not deployed again
    finished = driver.run(ctx, retry, {"status": "not_ready", "detail": "no GPU in the emulator"})
    assert finished.report.outcome == "rolled_back" and len(reports(tmp_path / "store", "manual__killed")) == 1
    assert backend.lock_holder() is None and hook.get("Deployment", "tiny-llama-trtllm-canary", NS) is None
    # another run may start now; the killed run's outcome stays readable until then
    assert record(backend).run_id == "manual__killed" and record(backend).status == "finished"


def test_a_stale_write_of_the_record_is_refused_on_the_api_server(kube, hook, registry):
    backend = backend_for(hook, registry, registry.deployment("tiny-llama-trtllm"))
    data = {"run_id": "r", "status": "active", "resolved": {}}
    first = backend.write_record(data, None)
    assert first and backend.write_record(data, None) is None  # the create is the lock: one winner
    second = backend.write_record({**data, "status": "finished"}, first)
    assert second and second != first
    assert backend.write_record({**data, "status": "active"}, first) is None  # read at `first`: stale
    assert backend.read_record() == ({**data, "status": "finished"}, second)
    assert any(w.startswith("PATCH ") and "configmaps" in w for w in kube.writes())


def test_the_record_trigger_reads_the_configmap_and_fires_once_the_owner_is_done(kube, hook, registry):
    """The operator's wait for another live execution of its run (a deferral): the trigger reads the record
    through the API server and fires when the owner finished its rollout, not while the owner acts."""
    from llmops.rollout.record import Owner
    from llmops_airflow.triggers.record import RolloutRecordTrigger

    backend = backend_for(hook, registry, registry.deployment("tiny-llama-trtllm"))
    owner = Execution.new(1)  # this process, live on this host
    acting = RolloutRecord("manual__owned", "active", {}, owner=Owner.of(owner, 600))
    version = backend.write_record(acting.to_dict(), None)
    trigger = RolloutRecordTrigger(identifiers=backend.record_identifiers(), run_id="manual__owned",
                                   owner_token=owner.token, try_number=1, poll_s=0.2)

    async def wait_then_finish() -> dict:
        first = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(1.5)  # several reads of a record whose owner still acts
        assert not first.done()
        done = RolloutRecord("manual__owned", "finished", {}, owner=acting.owner, outcome="rolled_back")
        assert await asyncio.to_thread(backend.write_record, done.to_dict(), version) is not None
        return (await asyncio.wait_for(first, 60)).payload

    assert asyncio.run(wait_then_finish()) == {"status": "look_again", "detail": "the rollout is finished"}


_INCREMENT = """
import sys
from llmops.serving.local import LocalRuntime
backend = LocalRuntime(sys.argv[1], "race", "m", serving_python=sys.executable)
for _ in range(int(sys.argv[2])):
    while True:
        data, version = backend.read_record()
        if backend.write_record({**data, "count": data["count"] + 1}, version) is not None:
            break
"""


def test_the_local_record_is_a_compare_and_swap_under_processes_racing(tmp_path):
    """Four processes increment one counter in the record by read + compare-and-swap: no update is lost, and
    of two creates only one wins."""
    backend = LocalRuntime(tmp_path, "race", "m", serving_python=sys.executable)
    assert backend.write_record({"run_id": "r", "status": "active", "count": 0}, None) == "1"
    assert backend.write_record({"run_id": "other", "status": "active", "count": 0}, None) is None
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "include")}
    racers = [subprocess.Popen([sys.executable, "-c", _INCREMENT, str(tmp_path), "25"], env=env) for _ in range(4)]
    assert [p.wait(300) for p in racers] == [0, 0, 0, 0]
    data, version = backend.read_record()
    assert data["count"] == 100 and version == "101"
    assert backend.lock_holder() == "r"
