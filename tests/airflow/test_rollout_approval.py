"""The human gate under the real scheduler (tests/airflow's stack: LocalExecutor, local runtime with real vLLM on
CPU): a gated model_rollout parks its task awaiting input (no process of it runs) with Airflow's
human-in-the-loop request, the canary keeps serving, and the answer given through the REST API
(PATCH .../taskInstances/rollout/-1/hitlDetails) decides: reject rolls back, approve promotes, and no answer
within the gate's timeout (seconds here, set in the form) takes the on_timeout option (reject: roll back).

Each run is a first deployment of the stack's trained demo model (no stable: steps [100], the gate waits
before the promotion), so one vLLM process (the canary) runs per run; the thresholds let the canary pass on the
evidence that it served (golden text differs across CPUs), as in test_rollout_resume.py."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

DEPLOYMENT = "tiny-llama-chat"
TASK = "rollout"
LENIENT = {"min_golden_pass_rate": 0.0, "max_p95_latency_ratio": 10.0, "max_error_rate": 1.0}


def record(home: Path) -> dict | None:
    try:
        return json.loads((home / "serving" / DEPLOYMENT / "rollout.json").read_text())["record"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def gated(airflow_stack, rest_runs):
    """A version of the demo model in the stack's store (published after the REST rollout run, which resolves
    'latest', has ended), the stack's local runtime, and a function that triggers a gated rollout of it."""
    from llmops.artefacts import Manifest, open_store
    from llmops.serving.local import LocalRuntime

    airflow_stack.wait_for_run(*rest_runs["rollout"], timeout=900)
    model = airflow_stack.demo_model
    assert model is not None and (model / "config.json").exists(), model
    store = open_store(airflow_stack.env["LLMOPS_STORE_URI"])
    manifest = Manifest.for_directory(model, model="tiny-llama", source_repo="llmops-demo/tiny-llama",
                                      source_sha="9" * 40, recipe="unquantized", serving_runtime="vllm",
                                      quantization_format="none", min_compute_capability=0.0, max_model_len=512)
    uri = store.publish(model, manifest.prefix, manifest)
    home = Path(airflow_stack.env["LLMOPS_HOME"])
    backend = LocalRuntime(home, DEPLOYMENT, "tiny-llama", serving_python=airflow_stack.env["LLMOPS_SERVING_PYTHON"])

    def trigger(**approval) -> str:
        return airflow_stack.trigger("model_rollout", {
            "deployment": DEPLOYMENT, "version": uri, "steps": [100], "analysis_window_s": 5, "thresholds": LENIENT,
            "approval": {"after_steps": [100], **approval}})

    try:
        yield trigger, backend, home, uri
    finally:
        backend.stop_all()


def task_instance(airflow_stack, run_id: str) -> dict:
    _, body = airflow_stack.api("GET", f"/dags/model_rollout/dagRuns/{run_id}/taskInstances/{TASK}")
    return body


def wait_for_the_gate(airflow_stack, run_id: str, home: Path) -> dict:
    """Until the task is parked awaiting input; returns its HITL detail (as the UI's Required Actions shows it)."""
    deadline = time.monotonic() + 1200  # a vLLM start takes minutes on a loaded 2-core machine
    while True:
        ti = task_instance(airflow_stack, run_id)
        if ti.get("state") == "awaiting_input":
            break
        assert ti.get("state") not in ("failed", "success", "upstream_failed"), airflow_stack.task_log(
            "model_rollout", run_id, TASK)[-4000:]
        assert time.monotonic() < deadline, f"never reached the gate: {ti}"
        time.sleep(2)
    status, detail = airflow_stack.api("GET", f"/dags/model_rollout/dagRuns/{run_id}/taskInstances/{TASK}/-1"
                                              "/hitlDetails")
    assert status == 200, detail
    seen = record(home)
    assert seen["run_id"] == run_id and seen["status"] == "active", seen
    assert seen["progress"]["plan"]["phase"] == "awaiting_approval", seen["progress"]["plan"]
    assert seen["owner"]["pid"] is None  # deferred: no process of the task holds the wait
    return detail


def answer(airflow_stack, run_id: str, choice: str) -> int:
    """Answer the request of the task's current try a few seconds after it appeared, as a person would (Airflow
    3.3.2 fails a task resumed before the scheduler has processed the end of the workload that parked it, and
    retries it; that workload's process took up to 5 s to exit here under load; see `decide`)."""
    ti = task_instance(airflow_stack, run_id)
    time.sleep(5)
    settled = task_instance(airflow_stack, run_id)
    assert settled["state"] == "awaiting_input" and settled["try_number"] == ti["try_number"], (ti, settled)
    status, body = airflow_stack.api("PATCH", f"/dags/model_rollout/dagRuns/{run_id}/taskInstances/{TASK}/-1"
                                              "/hitlDetails", {"chosen_options": [choice]})
    assert status == 200 and body["responded_by"]["name"] == "admin", body
    return settled["try_number"]


