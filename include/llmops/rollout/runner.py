"""Drive one rollout: pre-flight, then the plan's actions against a backend, then the report.

The backend (`RolloutBackend`) is the only part that differs between the local runtime (vLLM
processes) and Kubernetes; the plan, the analysis, the verdict and the report are the same code.
The Airflow operators run the same steps as separate tasks (with a deferrable readiness wait); this
module runs them in one process for the demo, the benchmark and the tests.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmops.artefacts import ArtefactError, ArtefactIntegrityError, ArtefactNotFoundError, Manifest
from llmops.canary.analysis import analyse
from llmops.canary.verdict import judge
from llmops.rollout import preflight as pf
from llmops.rollout.plan import Observation, advance, start
from llmops.rollout.report import RolloutReport, StepReport, render_html, render_markdown
from llmops.rollout.request import ResolvedRollout

log = logging.getLogger(__name__)
MAX_ROLLBACK_ATTEMPTS = 3


class NotReadyError(Exception):
    pass


class RolloutBackend(Protocol):
    runtime: str

    def stable_version(self) -> str | None: ...
    def previous_version(self) -> str | None: ...
    def lock_holder(self) -> str | None: ...
    def acquire(self, run_id: str) -> bool: ...
    def release(self, run_id: str) -> None: ...
    def verify_artefact(self, store: Any, manifest: Manifest) -> Any:
        """The store's StoredCheck, or the paths that failed a verifying download (see pf.check_checksums)."""
    def capacity_problems(self, facts: pf.ArtefactFacts) -> list[pf.Problem]: ...
    def deploy_canary(self, manifest: Manifest, run_id: str) -> None: ...
    def wait_ready(self, timeout_s: float) -> float: ...
    def set_weights(self, canary_percent: int) -> None: ...
    def endpoints(self) -> tuple[str | None, str]: ...
    def promote(self, manifest: Manifest) -> None: ...
    def roll_back(self) -> None: ...


@dataclass
class PreflightResult:
    manifest: Manifest
    facts: pf.ArtefactFacts
    stable_version: str | None
    checks: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return self.stable_version == self.manifest.uri


def run_preflight(resolved: ResolvedRollout, *, store: Any, backend: RolloutBackend, registry: Any, run_id: str,
                  acquire: bool = True) -> PreflightResult:
    """Every check before any object is created; raises PreflightError listing all problems at once."""
    deployment = resolved.deployment
    subject = f"rollout of {resolved.request.model} to {deployment.name}"
    version = resolved.request.version
    if version == "previous":  # manual roll back: the version the stable one replaced, as recorded on it
        version = backend.previous_version()
        if not version:
            raise pf.PreflightError(subject, [pf.Problem(
                "previous version", f"{deployment.name} records no previous version",
                "trigger with an explicit manifest URI instead of 'previous'")])
    try:
        manifest = store.resolve(version, resolved.request.model, runtime=deployment.serving_runtime
                                 if version == "latest" else None)
    except ArtefactError as exc:
        raise pf.PreflightError(subject, [pf.Problem("artefact", str(exc).split("; fix: ")[0],
                                                     str(exc).split("; fix: ")[-1])]) from None
    facts = pf.ArtefactFacts.from_manifest(manifest, manifest.uri or resolved.request.version, manifest.model)
    problems = pf.check_not_in_progress(deployment.name, backend.lock_holder(), run_id)
    problems += pf.check_compatibility(facts, deployment, registry.gpu_profile(deployment.gpu_profile))
    verification = None
    if not problems:  # downloading / capacity queries only for an artefact that could run at all
        verification = backend.verify_artefact(store, manifest)
        problems += pf.check_checksums(facts.uri, verification)
        problems += backend.capacity_problems(facts)
    pf.raise_if_problems(subject, problems)
    if acquire and not backend.acquire(run_id):
        pf.raise_if_problems(subject, pf.check_not_in_progress(deployment.name, backend.lock_holder() or "?", run_id))
    checks = ["artefact exists", pf.checksums_checked(verification), "compatible with GPU profile", "capacity",
              "no rollout running"]
    return PreflightResult(manifest, facts, backend.stable_version(), checks)


