"""A rollout resumes, never restarts (issue 19), under the real scheduler (tests/airflow's stack: LocalExecutor,
triggerer, local runtime with real vLLM on CPU).

One rollout's task is SIGKILLed twice, at points the test seam `llmops.seams` holds it at (no sleeps to guess
the moment): in the analysis window (try 1), then mid-promotion (try 2: the canary is recorded as the stable
track, the record still says `promote`). Airflow retries each time and the retry resumes from the record: one
canary, one plan, one report, the new version serving as the stable track, no canary and no stray vLLM left.

The version is the stack's trained demo model, published to the stack's store here. Golden prompts and latency
are not what this test is about (a fresh canary has no stable to compare with on a first deployment, and the
demo model's greedy text differs across CPUs), so the run's thresholds let it pass on the evidence that it
served.

A second live execution of a run (here: this test process owns the run's record as its try 1) is waited for
deferred, on the record trigger, holding no worker slot; once the owner finishes, the task returns the
recorded outcome without acting."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

DEPLOYMENT = "tiny-llama-chat"


def record(home: Path, deployment: str = DEPLOYMENT) -> dict | None:
    path = home / "serving" / deployment / "rollout.json"
    try:
        return json.loads(path.read_text())["record"]
    except (OSError, ValueError, KeyError):
        return None


def reached(pauses: Path, point: str, timeout: float) -> int:
    """The pid of the process held at `point` (llmops.seams), once one is."""
    marker = pauses / f"{point}.reached"
    deadline = time.monotonic() + timeout
    while not (marker.exists() and marker.read_text().strip()):
        assert time.monotonic() < deadline, f"no task reached the pause point {point!r} in {timeout:.0f} s"
        time.sleep(1)
    return int(marker.read_text())


def kill_task(pid: int) -> None:
    """SIGKILL the task's process group: the supervisor forks the task into a group of its own (vLLM servers run
    in sessions of their own, so they survive, as they would a worker's death)."""
    assert os.getpgid(pid) == pid, "the task does not lead its own process group: not killing the group"
    os.killpg(pid, signal.SIGKILL)


# Golden prompts and latency are not what these tests are about (see the module's docstring).
LAX = {"min_golden_pass_rate": 0.0, "max_p95_latency_ratio": 10.0, "max_error_rate": 1.0}


@pytest.fixture(scope="module")
def backend(airflow_stack):
    """The stack's local runtime of DEPLOYMENT, as the rollout task sees it; every vLLM of it stops at the end."""
    from llmops.serving.local import LocalRuntime

    runtime = LocalRuntime(Path(airflow_stack.env["LLMOPS_HOME"]), DEPLOYMENT, "tiny-llama",
                           serving_python=airflow_stack.env["LLMOPS_SERVING_PYTHON"])
    yield runtime
    runtime.stop_all()


def publish_demo_model(airflow_stack, commit: str) -> str:
    """The stack's trained demo model published as an unquantized vLLM version of source commit `commit` (create
    if absent: publishing it again returns the same URI)."""
    from llmops.artefacts import Manifest, open_store

    model = airflow_stack.demo_model  # the stack's trained demo model, as published to its hub mirror
    assert model is not None and (model / "config.json").exists(), model
    store = open_store(airflow_stack.env["LLMOPS_STORE_URI"])
    manifest = Manifest.for_directory(model, model="tiny-llama", source_repo="llmops-demo/tiny-llama",
                                      source_sha=commit, recipe="unquantized", serving_runtime="vllm",
                                      quantization_format="none", min_compute_capability=0.0, max_model_len=512)
    return store.publish(model, manifest.prefix, manifest)


