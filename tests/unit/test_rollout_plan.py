"""The canary plan state machine, exhaustively, without servers."""

from __future__ import annotations

import itertools

import pytest

from llmops.rollout.errors import InvalidTransition
from llmops.rollout.plan import (
    OBSERVATIONS,
    PHASES,
    TERMINAL,
    Observation,
    PlanState,
    advance,
    start,
)

VALID = {
    "checking_warm": {"warm_ready", "warm_not_ready", "error"},
    "restoring": {"warm_restored", "error"},
    "deploying": {"canary_deployed", "error"},
    "waiting_ready": {"canary_ready", "canary_not_ready", "error"},
    "shifting": {"weights_set", "error"},
    "analysing": {"analysis_passed", "analysis_failed", "error"},
    "awaiting_approval": {"approved", "rejected", "error"},
    "promoting": {"promoted", "error"},
    "rolling_back": {"rolled_back", "error"},
}


def drive(state, action, script):
    """Feed observations chosen by `script(action)` until the plan ends; return the final state and actions."""
    actions = [action]
    while not state.done:
        state, action = advance(state, script(action))
        actions.append(action)
        assert len(actions) < 100
    return state, actions


def test_happy_path_walks_every_step_then_promotes():
    state, action = start([10, 50, 100], has_stable=True)
    responses = {"deploy_canary": "canary_deployed", "wait_ready": "canary_ready", "set_weights": "weights_set",
                 "analyse": "analysis_passed", "promote": "promoted"}
    state, actions = drive(state, action, lambda a: Observation(responses[a.kind], canary_percent=a.canary_percent))
    assert state.outcome == "promoted"
    assert [a.canary_percent for a in actions if a.kind == "set_weights"] == [10, 50, 100]
    assert [a.kind for a in actions].count("analyse") == 3
    assert actions[-1].kind == "done" and state.canary_percent == 0


@pytest.mark.parametrize("failing_step", [0, 1, 2])
def test_a_failed_analysis_at_any_step_rolls_back_and_stops_shifting(failing_step):
    state, action = start([10, 50, 100], has_stable=True)
    seen = {"analyse": 0}

    def script(a):
        if a.kind == "analyse":
            seen["analyse"] += 1
            return Observation("analysis_failed" if seen["analyse"] == failing_step + 1 else "analysis_passed",
                               detail="p95 ratio 3.1 > 1.5")
        return Observation({"deploy_canary": "canary_deployed", "wait_ready": "canary_ready",
                            "set_weights": "weights_set", "roll_back": "rolled_back"}[a.kind],
                           canary_percent=a.canary_percent)

    state, actions = drive(state, action, script)
    assert state.outcome == "rolled_back"
    assert "p95 ratio 3.1" in state.reason
    assert [a.canary_percent for a in actions if a.kind == "set_weights"] == [10, 50, 100][: failing_step + 1]
    assert not any(a.kind == "promote" for a in actions)


def test_initial_deployment_without_stable_goes_straight_to_100():
    state, action = start([10, 50, 100], has_stable=False)
    assert state.steps == (100,)
    state, action = advance(state, Observation("canary_deployed"))
    state, action = advance(state, Observation("canary_ready"))
    assert action.kind == "set_weights" and action.canary_percent == 100


def test_not_ready_rolls_back():
    state, _ = start([50, 100], has_stable=True)
    state, _ = advance(state, Observation("canary_deployed"))
    state, action = advance(state, Observation("canary_not_ready", detail="timed out after 600 s"))
    assert action.kind == "roll_back" and "timed out" in action.reason


@pytest.mark.parametrize("steps", [[], [0, 100], [50], [50, 10, 100], [10, 10, 100], [10, 101]])
def test_bad_steps_are_refused(steps):
    with pytest.raises(InvalidTransition, match="fix"):
        start(steps, has_stable=True)


@pytest.mark.parametrize(("phase", "kind"), list(itertools.product(PHASES, OBSERVATIONS)))
def test_every_phase_accepts_exactly_its_observations(phase, kind):
    state = PlanState(steps=(10, 100), has_stable=True, phase=phase, step_index=0, canary_percent=10)
    if phase in TERMINAL or kind not in VALID.get(phase, set()):
        with pytest.raises(InvalidTransition):
            advance(state, Observation(kind))
        return
    new, action = advance(state, Observation(kind, detail="x"))
    assert new.timeline[-1].event == kind
    if kind == "error":
        # an error never promotes by accident and never abandons a roll back or a half-done promotion
        # (before a warm copy took traffic: the normal canary rollout; once it may have: finish moving it)
        assert action.kind == {"promoting": "promote", "checking_warm": "deploy_canary",
                               "restoring": "restore_warm"}.get(phase, "roll_back")
    if action.kind == "promote":
        assert phase in ("analysing", "awaiting_approval", "promoting", "restoring")
    if action.kind == "restore_warm":  # traffic goes to a kept copy only after its check passed
        assert phase in ("checking_warm", "restoring") and kind in ("warm_ready", "error")


