"""The one rollout driver: pre-flight, then the plan's actions against a backend, then the report.

    ctx = RolloutContext(resolved, store=store, backend=backend, registry=registry, run_id=run_id, ...)
    me = Execution.new(try_number)              # this execution (an Airflow try, or a resumption of it)
    result = run(ctx, me)                       # start or resume this run's rollout; acts until it must wait
    while isinstance(result, Waiting):          # the Airflow operator defers here instead
        event = ...                             # a trigger (or `wait_blocking`) reports readiness
        result = run(ctx, me, event)            # the same execution resumes (its token travels in the progress)
    result.report, result.locations             # Finished: stored Markdown + HTML report

State model. Everything a rollout has decided lives in its record (`llmops.rollout.record`), stored beside the
deployment by the backend and written with a compare-and-swap at every transition of the plan, before the
next action is performed: the resolved request, the plan's `PlanState` and next `Action` with what was
measured so far (`RolloutProgress`), the attempts per action, who acts (the owner and its lease), and at the
end the outcome and report locations. `run` therefore never restarts a rollout of the same run:

- no record of this run: pre-flight (which refuses while another run's record holds the lock), then the
  record is created (or a finished record of an earlier run replaced) by CAS; the loser of a race re-reads;
- this run's record, finished: its outcome is returned as it stands (no action, no second report);
- active or halted, owned by a live execution of the same run: `run` returns `OwnedElsewhere`; the caller
  waits until the record says it ended or the owner went (lease over, process gone, or a later Airflow try;
  `record.look_again`) and calls `run` again (the operator defers on a record trigger, holding no worker
  slot; `run_blocking` polls);
- otherwise this execution takes it over and resumes from the stored action: every action is idempotent,
  so an action interrupted by a kill is simply performed again; attempts counted before an action survive
  retries; an owner whose write fails the CAS stops (`LostOwnership`) and waits like a second execution.

The driver returns only where something must be waited for (the canary ready, the stable track ready on
the new version: `Waiting`; a person's answer at a human gate: `AwaitingApproval`, see `llmops.rollout.approval`);
everything else (traffic steps, analysis, promote, roll back) runs here. The Airflow
operator, the tests (through `airflow dags test` and the scheduler), the demo and the benchmark all run it.
A roll back or promotion failing `MAX_ATTEMPTS` times halts the rollout: the record keeps the lock (status
`halted`), the report names the state it was left in, and clearing the task resumes it with fresh attempts.

Warm roll back (README "Warm roll back"). A promotion keeps the replaced version running for the deployment's
`rollout.keep_previous` (`begin_promote(keep=(replicas, until))`; the report says until when). `version: previous`
while that copy runs, serves the recorded previous version and has not expired takes the plan's warm path: the
copy's readiness and golden prompts are checked, traffic goes back to it (no new server), then its version is
promoted. Otherwise (expired, gone, or failing its check) it is the normal canary rollout. Clean-up happens at
rollouts, nothing runs periodically: every rollout of the deployment releases an expired copy once it holds the
lock, and any canary deployment releases the kept copy (its resources go to the canary; a promotion keeps the
version it replaces instead).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llmops.artefacts import ArtefactError, Manifest
from llmops.canary.analysis import analyse
from llmops.canary.metrics import metrics_path
from llmops.canary.probes import run_golden
from llmops.canary.verdict import decisive_failure, judge
from llmops.errors import InvalidValue
from llmops.rollout import approval as gate
from llmops.rollout import preflight as pf
from llmops.rollout.errors import PreflightError, RolloutInProgressError
from llmops.rollout.plan import (
    Action,
    Observation,
    PlanState,
    advance,
    start,
    state_from_dict,
    state_to_dict,
)
from llmops.rollout.record import Execution, LostOwnership, Owner, RolloutRecord, owner_gone
from llmops.rollout.report import (
    RolloutReport,
    StepReport,
    render_html,
    render_markdown,
    step_from_dict,
    step_to_dict,
)
from llmops.rollout.request import ResolvedRollout
from llmops.seams import pause_point
from llmops.serving import manifests as m
from llmops.serving.port import ArtefactFacts, Problem, Readiness, RolloutBackend, WaitTarget, WarmCopy
from llmops.serving.processes import process_alive

log = logging.getLogger(__name__)
MAX_ATTEMPTS = {"roll_back": 3, "promote": 2, "restore_warm": 3}  # then the rollout halts: a person has to look


@dataclass
class RolloutContext:
    """Everything one rollout acts on, built once per task execution by the caller."""

    resolved: ResolvedRollout
    store: Any
    backend: RolloutBackend
    registry: Any
    run_id: str
    report_dir: Path
    server_metrics: Callable[[str, int], dict] | None = None  # (track, window_s) -> PromQL numbers, optional
    journal: Journal | None = None  # set by `run` while this execution owns the record
    _manifests: dict[str, Manifest] = field(default_factory=dict)

    @property
    def deployment(self):
        return self.resolved.deployment

    def manifest(self, uri: str) -> Manifest:
        if uri not in self._manifests:
            self._manifests[uri] = self.store.resolve(uri, self.deployment.model)
        return self._manifests[uri]


@dataclass
class PreflightResult:
    manifest: Manifest
    facts: ArtefactFacts
    stable_version: str | None
    previous_version: str | None
    checks: list[str] = field(default_factory=list)
    warm: WarmCopy | None = None  # the kept copy this rollout (version previous) restores, if usable

    @property
    def unchanged(self) -> bool:
        return self.stable_version == self.manifest.uri


@dataclass
class RolloutProgress:
    """The rollout's persisted state: the plan, its next action, and what was measured so far."""

    manifest_uri: str
    stable_version: str | None
    plan: PlanState
    action: Action
    started_at: float
    manual_roll_back: bool = False
    canary_extra_args: list[str] = field(default_factory=list)
    steps: list[StepReport] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    wait_deadline: float | None = None
    execution: str = ""  # the token of the execution that owns the rollout (travels through the trigger)
    kept_until: float | None = None  # promotion: the replaced version runs warm until then (epoch seconds)
    kept_version: str | None = None

    @property
    def restored_warm(self) -> bool:
        """Traffic went back to a kept copy (warm roll back): nothing is kept at its promotion."""
        return any(e.event == "warm_restored" for e in self.plan.timeline)

    def to_dict(self) -> dict:
        return {"manifest_uri": self.manifest_uri, "stable_version": self.stable_version,
                "plan": state_to_dict(self.plan),
                "action": {"kind": self.action.kind, "canary_percent": self.action.canary_percent,
                           "step_index": self.action.step_index, "reason": self.action.reason},
                "started_at": self.started_at, "manual_roll_back": self.manual_roll_back,
                "canary_extra_args": list(self.canary_extra_args),
                "steps": [step_to_dict(s) for s in self.steps], "timings": dict(self.timings),
                "attempts": dict(self.attempts), "wait_deadline": self.wait_deadline, "execution": self.execution,
                "kept_until": self.kept_until, "kept_version": self.kept_version}

    @classmethod
    def from_dict(cls, data: dict) -> RolloutProgress:
        return cls(manifest_uri=data["manifest_uri"], stable_version=data["stable_version"],
                   plan=state_from_dict(data["plan"]), action=Action(**data["action"]),
                   started_at=data["started_at"], manual_roll_back=data.get("manual_roll_back", False),
                   canary_extra_args=list(data.get("canary_extra_args") or []),
                   steps=[step_from_dict(s) for s in data.get("steps") or []],
                   timings=dict(data.get("timings") or {}), attempts=dict(data.get("attempts") or {}),
                   wait_deadline=data.get("wait_deadline"), execution=data.get("execution", ""),
                   kept_until=data.get("kept_until"), kept_version=data.get("kept_version"))