def test_a_rollout_killed_mid_analysis_and_mid_promotion_is_resumed_by_airflows_retries(airflow_stack, rest_runs,
                                                                                        backend):
    from llmops.artefacts import open_store
    from llmops.serving.processes import process_alive, tagged_processes

    airflow_stack.wait_for_run(*rest_runs["rollout"], timeout=900)  # that run must not see this version
    home = Path(airflow_stack.env["LLMOPS_HOME"])
    pauses = Path(airflow_stack.env["LLMOPS_PAUSE_DIR"])
    store = open_store(airflow_stack.env["LLMOPS_STORE_URI"])
    uri = publish_demo_model(airflow_stack, "d" * 40)
    for point in ("analyse", "promote"):  # each held once: the try after a kill passes the point
        (pauses / f"{point}.pause").touch()
    run_id = airflow_stack.trigger("model_rollout", {
        "deployment": DEPLOYMENT, "version": uri, "steps": [100], "analysis_window_s": 30, "thresholds": LAX})
    try:
        first = reached(pauses, "analyse", timeout=1800)  # a vLLM start takes minutes on a loaded 2-core machine
        held = record(home)
        assert held["run_id"] == run_id and held["progress"]["action"]["kind"] == "analyse", held
        assert held["owner"]["pid"] == first and held["owner"]["try_number"] == 1, held
        canary = backend.load().canary
        kill_task(first)

        second = reached(pauses, "promote", timeout=1200)
        held = record(home)
        assert second != first and held["owner"]["pid"] == second and held["owner"]["try_number"] == 2, held
        assert held["progress"]["action"]["kind"] == "promote" and held["progress"]["attempts"] == {"promote": 1}
        half = backend.load()  # mid-promotion: the canary is recorded as the stable track already
        assert half.canary is None and half.stable.pid == canary.pid, half
        kill_task(second)

        state = airflow_stack.wait_for_run("model_rollout", run_id, timeout=1200)
        summary = airflow_stack.run_summary("model_rollout", run_id)
        assert state == "success" and "(try 3)" in summary, summary  # Airflow retried each killed try
        final = record(home)
        assert final["run_id"] == run_id and final["status"] == "finished" and final["outcome"] == "promoted", final
        timeline = [event for _, _, event, _ in final["progress"]["plan"]["timeline"]]
        assert timeline.count("canary_deployed") == 1 and timeline.count("promoted") == 1, timeline
        assert final["progress"]["attempts"] == {"promote": 2}, final["progress"]  # the killed attempt counts
        assert len(final["progress"]["steps"]) == 1  # the killed analysis left no step; the resumed one did
        reports = sorted(Path(store.root_uri.removeprefix("file://")).glob(
            f"**/rollouts/{DEPLOYMENT}/{run_id}*/report.md"))
        assert len(reports) == 1 and "PROMOTED" in reports[0].read_text(), reports
        served = backend.load()
        assert served.canary is None and backend.lock_holder() is None
        assert served.stable.version == uri and served.stable.pid == canary.pid and process_alive(canary.pid)
        stray = {tag.name: pids for tag in (home / "serving" / DEPLOYMENT / "servers").iterdir()
                 if tag.name != served.stable.tag and (pids := tagged_processes(tag.name, str(tag)))}
        assert stray == {}, stray  # the only vLLM left is the stable one
    finally:
        for marker in pauses.iterdir():  # lets a held task go on, whatever failed
            marker.unlink(missing_ok=True)


