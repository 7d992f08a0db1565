"""The human gate's pure parts: where the plan waits, what an answer decides, the registry and form rules, and
the driver's wait recorded in the rollout record (a real local runtime's record; no server is started)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmops.canary.verdict import Observations, ProbeRound, Thresholds, judge
from llmops.config.schema import ApprovalSpec, RolloutSpec
from llmops.errors import ConfigError
from llmops.golden import GoldenOutcome
from llmops.rollout import approval as gate
from llmops.rollout.errors import InvalidTransition
from llmops.rollout.plan import Observation, advance, start, state_from_dict, state_to_dict
from llmops.rollout.report import StepReport

PROMPTS = [{"prompt": "One, two, three,", "expect_substring": "four"}]


def to_analysis(steps, percent, *, gates=(), has_stable=True):
    state, action = start(steps, has_stable=has_stable, at=1.0, approval_after=gates)
    state, action = advance(state, Observation("canary_deployed", 2.0))
    state, action = advance(state, Observation("canary_ready", 3.0))
    while True:
        state, action = advance(state, Observation("weights_set", 4.0, canary_percent=action.canary_percent))
        if action.canary_percent == percent:
            return state, action
        state, action = advance(state, Observation("analysis_passed", 5.0))


def test_a_passed_gated_step_waits_and_an_approval_goes_on_to_the_next_step():
    state, action = to_analysis([10, 50, 100], 50, gates=[50])
    state, action = advance(state, Observation("analysis_passed", 6.0, "all checks passed"))
    assert (state.phase, action.kind, action.canary_percent) == ("awaiting_approval", "await_approval", 50)
    assert state_from_dict(state_to_dict(state)) == state  # the gate survives the record
    state, action = advance(state, Observation("approved", 7.0, "approved by alice"))
    assert (state.phase, action.kind, action.canary_percent) == ("shifting", "set_weights", 100)
    state, action = advance(state, Observation("weights_set", 8.0, canary_percent=100))
    state, action = advance(state, Observation("analysis_passed", 9.0))
    assert action.kind == "promote"  # 100 is not gated: one wait only


def test_ungated_steps_and_failed_analyses_never_wait():
    state, action = to_analysis([10, 50, 100], 10, gates=[50])
    assert advance(state, Observation("analysis_passed", 6.0))[1].kind == "set_weights"
    state, action = to_analysis([10, 50, 100], 50, gates=[50])
    assert advance(state, Observation("analysis_failed", 6.0, "golden"))[1].kind == "roll_back"


def test_a_rejection_rolls_back_naming_who_decided():
    state, _ = to_analysis([50, 100], 100, gates=[100])
    state, action = advance(state, Observation("analysis_passed", 6.0))
    assert action.kind == "await_approval"  # a gate after 100: approve the promotion
    state, action = advance(state, Observation("rejected", 7.0, "rejected by bob"))
    assert action.kind == "roll_back" and state.reason == "not approved at 100%: rejected by bob"
    with pytest.raises(InvalidTransition):
        advance(state, Observation("approved", 8.0))


def test_a_gated_first_deployment_waits_before_it_is_promoted():
    state, action = start([10, 50, 100], has_stable=False, approval_after=[50])
    assert state.steps == (100,) and state.approval_after == (100,)
    state, _ = start([10, 50, 100], has_stable=False)
    assert state.approval_after == ()
    with pytest.raises(InvalidTransition, match="approval after"):
        start([10, 100], has_stable=True, approval_after=[50])


@pytest.mark.parametrize(("answer", "spec", "kind", "detail"), [
    ({"choice": "Approve", "by": "alice"}, ApprovalSpec(), "approved", "approved by alice"),
    ({"choice": "Reject", "by": "bob"}, ApprovalSpec(), "rejected", "rejected by bob"),
    ({"choice": "Reject", "timed_out": True}, ApprovalSpec(timeout_s=5), "rejected",
     "rejected: no answer within 5 s (on_timeout: reject)"),
    ({"choice": "Approve", "timed_out": True}, ApprovalSpec(on_timeout="approve"), "approved",
     "approved: no answer within 3600 s (on_timeout: approve)"),
    ({"choice": "Maybe", "by": "eve"}, ApprovalSpec(), "rejected", "rejected: the answer 'Maybe' is neither"),
    ({"choice": "Approve"}, ApprovalSpec(), "approved", "approved by an unnamed user"),
])
def test_an_answer_becomes_an_observation_naming_who_or_what_decided(answer, spec, kind, detail):
    obs = gate.observe({"approval": answer}, spec, at=1.0)
    assert obs.kind == kind and obs.detail.startswith(detail), obs


def passed_step(percent: int) -> StepReport:
    rounds = [ProbeRound("canary", 16, 0, 0.1, 0.2, 0.01, 0.02, 4.0, (0.1, 0.2))] * 3
    golden = [GoldenOutcome("One, two, three,", True, " four")]
    verdict = judge(Observations(golden, rounds, rounds), Thresholds(min_rounds=1))
    assert verdict.passed
    return StepReport(percent, verdict, rounds, rounds, golden, {}, 5.0, "")


def test_the_request_shows_the_verdict_the_report_and_what_each_option_does():
    step = passed_step(50)
    request = gate.approval_request(deployment="chat", model="tiny", run_id="manual__1", canary_version="file:///v",
                                    step=step, next_step=gate.next_step_text((10, 50, 100), 1),
                                    report_link="file:///r/report.html", spec=ApprovalSpec(on_timeout="approve"),
                                    timeout_s=60)
    assert request.options == ("Approve", "Reject") and request.default == "Approve" and request.timeout_s == 60
    assert "tiny to chat after 50 %" in request.subject
    for text in (step.verdict.summary, "file:///r/report.html", "go on to 100 % canary traffic", "roll back",
                 "no answer within 60 s: **Approve**", "manual__1"):
        assert text in request.body, (text, request.body)
    assert gate.next_step_text((10, 50, 100), 2) == "promote the canary to stable"


def test_the_registry_refuses_a_gate_that_is_not_a_step_or_more_than_one():
    with pytest.raises(ValidationError, match=r"approval.after_steps \[30\] is not among the traffic steps"):
        RolloutSpec(steps=[10, 50, 100], golden_prompts=PROMPTS, approval={"after_steps": [30]})
    with pytest.raises(ValidationError, match="at most 1 item"):
        RolloutSpec(golden_prompts=PROMPTS, approval={"after_steps": [10, 50]})
    with pytest.raises(ValidationError, match="on_timeout"):
        RolloutSpec(golden_prompts=PROMPTS, approval={"after_steps": [50], "on_timeout": "ignore"})
    assert RolloutSpec(golden_prompts=PROMPTS).approval.after_steps == []  # no gate unless asked


def test_the_form_overrides_only_the_keys_given_and_the_gate_must_be_a_step_of_the_run():
    from llmops.config import load_registry
    from llmops.rollout.request import RolloutRequest, resolve_request

    registry = load_registry()
    base = {"deployment": "tiny-llama-chat", "version": "latest"}
    resolved = resolve_request(RolloutRequest.from_params(
        {**base, "approval": {"after_steps": [50], "timeout_s": None, "on_timeout": None}}), registry)
    assert resolved.approval == ApprovalSpec(after_steps=[50])  # timeout and on_timeout from the registry
    assert "approval after 50 %, reject after 3600 s without an answer (form)" in resolved.summary()
    assert resolve_request(RolloutRequest.from_params(base), registry).approval.after_steps == []
    with pytest.raises(ConfigError, match=r"approval.*\[50\] is not among the traffic steps \[100\]"):
        resolve_request(RolloutRequest.from_params({**base, "steps": [100], "approval": {"after_steps": [50]}}),
                        registry)


def test_the_operator_reads_airflows_resume_event_as_an_answer():
    from llmops_airflow.operators.rollout import approval_answer

    answered = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": {"id": "7", "name": "alice"},
                "timedout": False}
    assert approval_answer(answered) == {"choice": "Approve", "by": "alice", "timed_out": False}
    swept = {"chosen_options": ["Reject"], "params_input": {}, "responded_by_user": None, "timedout": True}
    assert approval_answer(swept) == {"choice": "Reject", "by": None, "timed_out": True}
    error = {"error": "The Human-in-the-loop response timeout has passed", "error_type": "timeout"}
    assert approval_answer(error)["timed_out"] is True


def test_the_driver_records_the_wait_and_a_rejection_rolls_back_with_who_decided(tmp_path):
    """From a passed analysis at a gated step: the driver stores the wait (phase awaiting_approval, no process
    owns it, the lease covers the timeout, the deadline kept) and returns the request with the report so far;
    resumed with a rejection it rolls back (a local runtime with nothing running) and the report says who."""
    import time

    from llmops.config import load_registry
    from llmops.rollout import driver
    from llmops.rollout.record import Execution, RolloutRecord
    from llmops.rollout.request import RolloutRequest, resolve_request
    from llmops.serving.local import LocalRuntime

    registry = load_registry()
    backend = LocalRuntime(tmp_path, "tiny-llama-chat", "tiny-llama", serving_python="python")
    resolved = resolve_request(RolloutRequest(deployment="tiny-llama-chat", version="file:///x/manifest.json",
                                              approval={"after_steps": [50], "timeout_s": 120}), registry)
    ctx = driver.RolloutContext(resolved, None, backend, registry, "manual__gate", tmp_path / "report")
    state, action = to_analysis([10, 50, 100], 50, gates=[50])
    state, action = advance(state, Observation("analysis_passed", 6.0, "passed"))
    progress = driver.RolloutProgress("file:///x/manifest.json", "file:///s/manifest.json", state, action, 1.0,
                                      steps=[passed_step(10), passed_step(50)])
    me = Execution.new(1)
    progress.execution = me.token
    record = RolloutRecord("manual__gate", "active", resolved.model_dump(mode="json"), progress.to_dict())
    ctx.journal = driver.Journal(ctx, record, backend.write_record(record.to_dict(), None), me)
    ctx._manifests["file:///x/manifest.json"] = type("M", (), {"prefix": "models/x", "uri": "file:///x/manifest.json"})()

    waiting = driver.drive(ctx, progress)
    assert isinstance(waiting, driver.AwaitingApproval)
    assert waiting.request.default == "Reject" and 110 < waiting.request.timeout_s <= 120
    assert waiting.report["local_html"] in waiting.request.body and "approval-50" in waiting.report["local_html"]
    stored = RolloutRecord.from_dict(backend.read_record()[0])
    assert stored.progress["plan"]["phase"] == "awaiting_approval" and stored.owner.pid is None
    assert stored.owner.lease_until > time.time() + 110 and stored.holds_lock
    deadline = stored.progress["wait_deadline"]

    again = driver.drive(ctx, driver.RolloutProgress.from_dict(stored.progress))  # asked again: same deadline
    assert again.progress.wait_deadline == deadline

    finished = driver.drive(ctx, again.progress, {"approval": {"choice": "Reject", "by": "bob"}})
    assert finished.report.outcome == "rolled_back"
    assert finished.report.reason == "not approved at 50%: rejected by bob"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "rejected by bob" in markdown and "ROLLED_BACK" in markdown
    final = RolloutRecord.from_dict(backend.read_record()[0])
    assert final.status == "finished" and final.outcome == "rolled_back"



def test_the_blocking_runner_refuses_a_gate_before_anything_changes(tmp_path):
    """bench/rollout.py's runner has nobody to ask: a gated request is refused before pre-flight (no record)."""
    from llmops.config import load_registry
    from llmops.errors import InvalidValue
    from llmops.rollout import driver
    from llmops.rollout.request import RolloutRequest, resolve_request
    from llmops.serving.local import LocalRuntime

    registry = load_registry()
    backend = LocalRuntime(tmp_path, "tiny-llama-chat", "tiny-llama", serving_python="python")
    resolved = resolve_request(RolloutRequest(deployment="tiny-llama-chat", version="file:///x/manifest.json",
                                              approval={"after_steps": [50]}), registry)
    ctx = driver.RolloutContext(resolved, None, backend, registry, "manual__bench", tmp_path / "report")
    with pytest.raises(InvalidValue, match="only the model_rollout DAG can ask"):
        driver.run_blocking(ctx)
    assert backend.read_record()[0] is None
