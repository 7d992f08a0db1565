"""ModelRolloutOperator: one deferrable operator owns a rollout, create -> wait -> analyse -> decide.

Shaped like cncf-kubernetes' pod operator: `execute` builds the context once (request, registry,
store, backend) and calls the driver (`llmops.rollout.driver`); where the driver must wait (canary
ready, stable ready on the new version) the operator defers with a readiness trigger carrying
identifiers and the serialised progress; `execute_complete` rebuilds the context and resumes the
driver from the trigger's event. Where another live execution of the same run owns the rollout, it
defers on the record trigger and `execute_after_owner` runs the driver again once that one is done.
At a human gate (`llmops.rollout.approval`) the operator writes Airflow's
human-in-the-loop request for its task instance (subject, body with the step's verdict and the report link,
options Approve / Reject, the on_timeout option as default) and parks the task in Airflow 3.3's awaiting-input
state (no worker slot, no trigger): the answer, given in the UI's Required Actions or through the REST API, or
the scheduler's timeout sweep applying the default, resumes it in `approval_complete`. Every decision is the
driver's (and the plan's); this module only adapts Airflow: Connections, XCom, human-in-the-loop requests,
failing the task on a roll back, the report link.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, BaseOperatorLink
from airflow.sdk.exceptions import AirflowFailException

READY_POLL_S = {"local": 2.0, "kubernetes": 5.0}
REPORT_XCOM_KEY = "rollout_report"


class RolloutReportLink(BaseOperatorLink):
    """The rollout report (HTML) of this task instance, as stored next to the artefact (or locally)."""

    name = "Rollout report"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        locations = XCom.get_value(ti_key=ti_key, key=REPORT_XCOM_KEY) or {}
        target = locations.get("store_html") or locations.get("local_html") or ""
        if target and "://" not in target:
            target = f"file://{target}"
        return target


def approval_answer(event: dict) -> dict:
    """Airflow's human-in-the-loop resume event as the driver's answer (`llmops.rollout.approval`): the chosen
    option, who chose it, and whether the timeout chose it (the default written by the scheduler's sweep, or a
    timeout error where no default was set)."""
    user = event.get("responded_by_user") or {}
    chosen = event.get("chosen_options") or [None]
    return {"choice": chosen[0], "by": user.get("name") or user.get("id"),
            "timed_out": bool(event.get("timedout")) or event.get("error_type") == "timeout"}


class ModelRolloutOperator(BaseOperator):
    """Roll a model version out to a deployment: pre-flight, canary, readiness, analysis, promote or roll back.

    A roll back fails the task (no retry) after the report is stored, so the failure notifier tells the
    team; a refused pre-flight fails it at once, with every problem and its fix.
    """

    template_fields = ("rollout_params",)
    ui_color = "#fdf1e0"
    operator_extra_links = (RolloutReportLink(),)

    def __init__(self, *, rollout_params: dict | str = "{{ params }}", kubernetes_config_dict: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.rollout_params = rollout_params
        self.kubernetes_config_dict = kubernetes_config_dict

    # --- context ---------------------------------------------------------------------------------
    def _params(self, context) -> dict:
        params = self.rollout_params
        if isinstance(params, str):
            params = context["params"]
        return dict(params)

    def build_context(self, context):
        """Request, registry, store and backend: built once per execution (and once on resume)."""
        from llmops.config import load_registry
        from llmops.errors import LlmopsError
        from llmops.rollout.driver import RolloutContext
        from llmops.rollout.request import RolloutRequest, resolve_request
        from llmops.settings import get_settings
        from llmops_airflow.hooks.artefacts import ArtefactStoreHook

        settings = get_settings()
        try:
            registry = load_registry()
            resolved = resolve_request(RolloutRequest.from_params(self._params(context)), registry)
        except LlmopsError as exc:  # bad input: fail now, without retries
            raise AirflowFailException(str(exc)) from None
        deployment = resolved.deployment
        if settings.runtime == "local":
            from llmops.serving.local import LocalRuntime

            backend = LocalRuntime(settings.home, deployment.name, deployment.model,
                                   serving_python=settings.serving_python, extra_args=deployment.extra_args,
                                   model_cache=settings.home / "serving" / "models")
        else:
            from llmops.serving.kubernetes import KubernetesBackend
            from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

            hook = VllmKubernetesHook(deployment.kubernetes_connection_id, config_dict=self.kubernetes_config_dict)
            backend = KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                                        fetch_image=settings.worker_image,
                                        pod_url_template=settings.kube_pod_url_template,
                                        service_url_template=settings.kube_service_url_template,
                                        model_cache_pvc=settings.model_cache_pvc)
        run_id = context["run_id"]
        prometheus = deployment.rollout.prometheus_connection_id
        return RolloutContext(resolved, ArtefactStoreHook().get_conn(), backend, registry, run_id,
                              settings.home / "reports" / "rollouts" / deployment.name / run_id,
                              server_metrics=self._promql(prometheus, deployment.name, deployment.serving_runtime)
                              if prometheus else None)

    # --- life cycle ------------------------------------------------------------------------------
    def execute(self, context):
        from llmops.rollout import driver
        from llmops.rollout.record import Execution

        context["ti"].xcom_push(key=REPORT_XCOM_KEY, value={})  # the link has a value while the rollout runs
        ctx = self.build_context(context)
        self.log.info("request: %s", ctx.resolved.summary())
        if ctx.resolved.request.dry_run:
            from llmops.settings import get_settings

            pre = self._refused_fails(driver.preflight, ctx)
            self.log.info("pre-flight passed for %s -> %s: %s", pre.manifest.uri, ctx.deployment.name,
                          ", ".join(pre.checks))
            settings = get_settings()
            objects = driver.objects_at_first_step(ctx, pre, fetch_image=settings.worker_image,
                                                   model_cache_pvc=settings.model_cache_pvc)
            self.log.info("dry run: would apply %d objects at the first step:\n%s", len(objects),
                          json.dumps(objects, indent=1))
            return {"outcome": "dry_run", "manifest_uri": pre.manifest.uri,
                    "objects": [f"{o['kind']}/{o['metadata']['name']}" for o in objects]}
        # a new rollout, or this run's own resumed from its record (a retry, a restarted worker, a second
        # execution); another live execution of this run is waited for, deferred (execute_after_owner)
        return self._run(context, ctx, Execution.new(context["ti"].try_number), None)

    def execute_after_owner(self, context, event: dict):
        """The execution this one waited for is done with the rollout (or gone): look at the record again."""
        from llmops.rollout.record import Execution

        self.log.info("the rollout's record changed: %s", event["detail"])
        return self._run(context, self.build_context(context), Execution.new(context["ti"].try_number), None)

    def execute_complete(self, context, event: dict):
        from llmops.rollout.record import Execution

        ctx = self.build_context(context)
        self.log.info("%s readiness: %s (%s) after %s s", event.get("track"), event["status"], event["detail"],
                      event.get("ready_s"))
        me = Execution.new(context["ti"].try_number, token=(event.get("progress") or {}).get("execution") or None)
        return self._run(context, ctx, me, event)

    def approval_complete(self, context, event: dict, execution: str | None = None):
        """Resumed by an answer to the human-in-the-loop request (or the timeout sweep's default)."""
        from llmops.rollout.record import Execution

        ctx = self.build_context(context)
        me = Execution.new(context["ti"].try_number, token=execution)
        return self._run(context, ctx, me, {"approval": approval_answer(event)})

    def _ask(self, context, awaiting):
        """Write the human-in-the-loop request of this task instance and park the task until it is answered."""
        from airflow.sdk.exceptions import TaskAwaitingInput
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        request = awaiting.request
        context["ti"].xcom_push(key=REPORT_XCOM_KEY, value=awaiting.report)  # the link shows the report so far
        upsert_hitl_detail(ti_id=context["ti"].id, options=list(request.options), subject=request.subject,
                           body=request.body, defaults=[request.default], multiple=False, params={})
        self.log.info("waiting for approval (up to %.0f s, then %s): %s\n%s", request.timeout_s, request.default,
                      request.subject, request.body)
        raise TaskAwaitingInput(method_name="approval_complete",
                                kwargs={"execution": awaiting.progress.execution},
                                timeout=timedelta(seconds=request.timeout_s))

    def _refused_fails(self, call, *args, **kwargs):
        from llmops.rollout.errors import PreflightError

        try:
            return call(*args, **kwargs)
        except PreflightError as exc:  # refused: retrying would only queue the run silently
            raise AirflowFailException(str(exc)) from None

    def _run(self, context, ctx, me, event):
        from llmops.rollout.driver import AwaitingApproval, OwnedElsewhere, Waiting, run

        result = self._refused_fails(run, ctx, me, event)
        if isinstance(result, AwaitingApproval):
            self._ask(context, result)
        if isinstance(result, OwnedElsewhere):  # another live execution of this run acts: wait without a slot
            from llmops_airflow.triggers.record import RolloutRecordTrigger

            self.log.info("%s", result.message)
            identifiers = ctx.backend.record_identifiers()
            if identifiers["runtime"] == "kubernetes" and self.kubernetes_config_dict:
                identifiers["config_dict"] = self.kubernetes_config_dict
            self.defer(trigger=RolloutRecordTrigger(identifiers=identifiers, run_id=ctx.run_id,
                                                    owner_token=result.owner.token, try_number=me.try_number,
                                                    poll_s=READY_POLL_S[identifiers["runtime"]]),
                       method_name="execute_after_owner")
        if isinstance(result, Waiting):
            from llmops_airflow.triggers.readiness import readiness_trigger

            target = result.target.to_dict()
            if target["runtime"] == "kubernetes" and self.kubernetes_config_dict:
                target["identifiers"]["config_dict"] = self.kubernetes_config_dict
            trigger = readiness_trigger(target, timeout_s=result.timeout_s, poll_s=READY_POLL_S[target["runtime"]],
                                        progress=result.progress.to_dict())
            self.log.info("waiting for the %s track to become ready (up to %.0f s)", target["track"],
                          result.timeout_s)
            self.defer(trigger=trigger, method_name="execute_complete",
                       timeout=timedelta(seconds=result.timeout_s + 300))
        return self._finish(context, result)

    def _finish(self, context, finished) -> dict:
        from llmops.rollout.report import render_markdown

        report, locations = finished.report, finished.locations
        context["ti"].xcom_push(key=REPORT_XCOM_KEY, value=locations)
        self.log.info("rollout report:\n%s", render_markdown(report))
        self.log.info("report stored at %s", json.dumps(locations, indent=1))
        result = {"outcome": report.outcome, "reason": report.reason, "report": locations,
                  "manifest_uri": report.canary_version}
        where = locations.get("store_markdown") or locations.get("local_markdown", "?")
        if report.outcome == "rolled_back":
            raise AirflowFailException(f"rolled back: {report.reason}; report: {where}")
        if report.outcome not in ("promoted", "unchanged"):  # halted: a person has to look (the lock is kept)
            raise AirflowFailException(f"{report.outcome}: {report.reason}; report: {where}")
        return result

    def _promql(self, conn_id: str, deployment: str, runtime: str = "vllm"):
        """Server-side numbers from Prometheus (ServiceMonitor scrapes) for the report; never fails a step."""

        def query(track: str, window_s: int) -> dict[str, Any]:
            from airflow.sdk import BaseHook

            from llmops.canary.metrics import promql_instant, promql_window_queries

            try:
                conn = BaseHook.get_connection(conn_id)
                base = (conn.host if "://" in (conn.host or "")
                        else f"{conn.schema or 'http'}://{conn.host}:{conn.port or 9090}")
                headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
                return {name: promql_instant(base, q, headers=headers)
                        for name, q in promql_window_queries(deployment, track, window_s, runtime).items()}
            except Exception as exc:  # metrics are evidence for the report; the probes decide
                self.log.warning("PromQL via connection %r failed: %s", conn_id, exc)
                return {"error": type(exc).__name__}

        return query