def test_a_promotion_keeps_the_replaced_version_warm_and_previous_shifts_back_to_it(airflow_stack, backend):
    """Warm roll back (issue 21) under the scheduler, triggered through REST as an operator would: a promotion keeps
    the stable it replaces running (keep_previous, by default one replica for 30 minutes), and `version: previous`
    gives that very process the traffic again without starting a server or analysing canary steps. Starts from the
    stable the kill test above left (or deploys one when run alone)."""
    from llmops.serving.processes import process_alive, tagged_processes

    home = Path(airflow_stack.env["LLMOPS_HOME"])

    def roll_out(version: str, **conf) -> str:
        run_id = airflow_stack.trigger("model_rollout", {"deployment": DEPLOYMENT, "version": version, **conf})
        state = airflow_stack.wait_for_run("model_rollout", run_id, timeout=1800)
        assert state == "success", airflow_stack.run_summary("model_rollout", run_id)
        return run_id

    first_uri = publish_demo_model(airflow_stack, "d" * 40)
    if backend.load().stable is None:  # run alone: the first version is deployed here
        roll_out(first_uri, steps=[100], analysis_window_s=10, thresholds=LAX)
    first = backend.load().stable
    assert first is not None and first.version == first_uri and process_alive(first.pid, first.port)

    second_uri = publish_demo_model(airflow_stack, "e" * 40)
    roll_out(second_uri, steps=[100], analysis_window_s=10, thresholds=LAX)
    promoted = backend.load()
    assert promoted.stable.version == second_uri and promoted.stable.pid != first.pid
    assert promoted.kept is not None and promoted.kept.pid == first.pid  # kept warm, not stopped
    assert process_alive(first.pid, first.port) and promoted.kept_until > time.time() + 25 * 60

    run_id = roll_out("previous")
    log = airflow_stack.task_log("model_rollout", run_id, "rollout")
    assert "Warm roll back" in log and "started canary vLLM" not in log, log[-4000:]
    restored = backend.load()
    assert restored.stable.pid == first.pid and restored.stable.version == first_uri  # the very same process
    assert restored.kept is None and restored.canary is None and backend.lock_holder() is None
    assert tagged_processes(promoted.stable.tag, promoted.stable.workdir) == []  # the replaced one stopped
    servers = [tag.name for tag in (home / "serving" / DEPLOYMENT / "servers").iterdir()
               if tagged_processes(tag.name, str(tag))]
    assert servers == [first.tag], servers  # no server was started for the roll back


def test_a_second_live_execution_of_a_run_waits_deferred_and_returns_the_owners_outcome(airflow_stack):
    from llmops.rollout.record import Execution, Owner, RolloutRecord
    from llmops.serving.local import LocalRuntime

    deployment = "tiny-llama-trtllm"  # a deployment no other test of the stack rolls out to
    backend = LocalRuntime(Path(airflow_stack.env["LLMOPS_HOME"]), deployment, "tiny-llama",
                           serving_python=airflow_stack.env["LLMOPS_SERVING_PYTHON"])
    run_id = f"manual__second_execution_{uuid.uuid4().hex[:8]}"
    owner = Execution.new(1)  # this process: the run's try 1, live on this host, acting on the rollout
    _, current = backend.read_record()
    version = backend.write_record(RolloutRecord(run_id, "active", {}, owner=Owner.of(owner, 600)).to_dict(),
                                   current)
    assert version is not None
    airflow_stack.trigger("model_rollout", {"deployment": deployment, "version": "latest"}, run_id=run_id)
    path = f"/dags/model_rollout/dagRuns/{run_id}/taskInstances/rollout"
    deadline = time.monotonic() + 600
    while (ti := airflow_stack.api("GET", path)[1]).get("state") != "deferred":
        assert ti.get("state") not in ("success", "failed", "up_for_retry"), ti
        assert time.monotonic() < deadline, ti
        time.sleep(1)
    assert backend.read_record()[1] == version  # the waiting task wrote nothing

    done = RolloutRecord(run_id, "finished", {}, owner=Owner.of(owner, 600), outcome="promoted",
                         reason="carried out by the first execution")
    assert backend.write_record(done.to_dict(), version) is not None  # the owner ends its rollout
    state = airflow_stack.wait_for_run("model_rollout", run_id, timeout=600)
    summary = airflow_stack.run_summary("model_rollout", run_id)
    assert state == "success" and "(try 1)" in summary, summary  # the recorded outcome, no retry
    log = airflow_stack.task_log("model_rollout", run_id, "rollout")
    assert "carried on by another execution" in log and "the rollout is finished" in log, log[-3000:]
    assert record(Path(airflow_stack.env["LLMOPS_HOME"]), deployment) == done.to_dict()  # it never acted
    assert not (Path(airflow_stack.env["LLMOPS_HOME"]) / "serving" / deployment / "servers").exists()
