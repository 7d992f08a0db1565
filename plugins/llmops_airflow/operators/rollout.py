"""model_rollout operators: pre-flight, deploy + deferrable readiness, analysis, promote-or-roll-back.

Every operator rebuilds its context from the run's Params (a retry or a fresh worker sees the same
thing); decisions come from `llmops.rollout` (plan, pre-flight, verdict), effects from a backend:
`LocalBackend` (vLLM processes) or `KubernetesBackend` over `VllmKubernetesHook`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

READY_POLL_S = 5.0


@dataclass
class RolloutContext:
    registry: Any
    resolved: Any
    store: Any
    backend: Any
    settings: Any

    @property
    def deployment(self):
        return self.resolved.deployment


def rollout_context(params: dict, *, kubernetes_config_dict: dict | None = None) -> RolloutContext:
    from llmops.config import load_registry
    from llmops.rollout.request import RolloutRequest, resolve_request
    from llmops.settings import get_settings

    settings = get_settings()
    registry = load_registry()
    resolved = resolve_request(RolloutRequest.from_params(params), registry)
    from llmops_airflow.hooks.artefacts import ArtefactStoreHook

    store = ArtefactStoreHook().get_conn()  # LLMOPS_STORE_URI, credentials from the llmops_artefacts Connection
    deployment = resolved.deployment
    if settings.runtime == "local":
        from llmops.serving.local import LocalBackend, LocalRuntime

        runtime = LocalRuntime(settings.home, deployment.name, deployment.model,
                               serving_python=settings.serving_python)
        backend = LocalBackend(runtime, model_cache=settings.home / "serving" / "models")
    else:
        from llmops.serving.kubernetes import KubernetesBackend
        from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

        hook = VllmKubernetesHook(deployment.kubernetes_connection_id, config_dict=kubernetes_config_dict)
        backend = KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                                    fetch_image=settings.worker_image)
    return RolloutContext(registry, resolved, store, backend, settings)


class _RolloutOperator(BaseOperator):
    template_fields = ("rollout_params",)
    ui_color = "#fdf1e0"

    def __init__(self, *, rollout_params: dict | str = "{{ params }}", kubernetes_config_dict: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.rollout_params = rollout_params
        self.kubernetes_config_dict = kubernetes_config_dict

    def _params(self, context) -> dict:
        params = self.rollout_params
        if isinstance(params, str):
            params = context["params"]
        return dict(params)

    def _ctx(self, context) -> RolloutContext:
        return rollout_context(self._params(context), kubernetes_config_dict=self.kubernetes_config_dict)

    @staticmethod
    def _run_id(context) -> str:
        return context["run_id"]

    @staticmethod
    def _pull(context, task_id: str) -> Any:
        return context["ti"].xcom_pull(task_ids=task_id)


class RolloutPreflightOperator(_RolloutOperator):
    """Every check before anything is created; takes the deployment's rollout lock (not in dry run)."""

    def execute(self, context):
        from llmops.rollout.runner import run_preflight
        from llmops.serving import manifests as m

        ctx = self._ctx(context)
        dry_run = ctx.resolved.request.dry_run
        from llmops.rollout.preflight import PreflightError

        try:
            pre = run_preflight(ctx.resolved, store=ctx.store, backend=ctx.backend, registry=ctx.registry,
                                run_id=self._run_id(context), acquire=not dry_run)
        except PreflightError as exc:  # refused: retrying would only queue the run silently
            raise AirflowFailException(str(exc)) from None
        d = ctx.deployment
        self.log.info("pre-flight passed for %s -> %s: %s", pre.manifest.uri, d.name, ", ".join(pre.checks))
        result = {"manifest_uri": pre.manifest.uri, "stable_version": pre.stable_version,
                  "unchanged": pre.unchanged, "dry_run": dry_run, "steps": ctx.resolved.steps,
                  "window_s": ctx.resolved.window_s, "thresholds": ctx.resolved.thresholds}
        if dry_run:
            profile = ctx.registry.gpu_profile(d.gpu_profile)
            canary = m.VersionRef(pre.manifest.uri, d.model, pre.manifest.tensor_parallel_size,
                                  pre.manifest.max_model_len)
            stable = m.VersionRef(pre.stable_version, d.model) if pre.stable_version else None
            objects = m.render_all(d, profile, stable=stable, canary=canary, canary_percent=ctx.resolved.steps[0],
                                   rollout_run=self._run_id(context), fetch_image=ctx.settings.worker_image)
            self.log.info("dry run: would apply %d objects at the first step:\n%s", len(objects),
                          json.dumps(objects, indent=1))
            result["objects"] = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
        return result


