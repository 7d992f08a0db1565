"""The canary plan as a pure state machine: an observation in, the next state and action out.

    state = start(steps=[10, 50, 100], has_stable=True)      # action: deploy_canary
    state, action = advance(state, Observation("canary_deployed", at=t))
    ...

The effects (Kubernetes objects, local vLLM processes) live elsewhere; every decision lives here, so
the whole plan is tested exhaustively without servers. Any failure before promotion ends in
`roll_back` (canary removed, weights restored, stable untouched). A first deployment (no stable yet)
has nothing to compare with: it goes straight to 100 % after readiness and golden prompts.

A warm roll back (`start(..., warm=True)`: `version: previous` while the replaced version is still kept
running) checks the kept copy (`check_warm`: ready, golden prompts), shifts traffic to it (`restore_warm`),
then promotes its version (`promote`). A kept copy that fails its check, or errors before traffic moved,
turns the run into the normal canary rollout (`deploy_canary`); an error once traffic moves retries it.

A human gate (`approval_after`): after the passed analysis of a gated step the plan waits for a person
(`await_approval`); `approved` goes on (next step, or promote), `rejected` rolls back. A gated first
deployment waits after 100 %, before it is promoted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from llmops.config.schema import check_steps
from llmops.rollout.errors import InvalidTransition

Phase = Literal["checking_warm", "restoring", "deploying", "waiting_ready", "shifting", "analysing",
                "awaiting_approval", "promoting", "rolling_back", "promoted", "rolled_back"]
TERMINAL: tuple[Phase, ...] = ("promoted", "rolled_back")
PHASES: tuple[Phase, ...] = ("checking_warm", "restoring", "deploying", "waiting_ready", "shifting", "analysing",
                             "awaiting_approval", "promoting", "rolling_back", "promoted", "rolled_back")

ObservationKind = Literal["warm_ready", "warm_not_ready", "warm_restored", "canary_deployed", "canary_ready",
                          "canary_not_ready", "weights_set", "analysis_passed", "analysis_failed", "approved",
                          "rejected", "promoted", "rolled_back", "error"]
OBSERVATIONS: tuple[ObservationKind, ...] = ("warm_ready", "warm_not_ready", "warm_restored", "canary_deployed",
                                             "canary_ready", "canary_not_ready", "weights_set", "analysis_passed",
                                             "analysis_failed", "approved", "rejected", "promoted", "rolled_back",
                                             "error")

ActionKind = Literal["check_warm", "restore_warm", "deploy_canary", "wait_ready", "set_weights", "analyse",
                     "await_approval", "promote", "roll_back", "done"]


@dataclass(frozen=True)
class Observation:
    kind: ObservationKind
    at: float = 0.0
    detail: str = ""
    canary_percent: int | None = None


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    canary_percent: int | None = None
    step_index: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class TimelineEntry:
    at: float
    phase: Phase
    event: str
    detail: str = ""


@dataclass(frozen=True)
class PlanState:
    steps: tuple[int, ...]
    has_stable: bool
    phase: Phase = "deploying"
    step_index: int = -1
    canary_percent: int = 0
    reason: str = ""
    timeline: tuple[TimelineEntry, ...] = field(default_factory=tuple)
    approval_after: tuple[int, ...] = ()  # the steps whose passed analysis waits for a person

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    @property
    def outcome(self) -> str | None:
        return self.phase if self.done else None


def start(steps: list[int] | tuple[int, ...], *, has_stable: bool, at: float = 0.0,
          warm: bool = False, approval_after: list[int] | tuple[int, ...] = ()) -> tuple[PlanState, Action]:
    """The initial state and its first action. Without a stable version the steps collapse to [100] (and a
    gate, if any, to a gate after 100). `warm`: the version rolled out is kept running (warm roll back, no
    analysis, so no gate); the steps and the gate are kept for the cold fallback."""
    try:
        steps = tuple(check_steps(list(steps)))
    except ValueError as exc:
        raise InvalidTransition(f"steps {exc}") from None
    gates = tuple(approval_after)
    if any(g not in steps for g in gates):
        raise InvalidTransition(f"approval after {list(gates)} is not among the steps {list(steps)}")
    if not has_stable:
        steps, gates = (100,), ((100,) if gates else ())
    if warm and has_stable:
        state = PlanState(steps=steps, has_stable=has_stable, phase="checking_warm", approval_after=gates,
                          timeline=(TimelineEntry(at, "checking_warm", "start", "warm roll back: the kept copy"),))
        return state, Action("check_warm")
    detail = f"steps {list(steps)}" + (f", approval after {list(gates)}" if gates else "")
    state = PlanState(steps=steps, has_stable=has_stable, phase="deploying", approval_after=gates,
                      timeline=(TimelineEntry(at, "deploying", "start", detail),))
    return state, Action("deploy_canary")


def _go(state: PlanState, obs: Observation, phase: Phase, **changes) -> PlanState:
    entry = TimelineEntry(obs.at, phase, obs.kind, obs.detail)
    return replace(state, phase=phase, timeline=state.timeline + (entry,), **changes)


def _roll_back(state: PlanState, obs: Observation, reason: str) -> tuple[PlanState, Action]:
    return _go(state, obs, "rolling_back", reason=reason), Action("roll_back", reason=reason)


def _next_step(state: PlanState, obs: Observation) -> tuple[PlanState, Action]:
    index = state.step_index + 1
    percent = state.steps[index]
    new = _go(state, obs, "shifting", step_index=index)
    return new, Action("set_weights", canary_percent=percent, step_index=index)


def advance(state: PlanState, obs: Observation) -> tuple[PlanState, Action]:
    """Apply one observation. Raises InvalidTransition for an observation the phase cannot accept."""
    phase, kind = state.phase, obs.kind
    if phase in TERMINAL:
        raise InvalidTransition(f"the rollout already ended ({phase}); observation {kind!r} is not accepted")
    if kind == "error":
        if phase == "checking_warm":  # traffic has not moved: the normal (cold) rollout instead
            return _go(state, obs, "deploying"), Action("deploy_canary", reason=obs.detail)
        if phase == "restoring":  # traffic may have moved: finish moving it
            return _go(state, obs, "restoring"), Action("restore_warm", reason=obs.detail)
        if phase == "rolling_back":  # a failed roll back is retried, never abandoned
            return _go(state, obs, "rolling_back"), Action("roll_back", reason=state.reason or obs.detail)
        if phase == "promoting":  # promotion half done: finish it rather than leave two versions serving
            return _go(state, obs, "promoting"), Action("promote", reason=obs.detail)
        return _roll_back(state, obs, f"error while {phase}: {obs.detail}")
    expected: dict[Phase, tuple[ObservationKind, ...]] = {
        "checking_warm": ("warm_ready", "warm_not_ready"),
        "restoring": ("warm_restored",),
        "deploying": ("canary_deployed",),
        "waiting_ready": ("canary_ready", "canary_not_ready"),
        "shifting": ("weights_set",),
        "analysing": ("analysis_passed", "analysis_failed"),
        "awaiting_approval": ("approved", "rejected"),
        "promoting": ("promoted",),
        "rolling_back": ("rolled_back",),
    }
    if kind not in expected.get(phase, ()):
        raise InvalidTransition(f"phase {phase!r} expects {list(expected.get(phase, ()))}, got {kind!r}")

    if kind == "warm_ready":
        return _go(state, obs, "restoring"), Action("restore_warm")
    if kind == "warm_not_ready":
        return _go(state, obs, "deploying"), Action("deploy_canary", reason=obs.detail)
    if kind == "warm_restored":
        return _go(state, obs, "promoting", canary_percent=100), Action("promote")
    if kind == "canary_deployed":
        return _go(state, obs, "waiting_ready"), Action("wait_ready")
    if kind == "canary_not_ready":
        return _roll_back(state, obs, f"canary never became ready: {obs.detail}")
    if kind == "canary_ready":
        return _next_step(state, obs)
    if kind == "weights_set":
        percent = obs.canary_percent if obs.canary_percent is not None else state.steps[state.step_index]
        new = _go(state, obs, "analysing", canary_percent=percent)
        return new, Action("analyse", canary_percent=percent, step_index=state.step_index)
    if kind == "analysis_failed":
        return _roll_back(state, obs, f"analysis at {state.canary_percent}% failed: {obs.detail}")
    if kind == "analysis_passed" and state.canary_percent in state.approval_after:
        new = _go(state, obs, "awaiting_approval")
        return new, Action("await_approval", canary_percent=state.canary_percent, step_index=state.step_index)
    if kind == "rejected":
        return _roll_back(state, obs, f"not approved at {state.canary_percent}%: {obs.detail}")
    if kind in ("analysis_passed", "approved"):
        if state.step_index + 1 < len(state.steps):
            return _next_step(state, obs)
        return _go(state, obs, "promoting"), Action("promote")
    if kind == "promoted":
        return _go(state, obs, "promoted", canary_percent=0), Action("done", reason="promoted")
    # rolled_back
    return _go(state, obs, "rolled_back", canary_percent=0), Action("done", reason=state.reason)


def state_to_dict(state: PlanState) -> dict:
    """JSON-able form, so the plan can travel between Airflow tasks (XCom)."""
    return {"steps": list(state.steps), "has_stable": state.has_stable, "phase": state.phase,
            "step_index": state.step_index, "canary_percent": state.canary_percent, "reason": state.reason,
            "timeline": [[e.at, e.phase, e.event, e.detail] for e in state.timeline],
            "approval_after": list(state.approval_after)}


def state_from_dict(data: dict) -> PlanState:
    return PlanState(steps=tuple(data["steps"]), has_stable=data["has_stable"], phase=data["phase"],
                     step_index=data["step_index"], canary_percent=data["canary_percent"], reason=data["reason"],
                     timeline=tuple(TimelineEntry(*e) for e in data["timeline"]),
                     approval_after=tuple(data.get("approval_after") or ()))