@dataclass
class Waiting:
    """The driver stopped: `target` must become ready (or `timeout_s` pass) before `drive` continues."""

    target: WaitTarget
    timeout_s: float
    progress: RolloutProgress


@dataclass
class OwnedElsewhere:
    """Another live execution of this run carries the rollout on: call `run` again once `look_again` says so."""

    owner: Owner
    message: str


@dataclass
class AwaitingApproval:
    """The driver stopped at a human gate: resume with an answer event (`llmops.rollout.approval`). The wait is
    recorded (phase awaiting_approval, its deadline in `progress.wait_deadline`); the canary keeps serving."""

    request: gate.ApprovalRequest
    progress: RolloutProgress
    report: dict[str, str]  # the report so far (locations), which the request links to


@dataclass
class Finished:
    report: RolloutReport
    locations: dict[str, str]


# --- pre-flight ------------------------------------------------------------------------------------

def preflight(ctx: RolloutContext) -> PreflightResult:
    """Every check before any object is created; raises PreflightError listing all problems at once. Writes
    nothing: `run` takes the lock (creates the record) after it passed."""
    resolved, backend, deployment = ctx.resolved, ctx.backend, ctx.deployment
    subject = f"rollout of {deployment.model} to {deployment.name}"
    version = resolved.request.version
    previous = backend.previous_version()
    if version == "previous":  # manual roll back: the version the stable one replaced, as recorded on it
        version = previous
        if not version:
            raise PreflightError(subject, [Problem(
                "previous version", f"{deployment.name} records no previous version",
                "trigger with an explicit manifest URI instead of 'previous'")])
    try:
        manifest = ctx.store.resolve(version, deployment.model,
                                     runtime=deployment.serving_runtime if version == "latest" else None)
    except ArtefactError as exc:
        raise PreflightError(subject, [Problem("artefact", exc.what, exc.fix)]) from None
    ctx._manifests[manifest.uri or version] = manifest
    facts = ArtefactFacts.from_manifest(manifest, manifest.uri or version, manifest.model)
    problems = pf.check_not_in_progress(deployment.name, backend.lock_holder(), ctx.run_id)
    problems += pf.check_backend_runtime(deployment, backend.runtime)
    problems += pf.check_compatibility(facts, deployment, ctx.registry.gpu_profile(deployment.gpu_profile),
                                       getattr(ctx.registry, "gpu_profiles", None))
    verification = signature = None
    if not problems:  # downloading / capacity queries only for an artefact that could run at all
        verification = backend.verify_artefact(ctx.store, manifest)
        problems += pf.check_checksums(facts.uri, verification)
        keys, key_problems = pf.trusted_keys(deployment)
        signature = None if key_problems else ctx.store.verify_signature(manifest, keys)
        problems += key_problems + pf.check_signature(deployment, signature)
        problems += backend.capacity_problems(facts)
    pf.raise_if_problems(subject, problems)
    checks = ["artefact exists", pf.checksums_checked(verification), pf.signature_checked(signature),
              "compatible with GPU profile", "capacity", "no rollout running"]
    warm = backend.warm_copy() if resolved.request.version == "previous" else None
    if warm is not None and (warm.version != manifest.uri or warm.expired(time.time())):
        warm = None  # not the version asked for, or its time is over: the normal rollout (which releases it)
    if warm is not None:
        checks.append(f"kept warm until {_utc(warm.until)}: warm roll back")
    return PreflightResult(manifest, facts, backend.stable_version(), previous, checks, warm)