def verify_by_download(store: Any, manifest: Manifest, dest: Path | None = None) -> list[str]:
    """Fetch with verification (into `dest`, or a temporary directory); the paths that did not match."""
    try:
        if dest is not None:
            store.fetch(manifest.prefix, dest, verify=True)
        else:
            with tempfile.TemporaryDirectory(prefix="llmops-verify-") as tmp:
                store.fetch(manifest.prefix, Path(tmp), verify=True)
    except ArtefactIntegrityError as exc:
        return [exc.path or str(exc)]
    except ArtefactNotFoundError as exc:
        return [str(exc)]
    return []


def execute(resolved: ResolvedRollout, pre: PreflightResult, *, backend: RolloutBackend, run_id: str,
            readiness_timeout_s: float | None = None) -> RolloutReport:
    """Run the plan to its end (promoted or rolled back), always releasing the lock."""
    deployment = resolved.deployment
    spec = deployment.rollout
    thresholds = resolved.verdict_thresholds()
    report = RolloutReport(deployment.name, resolved.request.model, backend.runtime, run_id, pre.manifest.uri or "",
                           pre.stable_version, "running", "", thresholds)
    t0 = time.time()
    timings: dict[str, float] = {}
    try:
        if pre.unchanged:
            report.outcome, report.reason = "unchanged", f"{deployment.name} already serves this version"
            return report
        state, action = start(resolved.steps, has_stable=pre.stable_version is not None, at=t0)
        rollback_attempts = 0
        while not state.done:
            try:
                if action.kind == "deploy_canary":
                    backend.deploy_canary(pre.manifest, run_id)
                    obs = Observation("canary_deployed", time.time())
                elif action.kind == "wait_ready":
                    try:
                        ready_s = backend.wait_ready(readiness_timeout_s or spec.readiness_timeout_s)
                        timings["canary_ready_s"] = time.time() - t0
                        obs = Observation("canary_ready", time.time(), f"generated after {ready_s:.1f} s")
                    except NotReadyError as exc:
                        obs = Observation("canary_not_ready", time.time(), str(exc))
                elif action.kind == "set_weights":
                    backend.set_weights(action.canary_percent)
                    obs = Observation("weights_set", time.time(), f"canary {action.canary_percent} %",
                                      canary_percent=action.canary_percent)
                elif action.kind == "analyse":
                    stable_url, canary_url = backend.endpoints()
                    started = time.time()
                    observations = analyse(
                        canary_url=canary_url, stable_url=stable_url, model=deployment.model,
                        golden_prompts=spec.golden_prompts, window_s=resolved.window_s,
                        requests=spec.probe.requests_per_round, concurrency=spec.probe.concurrency,
                        max_tokens=spec.probe.max_tokens, pause_s=spec.probe.pause_s,
                        min_rounds=spec.probe.min_rounds, timeout_s=spec.probe.timeout_s)
                    verdict = judge(observations, thresholds)
                    timings["analysis_s"] = timings.get("analysis_s", 0.0) + time.time() - started
                    report.steps.append(StepReport(action.canary_percent or 0, verdict, observations.canary_rounds,
                                                   observations.stable_rounds, observations.golden,
                                                   observations.metrics, time.time() - started))
                    log.info("verdict at %s %%: %s", action.canary_percent, verdict.summary)
                    obs = Observation("analysis_passed" if verdict.passed else "analysis_failed", time.time(),
                                      verdict.summary)
                elif action.kind == "promote":
                    backend.promote(pre.manifest)
                    obs = Observation("promoted", time.time(), pre.manifest.uri or "")
                elif action.kind == "roll_back":
                    rollback_attempts += 1
                    backend.roll_back()
                    obs = Observation("rolled_back", time.time(), action.reason)
                else:  # pragma: no cover - "done" ends the loop
                    break
            except Exception as exc:  # every failure is an observation; the plan decides what follows
                if action.kind == "roll_back" and rollback_attempts >= MAX_ROLLBACK_ATTEMPTS:
                    raise
                log.exception("%s failed", action.kind)
                obs = Observation("error", time.time(), f"{action.kind}: {type(exc).__name__}: {exc}")
            state, action = advance(state, obs)
        report.outcome = state.phase
        report.reason = state.reason or "every analysis step passed"
        report.timeline = [(e.at, e.phase, e.event, e.detail) for e in state.timeline]
        return report
    finally:
        backend.release(run_id)
        timings["total_s"] = time.time() - t0
        report.timings = timings


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