class DeployCanaryOperator(_RolloutOperator):
    """Create the canary, then defer to `VllmReadyTrigger` until it really generates."""

    def execute(self, context):
        pre = self._pull(context, "preflight")
        if pre["dry_run"]:
            raise AirflowSkipException("dry run: nothing is deployed")
        if pre["unchanged"]:
            raise AirflowSkipException(f"{pre['manifest_uri']} is already the stable version")
        ctx = self._ctx(context)
        manifest = ctx.store.resolve(pre["manifest_uri"], ctx.deployment.model)
        started = time.time()
        ctx.backend.deploy_canary(manifest, self._run_id(context))
        from llmops_airflow.triggers.readiness import VllmReadyTrigger

        timeout = ctx.deployment.rollout.readiness_timeout_s
        if ctx.backend.runtime == "local":
            canary = ctx.backend.local.load().canary
            trigger = VllmReadyTrigger(runtime="local", deployment=ctx.deployment.name, track="canary",
                                       timeout_s=timeout, poll_s=2.0, url=canary.url, pid=canary.pid,
                                       port=canary.port, model=ctx.deployment.model, started_at=started)
        else:
            from llmops.serving.manifests import VersionRef

            trigger = VllmReadyTrigger(runtime="kubernetes", deployment=ctx.deployment.name, track="canary",
                                       timeout_s=timeout, poll_s=READY_POLL_S,
                                       version_id=VersionRef(manifest.uri, ctx.deployment.model).version_id,
                                       kubernetes_conn_id=ctx.deployment.kubernetes_connection_id,
                                       config_dir=str(ctx.registry.config_dir), model=ctx.deployment.model,
                                       config_dict=self.kubernetes_config_dict, started_at=started)
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context, event: dict):
        self.log.info("canary readiness: %s (%s) after %s s", event["status"], event["detail"], event["ready_s"])
        return event