def objects_at_first_step(ctx: RolloutContext, pre: PreflightResult, *, fetch_image: str,
                          model_cache_pvc: str = "") -> list[dict]:
    """What a dry run would apply on Kubernetes at the first traffic step."""
    d = ctx.deployment
    canary = m.VersionRef(pre.manifest.uri, d.model, pre.manifest.tensor_parallel_size, pre.manifest.max_model_len)
    stable = m.VersionRef(pre.stable_version, d.model) if pre.stable_version else None
    return m.render_all(d, ctx.registry.gpu_profile(d.gpu_profile), stable=stable, canary=canary,
                        canary_percent=ctx.resolved.steps[0], rollout_run=ctx.run_id, fetch_image=fetch_image,
                        model_cache_pvc=model_cache_pvc)


# --- the loop --------------------------------------------------------------------------------------

def begin(ctx: RolloutContext, pre: PreflightResult) -> RolloutProgress:
    """The plan's initial state for a rollout that passed pre-flight."""
    now = time.time()
    state, action = start(ctx.resolved.steps, has_stable=pre.stable_version is not None, at=now,
                          warm=pre.warm is not None, approval_after=ctx.resolved.approval.after_steps)
    manual = ctx.resolved.request.version == "previous"
    return RolloutProgress(pre.manifest.uri or "", pre.stable_version, state, action, now, manual_roll_back=manual,
                    canary_extra_args=list(ctx.resolved.request.canary_extra_args or []))


def finish_unchanged(ctx: RolloutContext, pre: PreflightResult) -> Finished:
    """The requested version already serves: nothing to do, a short report is stored, the lock is freed."""
    report = _report(ctx, pre.manifest.uri or "", pre.stable_version, "unchanged",
                     f"{ctx.deployment.name} already serves this version")
    return _finish(ctx, report, pre.manifest)