def test_every_sequence_of_outcomes_promotes_only_when_all_passed():
    """All 2^3 analysis outcomes x ready/not ready: promotion iff ready and every step passed."""
    for ready in (True, False):
        for outcomes in itertools.product([True, False], repeat=3):
            state, action = start([10, 50, 100], has_stable=True)
            results = iter(outcomes)
            analysed = []

            def script(a, ready=ready, results=results, analysed=analysed):
                if a.kind == "analyse":
                    ok = next(results)
                    analysed.append(ok)
                    return Observation("analysis_passed" if ok else "analysis_failed")
                if a.kind == "wait_ready":
                    return Observation("canary_ready" if ready else "canary_not_ready")
                return Observation({"deploy_canary": "canary_deployed", "set_weights": "weights_set",
                                    "promote": "promoted", "roll_back": "rolled_back"}[a.kind])

            state, _ = drive(state, action, script)
            assert (state.outcome == "promoted") == (ready and all(outcomes)), (ready, outcomes)
            assert all(analysed[:-1]) if analysed else True  # it stops at the first failure


def test_a_gated_plan_promotes_only_when_every_step_passed_and_the_gate_was_approved():
    """All analysis outcomes x approved/rejected at a gate after 50: promotion iff all passed and approved;
    the gate is asked only when the gated step passed."""
    for approve in (True, False):
        for outcomes in itertools.product([True, False], repeat=3):
            state, action = start([10, 50, 100], has_stable=True, approval_after=[50])
            results, asked = iter(outcomes), []

            def script(a, approve=approve, results=results, asked=asked):
                if a.kind == "analyse":
                    return Observation("analysis_passed" if next(results) else "analysis_failed")
                if a.kind == "await_approval":
                    asked.append(a.canary_percent)
                    return Observation("approved" if approve else "rejected")
                return Observation({"deploy_canary": "canary_deployed", "wait_ready": "canary_ready",
                                    "set_weights": "weights_set", "promote": "promoted",
                                    "roll_back": "rolled_back"}[a.kind])

            state, _ = drive(state, action, script)
            assert (state.outcome == "promoted") == (all(outcomes) and approve), (approve, outcomes)
            assert asked == ([50] if all(outcomes[:2]) else []), (approve, outcomes, asked)


def test_plan_state_survives_a_round_trip_between_tasks():
    import json

    from llmops.rollout.plan import state_from_dict, state_to_dict

    state, _ = start([10, 100], has_stable=True, at=1.0)
    state, _ = advance(state, Observation("canary_deployed", 2.0, "x"))
    again = state_from_dict(json.loads(json.dumps(state_to_dict(state))))
    assert again == state
    assert advance(again, Observation("canary_ready"))[1].canary_percent == 10


def test_warm_roll_back_checks_the_kept_copy_then_moves_traffic_then_promotes_it():
    state, action = start([10, 50, 100], has_stable=True, warm=True)
    assert (state.phase, action.kind) == ("checking_warm", "check_warm")
    state, action = advance(state, Observation("warm_ready", detail="3 golden prompts passed"))
    assert action.kind == "restore_warm"
    state, action = advance(state, Observation("error", detail="route patch refused"))
    assert action.kind == "restore_warm"  # retried, never a canary while traffic may be on the copy
    state, action = advance(state, Observation("warm_restored"))
    assert action.kind == "promote"
    state, action = advance(state, Observation("promoted"))
    assert state.outcome == "promoted"
    assert [e.event for e in state.timeline] == ["start", "warm_ready", "error", "warm_restored", "promoted"]


@pytest.mark.parametrize("failure", [Observation("warm_not_ready", detail="kept copy expired"),
                                     Observation("error", detail="check_warm: connection refused")])
def test_a_kept_copy_that_fails_its_check_becomes_the_normal_canary_rollout(failure):
    state, action = start([10, 50, 100], has_stable=True, warm=True)
    state, action = advance(state, failure)
    assert action.kind == "deploy_canary" and state.steps == (10, 50, 100)
    state, action = advance(state, Observation("canary_deployed"))
    state, action = advance(state, Observation("canary_ready"))
    assert action.kind == "set_weights" and action.canary_percent == 10  # the configured steps, from the first


def test_without_a_stable_there_is_nothing_warm_to_go_back_to():
    state, action = start([10, 100], has_stable=False, warm=True)
    assert action.kind == "deploy_canary"