class CanaryAnalysisOperator(_RolloutOperator):
    """Walk the traffic steps: set weights, analyse for the window, judge; stop at the first failure."""

    def execute(self, context):
        from llmops.canary.analysis import analyse
        from llmops.canary.verdict import judge
        from llmops.rollout.plan import Observation, advance, start, state_to_dict
        from llmops.rollout.report import StepReport, step_to_dict

        pre = self._pull(context, "preflight")
        ready = self._pull(context, "deploy_canary")
        ctx = self._ctx(context)
        spec = ctx.deployment.rollout
        thresholds = ctx.resolved.verdict_thresholds()
        ready = ready or {"status": "not_ready", "detail": "no readiness event"}
        deployed_at = ready.get("started_at") or time.time()
        state, action = start(pre["steps"], has_stable=pre["stable_version"] is not None, at=deployed_at)
        state, action = advance(state, Observation("canary_deployed", deployed_at))
        event = "canary_ready" if ready["status"] == "ready" else "canary_not_ready"
        state, action = advance(state, Observation(event, deployed_at + (ready.get("ready_s") or 0.0),
                                                   f"{ready['detail']} after {ready.get('ready_s')} s"))
        steps = []
        while action.kind in ("set_weights", "analyse"):
            try:
                if action.kind == "set_weights":
                    ctx.backend.set_weights(action.canary_percent)
                    self.log.info("traffic: canary %s %%", action.canary_percent)
                    obs = Observation("weights_set", time.time(), canary_percent=action.canary_percent)
                else:
                    stable_url, canary_url = ctx.backend.endpoints()
                    started = time.time()
                    observed = analyse(canary_url=canary_url, stable_url=stable_url, model=ctx.deployment.model,
                                       golden_prompts=spec.golden_prompts, window_s=pre["window_s"],
                                       requests=spec.probe.requests_per_round, concurrency=spec.probe.concurrency,
                                       max_tokens=spec.probe.max_tokens, pause_s=spec.probe.pause_s,
                                       min_rounds=spec.probe.min_rounds, timeout_s=spec.probe.timeout_s)
                    if spec.prometheus_connection_id:
                        observed.metrics["promql"] = self._promql(ctx, spec.prometheus_connection_id,
                                                                  pre["window_s"])
                    verdict = judge(observed, thresholds)
                    step = StepReport(action.canary_percent or 0, verdict, observed.canary_rounds,
                                      observed.stable_rounds, observed.golden, observed.metrics,
                                      time.time() - started)
                    steps.append(step_to_dict(step))
                    self.log.info("verdict at %s %%: %s", action.canary_percent, verdict.summary)
                    obs = Observation("analysis_passed" if verdict.passed else "analysis_failed", time.time(),
                                      verdict.summary)
            except Exception as exc:  # the plan turns any failure into a roll back
                self.log.exception("%s failed", action.kind)
                obs = Observation("error", time.time(), f"{action.kind}: {type(exc).__name__}: {exc}")
            state, action = advance(state, obs)
        analysis_s = round(sum(step["window_s"] for step in steps), 1)
        return {"decision": action.kind, "reason": action.reason, "plan": state_to_dict(state), "steps": steps,
                "analysis_s": analysis_s}


    def _promql(self, ctx, conn_id: str, window_s: int) -> dict:
        """Server-side numbers from Prometheus (ServiceMonitor scrapes) for the report; never fails the step."""
        from airflow.sdk import BaseHook

        from llmops.canary.metrics import promql_instant, promql_window_queries

        try:
            conn = BaseHook.get_connection(conn_id)
            base = conn.host if "://" in (conn.host or "") else f"{conn.schema or 'http'}://{conn.host}:{conn.port or 9090}"
            headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
            return {track: {name: promql_instant(base, query, headers=headers)
                            for name, query in promql_window_queries(ctx.deployment.name, track, window_s).items()}
                    for track in ("stable", "canary")}
        except Exception as exc:  # metrics are evidence for the report; the probes decide
            self.log.warning("PromQL via connection %r failed: %s", conn_id, exc)
            return {"error": str(exc)}