def drive(ctx: RolloutContext, progress: RolloutProgress,
          event: dict | None = None) -> Waiting | AwaitingApproval | Finished:
    """Perform the plan's actions until the rollout must wait (`Waiting`) or ended (`Finished`).

    `event` is the readiness event that ended the last wait: `{"status": "ready"|"not_ready", "detail",
    "ready_s"}`, or the answer at a human gate (`llmops.rollout.approval`). Every failure of an action becomes
    an `error` observation; the plan decides what follows (roll back; retry a roll back; finish a half-done
    promotion). A roll back or promotion that keeps
    failing halts after `MAX_ATTEMPTS` (`_halt`), keeping the lock so no other rollout starts on a broken state.
    With `ctx.journal` (set by `run`) every transition is stored before the next action is performed.
    """
    backend = ctx.backend
    manifest = ctx.manifest(progress.manifest_uri)
    state, action = progress.plan, progress.action
    while not state.done:
        kind = action.kind
        if kind in MAX_ATTEMPTS and event is None and progress.attempts.get(kind, 0) >= MAX_ATTEMPTS[kind]:
            return _halt(ctx, progress, manifest, kind)  # (with an event, the last attempt's wait just ended)
        try:
            if kind == "check_warm":
                obs = _check_warm(ctx, progress)
            elif kind == "restore_warm":
                _count(ctx, progress, "restore_warm")
                backend.restore_warm(progress.manifest_uri)
                progress.timings["traffic_restored_s"] = round(time.time() - progress.started_at, 1)
                obs = Observation("warm_restored", time.time(), "traffic on the kept copy, no new server")
            elif kind == "deploy_canary":
                released = backend.release_warm()  # the canary gets its resources; a promotion keeps anew
                if released:
                    log.info("released the kept copy: %s", released)
                backend.deploy_canary(manifest, ctx.run_id, progress.canary_extra_args)
                obs = Observation("canary_deployed", time.time(), _extra_args_note(progress))
            elif kind == "wait_ready":
                if event is None:
                    return _wait(ctx, progress, state, action, backend.wait_target("canary", manifest))
                ready, event = _readiness(event), None
                progress.wait_deadline = None
                if ready.ready:
                    progress.timings["canary_ready_s"] = round(time.time() - progress.started_at, 1)
                    obs = Observation("canary_ready", time.time(), ready.detail)
                else:
                    obs = Observation("canary_not_ready", time.time(), ready.detail)
            elif kind == "set_weights":
                backend.set_weights(action.canary_percent or 0)
                obs = Observation("weights_set", time.time(), f"canary {action.canary_percent} %",
                                  canary_percent=action.canary_percent)
            elif kind == "analyse":
                step = analyse_step(ctx, action.canary_percent or 0)
                progress.steps.append(step)
                progress.timings["analysis_s"] = round(progress.timings.get("analysis_s", 0.0) + step.window_s, 1)
                log.info("verdict at %s %%: %s", action.canary_percent, step.verdict.summary)
                obs = Observation("analysis_passed" if step.verdict.passed else "analysis_failed", time.time(),
                                  step.verdict.summary)
            elif kind == "await_approval":
                if event is None:
                    return _await_approval(ctx, progress, state, action, manifest)
                obs, event = gate.observe(event, ctx.resolved.approval, at=time.time()), None
                progress.wait_deadline = None
                log.info("approval at %s %%: %s", action.canary_percent, obs.detail)
            elif kind == "promote":
                if event is None:
                    _count(ctx, progress, "promote")
                    if backend.begin_promote(manifest, _keep(ctx, progress)):
                        return _wait(ctx, progress, state, action, backend.wait_target("stable", manifest))
                else:
                    ready, event = _readiness(event), None
                    progress.wait_deadline = None
                    if not ready.ready:
                        raise RuntimeError(f"the stable track did not become ready on the new version: "
                                           f"{ready.detail}")
                backend.finish_promote()
                _kept_as_reported(ctx, progress)
                obs = Observation("promoted", time.time(), progress.manifest_uri)
            elif kind == "roll_back":
                _count(ctx, progress, "roll_back")
                backend.roll_back()
                obs = Observation("rolled_back", time.time(), action.reason)
            else:  # pragma: no cover - "done" only follows a terminal phase
                break
        except LostOwnership:
            raise
        except Exception as exc:  # every failure is an observation; the plan decides what follows
            log.exception("%s failed", kind)
            obs = Observation("error", time.time(), f"{kind}: {type(exc).__name__}: {exc}")
        state, action = advance(state, obs)
        progress.plan, progress.action = state, action
        _save(ctx, progress)  # the transition is stored before the next action is performed
    progress.timings["total_s"] = round(time.time() - progress.started_at, 1)
    reason = state.reason or "every analysis step passed"
    if state.phase == "promoted" and progress.restored_warm:
        reason = (f"warm roll back: the kept copy took the traffic again "
                  f"{progress.timings.get('traffic_restored_s', 0):.1f} s after the start (no new server), "
                  "after its readiness and golden prompts passed")
    report = _report(ctx, progress.manifest_uri, progress.stable_version, state.phase, reason, progress)
    return _finish(ctx, report, manifest, progress)


def _check_warm(ctx: RolloutContext, progress: RolloutProgress) -> Observation:
    """The kept copy before it takes traffic: still there, in time, ready (a real generation), golden prompts."""
    copy = ctx.backend.warm_copy()
    if copy is None or copy.version != progress.manifest_uri:
        return Observation("warm_not_ready", time.time(), "the kept copy is gone")
    if copy.expired(time.time()):
        return Observation("warm_not_ready", time.time(), f"the kept copy expired at {_utc(copy.until)}")
    ready = ctx.backend.check_ready(copy.target)
    if not ready.ready:
        return Observation("warm_not_ready", time.time(), f"the kept copy is not ready: {ready.detail}")
    golden = run_golden(copy.url, ctx.deployment.model, ctx.deployment.rollout.golden_prompts,
                        timeout_s=ctx.deployment.rollout.probe.timeout_s)
    failed = [g.prompt for g in golden if not g.passed]
    if failed:
        return Observation("warm_not_ready", time.time(), f"the kept copy fails golden prompts {failed}")
    return Observation("warm_ready", time.time(), f"ready, {len(golden)} golden prompts passed")


