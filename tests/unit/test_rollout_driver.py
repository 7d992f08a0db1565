"""The driver's persisted progress travels through a trigger (JSON) and comes back unchanged: nothing is replayed."""

from __future__ import annotations

import json

from llmops.canary.verdict import Observations, ProbeRound, Thresholds, judge
from llmops.golden import GoldenOutcome
from llmops.rollout.driver import RolloutProgress
from llmops.rollout.plan import Observation, advance, start
from llmops.rollout.report import StepReport


def test_progress_round_trips_through_json():
    state, action = start([50, 100], has_stable=True, at=1.0)
    for obs in (Observation("canary_deployed", 2.0), Observation("canary_ready", 3.0, "generated")):
        state, action = advance(state, obs)
    rounds = [ProbeRound("canary", 16, 0, 0.1, 0.2, 0.01, 0.02, 4.0, (0.1, 0.2))]
    verdict = judge(Observations([GoldenOutcome("a", True, "b")], rounds, rounds), Thresholds(min_rounds=1))
    progress = RolloutProgress("file:///m/manifest.json", "file:///s/manifest.json", state, action, 1.0,
                        canary_extra_args=["--max-num-seqs", "1"],
                        steps=[StepReport(50, verdict, rounds, rounds, [GoldenOutcome("a", True, "b")], {}, 5.0,
                                          "golden prompts failing")],
                        timings={"canary_ready_s": 2.0}, attempts={"roll_back": 1}, wait_deadline=99.0)
    again = RolloutProgress.from_dict(json.loads(json.dumps(progress.to_dict())))
    assert again == progress
    assert again.action.kind == "set_weights" and again.action.canary_percent == 50


def test_who_may_take_a_rollout_over():
    from llmops.rollout.record import Execution, Owner, owner_gone

    me = Execution("me", 2, "host-a", 100)
    alive, dead = (lambda pid: True), (lambda pid: False)
    lease = Owner("other", 2, "host-a", 200, lease_until=1000.0)
    assert owner_gone(lease, me, pid_alive=alive, now=999.0) is None  # a live owner is waited for
    assert "lease ended" in owner_gone(lease, me, pid_alive=alive, now=1001.0)
    assert "exited" in owner_gone(lease, me, pid_alive=dead, now=999.0)  # same host, its process is gone
    elsewhere = Owner("other", 2, "host-b", 200, lease_until=1000.0)
    assert owner_gone(elsewhere, me, pid_alive=dead, now=999.0) is None  # another host's pid says nothing
    earlier_try = Owner("other", 1, "host-b", 200, lease_until=1000.0)
    assert "try 2" in owner_gone(earlier_try, me, pid_alive=alive, now=999.0)
    deferred = Owner("other", 2, "host-a", None, lease_until=1000.0)  # no process while deferred: the lease
    assert owner_gone(deferred, me, pid_alive=dead, now=999.0) is None
    assert owner_gone(Owner("me", 2, "host-a", 100, 0.0), me, pid_alive=dead, now=999.0) is None  # itself


def test_when_a_waiting_execution_looks_at_the_record_again():
    """What the operator's record trigger asks while another live execution of the run owns the rollout."""
    from llmops.rollout.record import Execution, Owner, RolloutRecord, look_again

    me = Execution("me", 1, "host-a", None)
    alive, dead = (lambda pid: True), (lambda pid: False)
    owner = Owner("other", 1, "host-a", 200, lease_until=1000.0)
    active = RolloutRecord("run-1", "active", {}, owner=owner).to_dict()
    assert look_again(active, "run-1", "other", me, pid_alive=alive, now=999.0) is None  # it still acts
    assert "gone" in look_again(active, "run-1", "other", me, pid_alive=dead, now=999.0)
    assert "gone" in look_again(active, "run-1", "other", me, pid_alive=alive, now=1001.0)  # its lease ended
    assert "another execution" in look_again(active, "run-1", "third", me, pid_alive=alive, now=999.0)
    for status in ("finished", "halted"):
        ended = RolloutRecord("run-1", status, {}, owner=owner).to_dict()
        assert status in look_again(ended, "run-1", "other", me, pid_alive=alive, now=999.0)
    assert "replaced" in look_again(None, "run-1", "other", me, pid_alive=alive, now=999.0)
    assert "replaced" in look_again({**active, "run_id": "run-2"}, "run-1", "other", me, pid_alive=alive, now=999.0)


def test_a_roll_back_that_keeps_failing_halts_with_the_lock_kept_and_a_named_state(tmp_path):
    """The attempts are counted in the stored progress before each attempt: a kill and a retry do not reset them.
    The backend's roll back fails (a real LocalRuntime whose state file cannot be written: a directory is in
    its place); after MAX_ATTEMPTS the record is halted, the lock held, and the report says what was left."""
    from llmops.config import load_registry
    from llmops.rollout import driver
    from llmops.rollout.record import Execution, RolloutRecord
    from llmops.rollout.request import RolloutRequest, resolve_request
    from llmops.serving.local import LocalRuntime

    registry = load_registry()
    backend = LocalRuntime(tmp_path, "tiny-llama-chat", "tiny-llama", serving_python="python")
    backend.state_path.mkdir()  # every roll back fails to read its state
    resolved = resolve_request(RolloutRequest(deployment="tiny-llama-chat", version="file:///x/manifest.json"),
                               registry)
    ctx = driver.RolloutContext(resolved, None, backend, registry, "manual__halt", tmp_path / "report")
    state, action = start([100], has_stable=True, at=1.0)
    state, action = advance(state, Observation("error", 2.0, "deploy_canary: boom"))
    assert action.kind == "roll_back"
    progress = RolloutProgress("file:///x/manifest.json", None, state, action, 1.0, attempts={"roll_back": 1})
    me = Execution.new(1)
    record = RolloutRecord("manual__halt", "active", resolved.model_dump(mode="json"), progress.to_dict())
    version = backend.write_record(record.to_dict(), None)
    ctx.journal = driver.Journal(ctx, record, version, me)
    ctx._manifests["file:///x/manifest.json"] = type("M", (), {"prefix": "models/x", "uri": "file:///x/manifest.json"})()
    finished = driver.drive(ctx, progress)
    assert finished.report.outcome == "roll_back_failed" and "lock is kept" in finished.report.reason
    assert "canary may still run" in finished.report.reason
    stored = RolloutRecord.from_dict(backend.read_record()[0])
    assert stored.status == "halted" and stored.progress["attempts"] == {"roll_back": 3}
    assert backend.lock_holder() == "manual__halt"