def decide(airflow_stack, run_id: str, choice: str, *, timeout: float) -> tuple[str, int]:
    """Answer, then wait for the run to end; returns (state, answers given). Should the answer still have hit
    Airflow's resume race, the retry takes the rollout over from its record and asks again (keeping the
    deadline): that request is answered too, once."""
    answers, deadline = 1, time.monotonic() + timeout
    answered_try = answer(airflow_stack, run_id, choice)
    while True:
        _, run = airflow_stack.api("GET", f"/dags/model_rollout/dagRuns/{run_id}")
        if run.get("state") in ("success", "failed"):
            return run["state"], answers
        ti = task_instance(airflow_stack, run_id)
        if ti.get("state") == "awaiting_input" and ti["try_number"] > answered_try:
            assert answers == 1, f"asked a third time: {ti}"
            print(f"[test_rollout_approval] try {ti['try_number']} asked again (Airflow's resume race); answering")
            answered_try, answers = answer(airflow_stack, run_id, choice), answers + 1
        assert time.monotonic() < deadline, f"run {run_id} still {run.get('state')}: {ti}"
        time.sleep(2)


def final_report(home: Path, run_id: str) -> str:
    return (home / "reports" / "rollouts" / DEPLOYMENT / run_id / "report.md").read_text()


def test_a_rejected_gate_rolls_back_while_the_canary_served_the_wait(airflow_stack, gated):
    trigger, backend, home, uri = gated
    run_id = trigger(timeout_s=1800)
    detail = wait_for_the_gate(airflow_stack, run_id, home)
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"], detail
    assert "tiny-llama to tiny-llama-chat after 100 %" in detail["subject"], detail["subject"]
    body = detail["body"]
    assert "**100 %** of traffic **passed**" in body and uri in body and "promote the canary to stable" in body, body
    link = next(line for line in body.splitlines() if "report so far" in line).split(": ", 1)[1]
    assert link.endswith("report.html") and "approval-100" in link, body
    # the canary keeps serving while the rollout waits
    _, canary_url = backend.endpoints()
    request = urllib.request.Request(f"{canary_url}/v1/completions", method="POST", headers={
        "Content-Type": "application/json"}, data=json.dumps({"model": "tiny-llama", "prompt": "One, two, three,",
                                                               "max_tokens": 2}).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        assert json.load(response)["choices"][0]["text"] is not None

    _, listing = airflow_stack.api("GET", "/dags/~/dagRuns/~/hitlDetails?response_received=false")
    assert [d["task_instance"]["dag_run_id"] for d in listing["hitl_details"]] == [run_id], listing
    assert decide(airflow_stack, run_id, "Reject", timeout=600)[0] == "failed"
    _, detail = airflow_stack.api("GET", f"/dags/model_rollout/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails")
    assert detail["chosen_options"] == ["Reject"] and detail["responded_by_user"]["name"] == "admin", detail
    final = record(home)
    assert final["status"] == "finished" and final["outcome"] == "rolled_back", final
    assert final["reason"] == "not approved at 100%: rejected by admin", final["reason"]
    assert "rejected by admin" in final_report(home, run_id)
    assert backend.load().canary is None and backend.lock_holder() is None


def test_an_unanswered_gate_times_out_and_its_default_rolls_back(airflow_stack, gated):
    trigger, backend, home, _ = gated
    run_id = trigger(timeout_s=5, on_timeout="reject")
    wait_for_the_gate(airflow_stack, run_id, home)  # the scheduler's sweep (every 15 s) answers for nobody
    assert airflow_stack.wait_for_run("model_rollout", run_id, timeout=600) == "failed"
    final = record(home)
    assert final["outcome"] == "rolled_back", final
    assert final["reason"] == "not approved at 100%: rejected: no answer within 5 s (on_timeout: reject)", final
    _, detail = airflow_stack.api("GET", f"/dags/model_rollout/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails")
    assert detail["chosen_options"] == ["Reject"] and detail["responded_by_user"] is None, detail
    assert "no answer within 5 s" in final_report(home, run_id)
    assert backend.load().canary is None


def test_an_approved_gate_promotes(airflow_stack, gated):
    trigger, backend, home, uri = gated
    run_id = trigger(timeout_s=1800)
    wait_for_the_gate(airflow_stack, run_id, home)
    canary = backend.load().canary
    state, answers = decide(airflow_stack, run_id, "Approve", timeout=900)
    assert state == "success", airflow_stack.task_log("model_rollout", run_id, TASK)[-4000:]
    final = record(home)
    assert final["outcome"] == "promoted", final
    report = final_report(home, run_id)
    assert "approved by admin" in report and "PROMOTED" in report
    served = backend.load()
    assert served.stable.version == uri and served.stable.pid == canary.pid and served.canary is None
    timeline = [event for _, _, event, _ in final["progress"]["plan"]["timeline"]]
    assert timeline.count("canary_deployed") == 1 and timeline.count("approved") == 1, timeline