def _keep(ctx: RolloutContext, progress: RolloutProgress) -> tuple[int, float] | None:
    """What a promotion keeps of the version it replaces: (replicas, until), fixed at the first attempt so a retry
    keeps the same window; nothing after a warm roll back, or with keep_previous off."""
    keep = ctx.deployment.rollout.keep_previous
    if progress.restored_warm or not keep.enabled or not progress.stable_version:
        return None
    if progress.kept_until is None:
        progress.kept_until = time.time() + keep.minutes * 60
        progress.kept_version = progress.stable_version
        _save(ctx, progress)
    return keep.replicas, progress.kept_until


def _kept_as_reported(ctx: RolloutContext, progress: RolloutProgress) -> None:
    """The report names a kept copy only if the backend kept one (replica-ratio keeps nothing; locally a stable
    process that had died is not kept)."""
    if progress.kept_until is None:
        return
    copy = ctx.backend.warm_copy()
    if copy is None or copy.version != progress.kept_version:
        log.info("%s: the replaced version %s is not kept (the backend kept nothing)", ctx.deployment.name,
                 progress.kept_version)
        progress.kept_until = progress.kept_version = None


def _release_expired(ctx: RolloutContext) -> None:
    """Every rollout, once it holds the lock: a kept copy whose time is over is stopped / deleted."""
    try:
        copy = ctx.backend.warm_copy()
        if copy is not None and copy.expired(time.time()):
            log.info("released the expired kept copy of %s: %s", ctx.deployment.name, ctx.backend.release_warm())
    except Exception as exc:  # clean-up must not stop a rollout; the next one tries again
        log.warning("could not release the expired kept copy of %s: %s", ctx.deployment.name, exc)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _save(ctx: RolloutContext, progress: RolloutProgress, **changes) -> None:
    if ctx.journal is not None:
        ctx.journal.save(progress, **changes)


def _count(ctx: RolloutContext, progress: RolloutProgress, kind: str) -> None:
    """One more attempt of `kind`, stored before the attempt: a retry after a kill counts it too."""
    progress.attempts[kind] = progress.attempts.get(kind, 0) + 1
    _save(ctx, progress)


def _finish(ctx: RolloutContext, report: RolloutReport, manifest: Manifest,
            progress: RolloutProgress | None = None) -> Finished:
    """Store the one report of this run, then mark the record finished (which frees the lock). A kill in
    between leaves the record active: the next execution rewrites the same report key and finishes it."""
    locations = store_report(report, store=ctx.store, manifest=manifest, local_dir=ctx.report_dir)
    if ctx.journal is not None:
        ctx.journal.save(progress, status="finished", outcome=report.outcome, reason=report.reason,
                         report=locations)
    return Finished(report, locations)


def _halt(ctx: RolloutContext, progress: RolloutProgress, manifest: Manifest, kind: str) -> Finished:
    """`kind` failed MAX_ATTEMPTS times: keep the lock (status halted), report the state it was left in."""
    what = {"roll_back": "the canary may still run and take traffic; the stable track is untouched",
            "restore_warm": "traffic may be on the stable track, the kept copy, or split between them",
            "promote": "the stable track may run the old or the new version; the canary may still run"}[kind]
    last = progress.plan.timeline[-1].detail if progress.plan.timeline else ""
    reason = (f"{kind} failed {progress.attempts.get(kind, 0)} times (last: {last}); {what}. The rollout lock is "
              f"kept. Fix: remove the cause, then clear this task to resume the rollout from {kind}")
    report = _report(ctx, progress.manifest_uri, progress.stable_version, f"{kind}_failed", reason, progress)
    locations = store_report(report, store=None, manifest=manifest, local_dir=ctx.report_dir)
    if ctx.journal is not None:
        ctx.journal.save(progress, status="halted", outcome=report.outcome, reason=reason, report=locations)
    return Finished(report, locations)


def _extra_args_note(progress: RolloutProgress) -> str:
    return f"canary extra args {progress.canary_extra_args}" if progress.canary_extra_args else ""


def _readiness(event: dict) -> Readiness:
    return Readiness(event.get("status") == "ready", str(event.get("detail", "")))