class PromoteOrRollBackOperator(_RolloutOperator):
    """Promote or roll back (also after any upstream failure), release the lock, write the report.

    Runs with trigger_rule all_done: a crashed analysis still ends in a roll back, never in a canary
    left serving. A rolled back rollout fails this task (no retry) after the report is stored, so the
    failure notifier tells the team.
    """

    def execute(self, context):
        pre = self._pull(context, "preflight")
        if not pre:  # fail the run (its only leaf task) rather than let a refused rollout look successful
            raise AirflowFailException("the request or pre-flight was refused (see those tasks); nothing was created")
        if pre.get("dry_run"):
            raise AirflowSkipException("dry run: nothing to promote or roll back")
        ctx = self._ctx(context)
        analysis = self._pull(context, "analyse_canary") or {}
        decision = analysis.get("decision", "roll_back")
        if pre.get("unchanged"):
            ctx.backend.release(self._run_id(context))
            return self._finish(context, ctx, pre, analysis, "unchanged", "already the stable version", {})
        manifest = ctx.store.resolve(pre["manifest_uri"], ctx.deployment.model)
        if decision == "promote" and ctx.backend.runtime == "kubernetes":
            from llmops_airflow.triggers.readiness import VllmReadyTrigger

            version_id = ctx.backend.begin_promote(manifest)
            self.defer(trigger=VllmReadyTrigger(
                runtime="kubernetes", deployment=ctx.deployment.name, track="stable",
                timeout_s=ctx.deployment.rollout.readiness_timeout_s, poll_s=READY_POLL_S, version_id=version_id,
                kubernetes_conn_id=ctx.deployment.kubernetes_connection_id, config_dir=str(ctx.registry.config_dir),
                model=ctx.deployment.model, config_dict=self.kubernetes_config_dict),
                method_name="execute_complete")
        if decision == "promote":
            ctx.backend.promote(manifest)
            outcome, reason = "promoted", "every analysis step passed"
        else:
            ctx.backend.roll_back()
            outcome = "rolled_back"
            reason = analysis.get("reason") or "an upstream task failed before the analysis finished"
        ctx.backend.release(self._run_id(context))
        return self._finish(context, ctx, pre, analysis, outcome, reason, {})

    def execute_complete(self, context, event: dict):
        pre = self._pull(context, "preflight")
        analysis = self._pull(context, "analyse_canary") or {}
        ctx = self._ctx(context)
        if event["status"] == "ready":
            ctx.backend.finish_promote()
            outcome, reason = "promoted", "every analysis step passed; stable now serves the new version"
        else:
            # the new version did not come up on the stable track: put the old one back
            ctx.backend.roll_back_to_previous()
            ctx.backend.roll_back()
            outcome, reason = "rolled_back", f"stable did not become ready on the new version: {event['detail']}"
        ctx.backend.release(self._run_id(context))
        return self._finish(context, ctx, pre, analysis, outcome, reason, {"stable_ready_s": event["ready_s"]})

    def _finish(self, context, ctx, pre, analysis, outcome, reason, timings) -> dict:
        from llmops.rollout.report import RolloutReport, render_markdown, step_from_dict
        from llmops.rollout.runner import store_report

        plan = analysis.get("plan") or {}
        timeline = [tuple(e) for e in plan.get("timeline", [])] + [(time.time(), outcome, outcome, reason)]
        ready = self._pull(context, "deploy_canary") or {}
        if ready.get("ready_s") is not None:
            timings = {"canary_ready_s": ready["ready_s"], "analysis_s": analysis.get("analysis_s", 0.0), **timings}
        if ready.get("started_at"):
            timings["since_canary_deployed_s"] = round(time.time() - ready["started_at"], 1)
        report = RolloutReport(ctx.deployment.name, ctx.deployment.model, ctx.backend.runtime, self._run_id(context),
                               pre["manifest_uri"], pre.get("stable_version"), outcome, reason,
                               ctx.resolved.verdict_thresholds(), [step_from_dict(s) for s in analysis.get("steps", [])],
                               timeline, timings)
        manifest = ctx.store.resolve(pre["manifest_uri"], ctx.deployment.model)
        local_dir = ctx.settings.home / "reports" / "rollouts" / ctx.deployment.name / self._run_id(context)
        locations = store_report(report, store=ctx.store, manifest=manifest, local_dir=local_dir)
        self.log.info("rollout report:\n%s", render_markdown(report))
        self.log.info("report stored at %s", json.dumps(locations, indent=1))
        result = {"outcome": outcome, "reason": reason, "report": locations, "manifest_uri": pre["manifest_uri"]}
        if outcome == "rolled_back":
            context["ti"].xcom_push(key="rollout_result", value=result)
            raise AirflowFailException(f"rolled back: {reason}; report: {locations.get('store_markdown') or locations['local_markdown']}")
        return result


class RollBackToPreviousOperator(_RolloutOperator):
    """Manual roll back: the stable track returns to the version its annotation says it replaced."""

    def execute(self, context):
        ctx = self._ctx(context)
        if ctx.backend.runtime != "kubernetes":
            raise AirflowFailException("roll back to the previous version needs runtime kubernetes; locally, "
                                       "trigger model_rollout with the previous manifest URI")
        previous = ctx.backend.roll_back_to_previous()
        self.log.info("%s now serves %s", ctx.deployment.name, previous)
        return {"stable_version": previous}
