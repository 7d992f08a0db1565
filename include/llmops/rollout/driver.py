"""The one rollout driver: pre-flight, then the plan's actions against a backend, then the report.

    ctx = RolloutContext(resolved, store=store, backend=backend, registry=registry, run_id=run_id, ...)
    pre = preflight(ctx)                        # every check before anything is created; takes the lock
    progress = begin(ctx, pre)                  # the plan's first state
    result = drive(ctx, progress)               # acts until it must wait or the rollout ended
    while isinstance(result, Waiting):          # the Airflow operator defers here instead
        event = ...                             # a trigger (or `wait_blocking`) reports readiness
        result = drive(ctx, result.progress, event)
    result.report, result.locations             # Finished: stored Markdown + HTML report

The driver carries the plan's `PlanState` forward in `RolloutProgress` (JSON-able, so it travels through a
trigger and back): nothing is replayed. It returns only where something must be waited for (the
canary ready, the stable track ready on the new version); everything else (traffic steps, analysis,
promote, roll back) runs here. The Airflow operator, the tests (through `airflow dags test`), the demo
and the benchmark all run this module.
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
from llmops.canary.verdict import decisive_failure, judge
from llmops.rollout import preflight as pf
from llmops.rollout.errors import PreflightError
from llmops.rollout.plan import (
    Action,
    Observation,
    PlanState,
    advance,
    start,
    state_from_dict,
    state_to_dict,
)
from llmops.rollout.report import (
    RolloutReport,
    StepReport,
    render_html,
    render_markdown,
    step_from_dict,
    step_to_dict,
)
from llmops.rollout.request import ResolvedRollout
from llmops.serving import manifests as m
from llmops.serving.port import ArtefactFacts, Problem, Readiness, RolloutBackend, WaitTarget

log = logging.getLogger(__name__)
MAX_ATTEMPTS = {"roll_back": 3, "promote": 2}  # then the driver raises: a person has to look


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

    def to_dict(self) -> dict:
        return {"manifest_uri": self.manifest_uri, "stable_version": self.stable_version,
                "plan": state_to_dict(self.plan),
                "action": {"kind": self.action.kind, "canary_percent": self.action.canary_percent,
                           "step_index": self.action.step_index, "reason": self.action.reason},
                "started_at": self.started_at, "manual_roll_back": self.manual_roll_back,
                "canary_extra_args": list(self.canary_extra_args),
                "steps": [step_to_dict(s) for s in self.steps], "timings": dict(self.timings),
                "attempts": dict(self.attempts), "wait_deadline": self.wait_deadline}

    @classmethod
    def from_dict(cls, data: dict) -> RolloutProgress:
        return cls(manifest_uri=data["manifest_uri"], stable_version=data["stable_version"],
                   plan=state_from_dict(data["plan"]), action=Action(**data["action"]),
                   started_at=data["started_at"], manual_roll_back=data.get("manual_roll_back", False),
                   canary_extra_args=list(data.get("canary_extra_args") or []),
                   steps=[step_from_dict(s) for s in data.get("steps") or []],
                   timings=dict(data.get("timings") or {}), attempts=dict(data.get("attempts") or {}),
                   wait_deadline=data.get("wait_deadline"))


@dataclass
class Waiting:
    """The driver stopped: `target` must become ready (or `timeout_s` pass) before `drive` continues."""

    target: WaitTarget
    timeout_s: float
    progress: RolloutProgress


@dataclass
class Finished:
    report: RolloutReport
    locations: dict[str, str]


# --- pre-flight ------------------------------------------------------------------------------------

def preflight(ctx: RolloutContext, *, acquire: bool = True) -> PreflightResult:
    """Every check before any object is created; raises PreflightError listing all problems at once."""
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
    if acquire and not backend.acquire(ctx.run_id):
        pf.raise_if_problems(subject, pf.check_not_in_progress(deployment.name, backend.lock_holder() or "?",
                                                               ctx.run_id))
    checks = ["artefact exists", pf.checksums_checked(verification), pf.signature_checked(signature),
              "compatible with GPU profile", "capacity", "no rollout running"]
    return PreflightResult(manifest, facts, backend.stable_version(), previous, checks)


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
    state, action = start(ctx.resolved.steps, has_stable=pre.stable_version is not None, at=now)
    manual = ctx.resolved.request.version == "previous"
    return RolloutProgress(pre.manifest.uri or "", pre.stable_version, state, action, now, manual_roll_back=manual,
                    canary_extra_args=list(ctx.resolved.request.canary_extra_args or []))


def finish_unchanged(ctx: RolloutContext, pre: PreflightResult) -> Finished:
    """The requested version already serves: nothing to do, the lock is released, a short report is stored."""
    ctx.backend.release(ctx.run_id)
    report = _report(ctx, pre.manifest.uri or "", pre.stable_version, "unchanged",
                     f"{ctx.deployment.name} already serves this version")
    return Finished(report, store_report(report, store=ctx.store, manifest=pre.manifest, local_dir=ctx.report_dir))


def drive(ctx: RolloutContext, progress: RolloutProgress, event: dict | None = None) -> Waiting | Finished:
    """Perform the plan's actions until the rollout must wait (`Waiting`) or ended (`Finished`).

    `event` is the readiness event that ended the last wait: `{"status": "ready"|"not_ready", "detail",
    "ready_s"}`. Every failure of an action becomes an `error` observation; the plan decides what follows
    (roll back; retry a roll back; finish a half-done promotion). A roll back or promotion that keeps
    failing raises after `MAX_ATTEMPTS`, keeping the lock so no other rollout starts on a broken state.
    """
    backend = ctx.backend
    manifest = ctx.manifest(progress.manifest_uri)
    state, action = progress.plan, progress.action
    while not state.done:
        kind = action.kind
        try:
            if kind == "deploy_canary":
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
            elif kind == "promote":
                if event is None:
                    _count(progress, "promote")
                    if backend.begin_promote(manifest):
                        return _wait(ctx, progress, state, action, backend.wait_target("stable", manifest))
                else:
                    ready, event = _readiness(event), None
                    progress.wait_deadline = None
                    if not ready.ready:
                        raise RuntimeError(f"the stable track did not become ready on the new version: "
                                           f"{ready.detail}")
                backend.finish_promote()
                obs = Observation("promoted", time.time(), progress.manifest_uri)
            elif kind == "roll_back":
                _count(progress, "roll_back")
                backend.roll_back()
                obs = Observation("rolled_back", time.time(), action.reason)
            else:  # pragma: no cover - "done" only follows a terminal phase
                break
        except Exception as exc:  # every failure is an observation; the plan decides what follows
            if kind in MAX_ATTEMPTS and progress.attempts.get(kind, 0) >= MAX_ATTEMPTS[kind]:
                raise
            log.exception("%s failed", kind)
            obs = Observation("error", time.time(), f"{kind}: {type(exc).__name__}: {exc}")
        state, action = advance(state, obs)
        progress.plan, progress.action = state, action
    backend.release(ctx.run_id)
    progress.timings["total_s"] = round(time.time() - progress.started_at, 1)
    reason = state.reason or "every analysis step passed"
    report = _report(ctx, progress.manifest_uri, progress.stable_version, state.phase, reason, progress)
    return Finished(report, store_report(report, store=ctx.store, manifest=manifest, local_dir=ctx.report_dir))


def _count(progress: RolloutProgress, kind: str) -> None:
    progress.attempts[kind] = progress.attempts.get(kind, 0) + 1


def _extra_args_note(progress: RolloutProgress) -> str:
    return f"canary extra args {progress.canary_extra_args}" if progress.canary_extra_args else ""


def _readiness(event: dict) -> Readiness:
    return Readiness(event.get("status") == "ready", str(event.get("detail", "")))


def _wait(ctx: RolloutContext, progress: RolloutProgress, state: PlanState, action: Action,
          target: WaitTarget) -> Waiting:
    progress.plan, progress.action = state, action
    if progress.wait_deadline is None:
        progress.wait_deadline = time.time() + ctx.deployment.rollout.readiness_timeout_s
    return Waiting(target, max(1.0, progress.wait_deadline - time.time()), progress)


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


def run_blocking(ctx: RolloutContext, progress: RolloutProgress, *, poll_s: float = 2.0) -> Finished:
    """`drive` to the end in this process (the benchmark); the DAG defers instead of blocking."""
    result = drive(ctx, progress)
    while isinstance(result, Waiting):
        result = drive(ctx, result.progress, wait_blocking(ctx.backend, result, poll_s=poll_s))
    return result


# --- analysis --------------------------------------------------------------------------------------

def analyse_step(ctx: RolloutContext, canary_percent: int) -> StepReport:
    """One traffic step's analysis window: golden prompts, alternating load, /metrics; stops early on
    decisive evidence (golden prompts failing, errors over the threshold, the canary gone)."""
    spec = ctx.deployment.rollout
    thresholds = ctx.resolved.thresholds
    stable_url, canary_url = ctx.backend.endpoints()
    started = time.time()

    def stop_reason(observed) -> str | None:
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
    return StepReport(canary_percent, verdict, observed.canary_rounds, observed.stable_rounds, observed.golden,
                      observed.metrics, round(time.time() - started, 1), observed.stopped_early)


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
    report.probe = {"requests_per_round": ctx.deployment.rollout.probe.requests_per_round,
                    "concurrency": ctx.resolved.probe_concurrency, "window_s": ctx.resolved.window_s}
    return report


def store_report(report: RolloutReport, *, store: Any, manifest: Manifest, local_dir: Path) -> dict[str, str]:
    """Write the report as Markdown and HTML locally and next to the artefact in the store."""
    markdown, page = render_markdown(report), render_html(report)
    local_dir.mkdir(parents=True, exist_ok=True)
    (local_dir / "report.md").write_text(markdown)
    (local_dir / "report.html").write_text(page)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    key = f"{manifest.prefix}/rollouts/{report.deployment}/{report.run_id.replace('/', '_')}-{stamp}"
    locations = {"local_markdown": str(local_dir / "report.md"), "local_html": str(local_dir / "report.html")}
    try:
        # reports sit beside the immutable version (not listed in its manifest, never fetched with it)
        locations["store_markdown"] = store.put_beside(key, "report.md", markdown.encode())
        locations["store_html"] = store.put_beside(key, "report.html", page.encode())
    except Exception as exc:  # a report that cannot be uploaded must not turn a good rollout into a failure
        log.warning("could not store the report next to the artefact: %s", exc)
    return locations