def _wait(ctx: RolloutContext, progress: RolloutProgress, state: PlanState, action: Action,
          target: WaitTarget) -> Waiting:
    progress.plan, progress.action = state, action
    if progress.wait_deadline is None:
        progress.wait_deadline = time.time() + ctx.deployment.rollout.readiness_timeout_s
    timeout_s = max(1.0, progress.wait_deadline - time.time())
    # deferred: no process of this execution runs until the trigger fires; the lease covers the wait
    _save(ctx, progress, deferred=True, lease_s=timeout_s + ctx.deployment.rollout.lease_s)
    return Waiting(target, timeout_s, progress)


def _await_approval(ctx: RolloutContext, progress: RolloutProgress, state: PlanState, action: Action,
                    manifest: Manifest) -> AwaitingApproval:
    """Record the wait for a person (deferred: no process runs; the lease covers the wait) and build what the
    approver is asked, with the report so far (stored beside the version, under the gate's own key)."""
    progress.plan, progress.action = state, action
    spec = ctx.resolved.approval
    if progress.wait_deadline is None:  # a resumed execution keeps the first deadline
        progress.wait_deadline = time.time() + spec.timeout_s
    timeout_s = max(1.0, progress.wait_deadline - time.time())
    _save(ctx, progress, deferred=True, lease_s=timeout_s + ctx.deployment.rollout.lease_s)
    step = progress.steps[-1]
    report = _report(ctx, progress.manifest_uri, progress.stable_version, "awaiting_approval",
                     f"analysis at {step.canary_percent}% passed; waiting for approval", progress)
    locations = store_report(report, store=ctx.store, manifest=manifest, local_dir=ctx.report_dir,
                             key_suffix=f"approval-{step.canary_percent}")
    link = locations.get("store_html") or locations.get("local_html", "")
    request = gate.approval_request(
        deployment=ctx.deployment.name, model=ctx.deployment.model, run_id=ctx.run_id,
        canary_version=progress.manifest_uri, step=step,
        next_step=gate.next_step_text(state.steps, state.step_index), report_link=link, spec=spec,
        timeout_s=timeout_s)
    return AwaitingApproval(request, progress, locations)


def wait_blocking(backend: RolloutBackend, waiting: Waiting, *, poll_s: float = 2.0) -> dict:
    """Wait in this process with the same check the trigger runs; returns the trigger's event shape."""
    started = time.monotonic()
    deadline = started + waiting.timeout_s
    detail = "not checked yet"
    while time.monotonic() < deadline:
        ready = backend.check_ready(waiting.target)
        detail = ready.detail
        if ready.ready or ready.fatal:
            break
        time.sleep(poll_s)
    else:
        ready = Readiness(False, f"not ready after {waiting.timeout_s:.0f} s: {detail}")
    return {"status": "ready" if ready.ready else "not_ready", "detail": ready.detail,
            "ready_s": round(time.monotonic() - started, 1)}


def run_blocking(ctx: RolloutContext, me: Execution | None = None, *, poll_s: float = 2.0) -> Finished:
    """`run` to the end in this process (the benchmark); the DAG defers instead of blocking. Nobody can answer
    a human gate here: a gated rollout is refused before anything changes."""
    if ctx.resolved.approval.after_steps:
        raise InvalidValue(f"{ctx.deployment.name}'s rollout waits for approval after "
                           f"{ctx.resolved.approval.after_steps} %, which only the model_rollout DAG can ask a "
                           "person for", fix="run it through Airflow, or request approval.after_steps []")
    me = me or Execution.new()
    result = run(ctx, me)
    while not isinstance(result, Finished):
        if isinstance(result, OwnedElsewhere):
            log.info("%s", result.message)
            time.sleep(poll_s)
            result = run(ctx, me)
        else:
            result = run(ctx, me, wait_blocking(ctx.backend, result, poll_s=poll_s))
    return result


# --- the record: start, resume, wait, take over ------------------------------------------------------

class Journal:
    """This execution's handle on the record: every save is a compare-and-swap that renews the lease."""

    def __init__(self, ctx: RolloutContext, record: RolloutRecord, version: str, me: Execution):
        self.ctx, self.record, self.version, self.me = ctx, record, version, me
        self.saved_at = time.monotonic()

    @property
    def lease_s(self) -> float:
        return float(self.ctx.deployment.rollout.lease_s)

    def save(self, progress: RolloutProgress | None = None, *, status: str | None = None, deferred: bool = False,
             lease_s: float | None = None, **fields) -> None:
        record = self.record
        if progress is not None:
            record.progress = progress.to_dict()
        if status is not None:
            record.status = status
        for name, value in fields.items():
            setattr(record, name, value)
        record.owner = Owner.of(self.me, lease_s or self.lease_s, deferred=deferred)
        record.updated_at = time.time()
        version = self.ctx.backend.write_record(record.to_dict(), self.version)
        if version is None:
            raise LostOwnership(f"run {record.run_id}: another execution wrote the rollout record of "
                                f"{self.ctx.deployment.name} since this one did; this one stops acting",
                                fix="nothing to do: the other execution carries the rollout on")
        self.version, self.saved_at = version, time.monotonic()

    def heartbeat(self) -> None:
        """Renew the lease during long work (analysis) at a third of its length."""
        if time.monotonic() - self.saved_at >= self.lease_s / 3:
            self.save()


