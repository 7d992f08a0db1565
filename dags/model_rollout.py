"""model_rollout: validate -> pre-flight -> deploy canary (deferred readiness) -> analyse steps -> promote/roll back.

Wiring only: the decisions are `llmops.rollout` / `llmops.canary`, the effects go through a backend
(local vLLM processes or Kubernetes objects applied by `VllmKubernetesHook`).
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Param, dag, task

from llmops_airflow.dag_defaults import START_DATE, default_args
from llmops_airflow.operators.rollout import (
    CanaryAnalysisOperator,
    DeployCanaryOperator,
    PromoteOrRollBackOperator,
    RolloutPreflightOperator,
)

DOC = """
### model_rollout
Roll a published model version out to a vLLM deployment with a canary that judges itself.

1. **validate_request**: the form's values against `include/config/deployments.yaml` (the deployment
   exists and serves this model); out-of-range values are refused by the form before anything runs;
2. **preflight**, before any object is created: the manifest exists and its checksums verify; the
   artefact fits the deployment's GPU profile (serving runtime, compute capability, tensor parallel
   size vs GPUs per node, GPU memory); free GPU capacity for the canary; no other rollout of this
   deployment in progress (refused, not queued);
3. **deploy_canary**: canary Deployment (pods fetch and verify the version, then serve), Services,
   ServiceMonitor, HTTPRoute at 0 %, stable HPA frozen; then waits in a deferrable trigger until every
   canary pod answers a real generation (vLLM's /health stays green on a broken GPU);
4. **analyse_canary**, per traffic step: weights, golden prompts, alternating bounded load on canary and
   stable (TTFT, end-to-end p50/p95, errors), vLLM /metrics; the verdict decides continue or stop;
5. **promote_or_roll_back**: promote (stable moves to the new version, canary removed, weights back) or
   roll back (canary removed, weights restored, stable untouched); stores the rollout report (Markdown
   and HTML) next to the artefact and prints it in the task log. A roll back fails the run, after the
   report is written, so the failure notifier fires.

Locally (`LLMOPS_RUNTIME=local`) stable and canary are real vLLM processes on 127.0.0.1.
Empty thresholds / steps / window use the deployment's `rollout:` defaults. **version** `previous` rolls back
to the version the current stable one replaced (read from the `llmops.io/previous-version` annotation, or
the local runtime's state), through the same checks and canary steps (use steps `[100]` to go at once).
"""


def _deployment_names() -> list[str]:
    """Deployment names for the form's enum: one small YAML read, no registry validation at parse time."""
    try:
        import yaml

        from llmops.settings import get_settings

        data = yaml.safe_load((Path(get_settings().config_dir) / "deployments.yaml").read_text())
        return [d["name"] for d in data.get("deployments", [])] or ["tiny-llama-chat"]
    except Exception:  # a broken registry must not break DAG parsing; validate_request reports it
        return []


DEPLOYMENTS = _deployment_names()


@dag(
    dag_id="model_rollout",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    default_args=default_args(),
    tags=["llmops", "serving"],
    doc_md=DOC,
    render_template_as_native_obj=True,
    params={
        "model": Param("tiny-llama", type="string", minLength=1, title="Model", description="a model from models.yaml"),
        "version": Param("latest", type="string", minLength=1, title="Version",
                         pattern=r"^(latest|previous|[a-z0-9]+://\S+|models/\S+)$",
                         description="a manifest URI (file://, s3://, oss://), 'latest', or 'previous' to roll "
                                     "back to the version the stable one replaced (recorded on the deployment)"),
        "deployment": Param(DEPLOYMENTS[0] if DEPLOYMENTS else "", type="string", minLength=1,
                            title="Deployment", description="a deployment from deployments.yaml",
                            **({"enum": DEPLOYMENTS} if DEPLOYMENTS else {})),
        "traffic_strategy": Param("deployment-default", type="string",
                                  enum=["deployment-default", "gateway-httproute", "replica-ratio"],
                                  title="Traffic strategy",
                                  description="HTTPRoute weights (ACK Gateway) or replica ratio behind one Service"),
        "steps": Param([10, 50, 100], type="array", minItems=1, maxItems=10,
                       items={"type": "integer", "minimum": 1, "maximum": 100},
                       title="Traffic steps (canary %)", description="strictly increasing, ending at 100"),
        "thresholds": Param(
            {"max_p95_latency_ratio": 1.5, "max_error_rate": 0.01, "min_golden_pass_rate": 1.0}, type="object",
            title="Analysis thresholds",
            properties={"max_p95_latency_ratio": {"type": "number", "minimum": 1.0, "maximum": 10.0},
                        "max_error_rate": {"type": "number", "minimum": 0.0, "maximum": 1.0},
                        "min_golden_pass_rate": {"type": "number", "minimum": 0.0, "maximum": 1.0}},
            additionalProperties=False,
            description="canary/stable p95 latency ratio, canary error rate, golden-prompt pass rate"),
        "analysis_window_s": Param(300, type="integer", minimum=5, maximum=86400, title="Analysis window (s)",
                                   description="analysis time per traffic step"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="run pre-flight and print the objects; create nothing"),
    },
)
def model_rollout():
    @task
    def validate_request(params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from llmops.config import load_registry
        from llmops.errors import LlmopsError
        from llmops.rollout.request import RolloutRequest, resolve_request

        try:
            resolved = resolve_request(RolloutRequest.from_params(dict(params)), load_registry())
        except LlmopsError as exc:  # bad input: fail now, without retries
            raise AirflowFailException(str(exc)) from None
        return {"deployment": resolved.deployment.name, "steps": resolved.steps, "window_s": resolved.window_s,
                "thresholds": resolved.thresholds}

    preflight = RolloutPreflightOperator(task_id="preflight")
    deploy = DeployCanaryOperator(task_id="deploy_canary")
    analyse = CanaryAnalysisOperator(task_id="analyse_canary")
    finish = PromoteOrRollBackOperator(task_id="promote_or_roll_back", trigger_rule="all_done")

    validate_request() >> preflight >> deploy >> analyse >> finish


model_rollout()