def _read(ctx: RolloutContext) -> tuple[RolloutRecord | None, str | None]:
    data, version = ctx.backend.read_record()
    return (RolloutRecord.from_dict(data) if data else None), version


def run(ctx: RolloutContext, me: Execution, event: dict | None = None
        ) -> Waiting | AwaitingApproval | OwnedElsewhere | Finished:
    """Start this run's rollout, or resume it from its record; or, while another live execution of the run owns
    it, return `OwnedElsewhere` (the caller waits for that one without acting).

    Raises PreflightError (refused before anything changed; RolloutInProgressError while another run holds
    the deployment). `event` is the readiness event (or the approval answer) of this execution's own wait; a
    takeover drops it (the new owner asks again, keeping the wait's deadline)."""
    while True:
        ctx.journal = None
        record, version = _read(ctx)
        if record is not None and record.run_id != ctx.run_id:
            if record.holds_lock:
                raise _in_progress(ctx, record)
            record = None  # an earlier run's finished record: replaced (at `version`) by this run's
        if record is not None:
            if record.status == "finished":
                log.info("run %s already finished its rollout of %s (%s): %s; no action taken, no new report",
                         ctx.run_id, ctx.deployment.name, record.outcome, record.reason)
                return _finished_as_recorded(ctx, record)
            gone = owner_gone(record.owner, me, pid_alive=process_alive)
            if record.owner is not None and record.owner.token != me.token and gone is None:
                return OwnedElsewhere(record.owner, (
                    f"run {ctx.run_id}'s rollout of {ctx.deployment.name} is carried on by another execution "
                    f"(try {record.owner.try_number}, {record.owner.host} pid {record.owner.pid}, lease "
                    f"{record.owner.lease_until - time.time():.0f} s more); waiting for it"))
            if record.owner is not None and record.owner.token != me.token:
                log.info("taking over run %s's rollout of %s: the execution that owned it is gone (%s)",
                         ctx.run_id, ctx.deployment.name, gone)
                event = None  # its wait (if any) is redone by this execution
        try:
            if record is None or record.progress is None:
                # a new rollout (or again: an execution killed between taking the lock and storing its plan)
                pre = preflight(ctx)
                journal = Journal(ctx, RolloutRecord(ctx.run_id, "active", ctx.resolved.model_dump(mode="json")),
                                  version, me)
                journal.save()  # the lock: created, or the earlier record replaced, by compare-and-swap
                ctx.journal = journal
                _release_expired(ctx)
                if pre.unchanged:
                    return finish_unchanged(ctx, pre)
                progress, event = begin(ctx, pre), None
            else:
                ctx.resolved = ResolvedRollout.model_validate(record.resolved)  # the request as it began
                progress = RolloutProgress.from_dict(record.progress)
                if record.status == "halted":
                    log.info("resuming halted run %s at %s with fresh attempts", ctx.run_id, progress.action.kind)
                    progress.attempts.pop(progress.action.kind, None)
                    record.status = "active"
                journal = Journal(ctx, record, version, me)
            progress.execution = me.token
            journal.save(progress)
            ctx.journal = journal
            return drive(ctx, progress, event)
        except LostOwnership as exc:  # another execution wrote first: look at the record again
            log.info("%s", exc)
            event = None


def _in_progress(ctx: RolloutContext, record: RolloutRecord) -> RolloutInProgressError:
    progress = record.progress or {}
    phase = (progress.get("plan") or {}).get("phase", "starting")
    fix = ("wait for that run to finish (or fail and roll back), then trigger again; this run is refused, not "
           "queued" if record.status == "active" else
           f"that run halted ({record.reason}); fix the cause and clear its rollout task to resume it")
    return RolloutInProgressError(f"rollout of {ctx.deployment.model} to {ctx.deployment.name}", [Problem(
        "rollout lock", f"deployment {ctx.deployment.name!r} is held by run {record.run_id!r} ({record.status}, "
                        f"phase {phase})", fix)])


def _finished_as_recorded(ctx: RolloutContext, record: RolloutRecord) -> Finished:
    progress = RolloutProgress.from_dict(record.progress) if record.progress else None
    report = _report(ctx, progress.manifest_uri if progress else "", progress.stable_version if progress else None,
                     record.outcome or "?", record.reason, progress)
    return Finished(report, dict(record.report))


# --- analysis --------------------------------------------------------------------------------------

def analyse_step(ctx: RolloutContext, canary_percent: int) -> StepReport:
    """One traffic step's analysis window: golden prompts, alternating load, /metrics; stops early on
    decisive evidence (golden prompts failing, errors over the threshold, the canary gone)."""
    spec = ctx.deployment.rollout
    thresholds = ctx.resolved.thresholds
    stable_url, canary_url = ctx.backend.endpoints()
    started = time.time()

    def stop_reason(observed) -> str | None:
        pause_point("analyse")  # a test seam (llmops.seams): kill tests stop the task here
        if ctx.journal is not None:
            ctx.journal.heartbeat()  # a long window keeps the lease (LostOwnership stops the analysis)
        return ctx.backend.canary_gone() or decisive_failure(observed, thresholds)

    observed = analyse(canary_url=canary_url, stable_url=stable_url, model=ctx.deployment.model,
                       golden_prompts=spec.golden_prompts, window_s=ctx.resolved.window_s,
                       requests=spec.probe.requests_per_round, concurrency=ctx.resolved.probe_concurrency,
                       max_tokens=spec.probe.max_tokens, pause_s=spec.probe.pause_s,
                       min_rounds=spec.probe.min_rounds, timeout_s=spec.probe.timeout_s,
                       max_consecutive_errors=spec.probe.max_consecutive_errors,
                       metrics_path=metrics_path(ctx.deployment.serving_runtime), stop_reason=stop_reason)
    gone = ctx.backend.canary_gone()
    if gone:  # a crash is named as such, not left to show as an error count
        observed = replace(observed, canary_gone=gone)
    if ctx.server_metrics is not None:
        observed.metrics["promql"] = {track: ctx.server_metrics(track, ctx.resolved.window_s)
                                      for track in ("stable", "canary")}
    verdict = judge(observed, thresholds)
    placement = getattr(ctx.backend, "placement", None)  # the local runtime's CPU sets; pods are the scheduler's
    return StepReport(canary_percent, verdict, observed.canary_rounds, observed.stable_rounds, observed.golden,
                      observed.metrics, round(time.time() - started, 1), observed.stopped_early,
                      placement() if placement else "")


# --- report ----------------------------------------------------------------------------------------

def _report(ctx: RolloutContext, canary_uri: str, stable_uri: str | None, outcome: str, reason: str,
            progress: RolloutProgress | None = None) -> RolloutReport:
    report = RolloutReport(ctx.deployment.name, ctx.deployment.model, ctx.backend.runtime, ctx.run_id, canary_uri,
                           stable_uri, outcome, reason, ctx.resolved.thresholds)
    if progress is not None:
        report.steps = list(progress.steps)
        report.timeline = [(e.at, e.phase, e.event, e.detail) for e in progress.plan.timeline]
        report.timings = dict(progress.timings)
        report.manual_roll_back = progress.manual_roll_back
        report.canary_extra_args = list(progress.canary_extra_args)
        report.warm_roll_back = progress.restored_warm
        if outcome == "promoted" and progress.kept_until is not None:
            report.kept_previous = {"version": progress.kept_version or "",
                                    "replicas": ctx.deployment.rollout.keep_previous.replicas,
                                    "until": progress.kept_until}
    report.probe = {"requests_per_round": ctx.deployment.rollout.probe.requests_per_round,
                    "concurrency": ctx.resolved.probe_concurrency, "window_s": ctx.resolved.window_s}
    return report


def store_report(report: RolloutReport, *, store: Any, manifest: Manifest, local_dir: Path,
                 key_suffix: str = "") -> dict[str, str]:
    """Write the report as Markdown and HTML locally and next to the artefact in the store. `key_suffix` keeps
    an interim report (a human gate's) apart from the final one."""
    markdown, page = render_markdown(report), render_html(report)
    local_dir = local_dir / key_suffix if key_suffix else local_dir
    local_dir.mkdir(parents=True, exist_ok=True)
    (local_dir / "report.md").write_text(markdown)
    (local_dir / "report.html").write_text(page)
    # one key per run (write-once): a resumed or repeated execution of the run cannot add a second report
    key = f"{manifest.prefix}/rollouts/{report.deployment}/{report.run_id.replace('/', '_')}"
    key = f"{key}/{key_suffix}" if key_suffix else key
    locations = {"local_markdown": str(local_dir / "report.md"), "local_html": str(local_dir / "report.html")}
    if store is None:  # a halted rollout: the final report comes when it is resumed
        return locations
    try:
        # reports sit beside the immutable version (not listed in its manifest, never fetched with it)
        locations["store_markdown"] = store.put_beside(key, "report.md", markdown.encode())
        locations["store_html"] = store.put_beside(key, "report.html", page.encode())
    except Exception as exc:  # a report that cannot be uploaded must not turn a good rollout into a failure
        log.warning("could not store the report next to the artefact: %s", exc)
    return locations
