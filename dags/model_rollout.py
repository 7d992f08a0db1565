"""model_rollout: one deferrable task: pre-flight -> canary -> (deferred) readiness -> analysis steps -> promote/roll back.

Wiring only: the decisions are `llmops.rollout` / `llmops.canary`, run by the one driver
(`llmops.rollout.driver`); the effects go through a backend (local vLLM processes or Kubernetes
objects applied by `VllmKubernetesHook`).
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Param, dag

from llmops.config.schema import ApprovalSpec, RolloutThresholds, TrafficSteps
from llmops.rollout.request import TRAFFIC_CHOICES
from llmops_airflow.dag_defaults import START_DATE, default_args
from llmops_airflow.forms import optional_typed, rollout_defaults_md
from llmops_airflow.operators.rollout import ModelRolloutOperator

DOC = """
### model_rollout
Roll a published model version out to a vLLM or TensorRT-LLM (`trtllm-serve`, runtime kubernetes)
deployment with a canary that judges itself. One task,
`rollout`, owns the whole life cycle (as the Kubernetes pod operator owns create -> wait -> collect):

1. **request**: the form's values against `include/config/deployments.yaml` (the deployment fixes the
   model); out-of-range values are refused by the form before anything runs;
2. **pre-flight**, before any object is created: the manifest exists and its checksums verify; the
   artefact fits the deployment's GPU profile (serving runtime, compute capability, the GPU family it
   was built for, tensor parallel size vs GPUs per node, GPU memory); free GPU capacity for the canary; no other rollout of this
   deployment in progress (refused, not queued);
3. **canary**: canary Deployment (pods fetch and verify the version, then serve), Services,
   ServiceMonitor, HTTPRoute at 0 %, stable HPA frozen; then the task defers to a trigger until every
   canary pod answers a real generation (vLLM's /health stays green on a broken GPU);
4. **analysis**, per traffic step: weights, golden prompts, alternating load on canary and stable at the
   deployment's expected concurrency (TTFT, end-to-end p50/p95, errors), the server's Prometheus metrics. Decisive
   evidence (golden prompts failing, errors over the threshold, the canary gone) ends a step at once;
5. **promote** (stable moves to the new version, canary removed, weights back) or **roll back** (canary
   removed, weights restored, stable untouched); the rollout report (Markdown and HTML) is stored next
   to the artefact, printed in the task log and linked from the task ("Rollout report"). A roll back
   fails the run, after the report is written, so the failure notifier fires.

**Human gate** (`approval`, or the deployment's `rollout.approval`): after the passed analysis of the step
in `after_steps` (a first deployment: before the promotion) the task waits in Airflow's *awaiting input*
state (no worker slot; the canary keeps serving) for a person: **Browse > Required Actions** (or the DAG's
Required Actions tab) shows the step's verdict and the report so far with **Approve** (go on) and **Reject**
(roll back); no answer within `timeout_s` takes `on_timeout`. REST: `PATCH
/api/v2/dags/model_rollout/dagRuns/<run>/taskInstances/rollout/-1/hitlDetails` with
`{"chosen_options": ["Approve"]}` (the README has a curl example). The report says who or what decided.

The rollout's record (lock, request, progress) lives beside the deployment and is stored at every step: a
retry, a restarted worker or a second execution of the same run resumes it (or waits for it) instead of
starting over, and each run stores one report.

Locally (`LLMOPS_RUNTIME=local`) stable and canary are real vLLM processes on 127.0.0.1.
Empty thresholds / steps / window use the deployment's `rollout:` defaults. **version** `previous` rolls back
to the version the current stable one replaced (read from the `llmops.io/previous-version` annotation, or
the local runtime's state), through the same checks and canary steps (use steps `[100]` to go at once);
the report labels it a manual roll back. Within the deployment's `rollout.keep_previous` window (default 30
minutes after a promotion, named in the promotion's report) the replaced version still runs: `previous` then
checks that kept copy (ready, golden prompts) and gives it the traffic again without a cold start ("Warm roll
back"); after the window it is the normal rollout, and the next rollout releases the expired copy.
**canary_extra_args** tries server flags (vLLM's, or
trtllm-serve's) on the canary only.
"""


def _deployment_names() -> list[str]:
    """Deployment names for the form's enum: one small YAML read, no registry validation at parse time."""
    try:
        import yaml

        from llmops.settings import get_settings

        data = yaml.safe_load((Path(get_settings().config_dir) / "deployments.yaml").read_text())
        return [d["name"] for d in data.get("deployments", [])] or ["tiny-llama-chat"]
    except Exception:  # a broken registry must not break DAG parsing; the task reports it
        return []


DEPLOYMENTS = _deployment_names()


def registry_values(field: str, text: str) -> str:
    """The field's help with what an empty value means, per deployment (the form cannot pre-fill per choice)."""
    return f"{text} Empty: the deployment's value from deployments.yaml.\n\n{rollout_defaults_md(field)}"


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
        "deployment": Param(DEPLOYMENTS[0] if DEPLOYMENTS else "", type="string", minLength=1,
                            title="Deployment", description="a deployment from deployments.yaml (it fixes the model)",
                            **({"enum": DEPLOYMENTS} if DEPLOYMENTS else {})),
        "version": Param("latest", type="string", minLength=1, title="Version",
                         pattern=r"^(latest|previous|[a-z0-9]+://\S+|models/\S+)$",
                         description="a manifest URI (file://, s3://, oss://), 'latest', or 'previous' to roll "
                                     "back to the version the stable one replaced (recorded on the deployment)"),
        "traffic_strategy": Param(TRAFFIC_CHOICES[0], type="string", enum=list(TRAFFIC_CHOICES),
                                  title="Traffic strategy",
                                  description="HTTPRoute weights (ACK Gateway) or replica ratio behind one Service"),
        "steps": optional_typed(TrafficSteps, None, title="Traffic steps (canary %)",
                                description="strictly increasing, ending at 100; empty: the deployment's steps",
                                description_md=registry_values("steps", "Traffic steps (canary %), strictly "
                                                               "increasing, ending at 100.")),
        "thresholds": optional_typed(
            RolloutThresholds, None, title="Analysis thresholds",
            description="canary/stable median p95 latency ratio, canary error rate, golden-prompt pass rate; "
                        "empty: the deployment's thresholds; a key given overrides only that threshold",
            description_md=registry_values("thresholds", "Canary/stable median p95 latency ratio, canary error "
                                           "rate, golden-prompt pass rate. A key given overrides only that "
                                           "threshold.")),
        "analysis_window_s": Param(None, type=["null", "integer"], minimum=5, maximum=86400,
                                   title="Analysis window (s)",
                                   description="analysis time per traffic step; empty: the deployment's window",
                                   description_md=registry_values("analysis_window_s",
                                                                  "Analysis time per traffic step.")),
        "canary_extra_args": Param(None, type=["null", "array"], items={"type": "string"}, maxItems=32,
                                   title="Canary extra server arguments",
                                   description="tuning flags of vLLM or trtllm-serve, one argument per line, e.g. "
                                               "--max-num-seqs and 64; tried on the canary only, after the "
                                               "deployment's extra_args; in the report. Flags that change policy "
                                               "or exposure (--trust-remote-code, --host, --api-key, ...) are "
                                               "refused: the README lists the allowed ones"),
        "approval": optional_typed(
            ApprovalSpec, None, title="Human gate",
            description="after_steps: the step (canary %) after whose passed analysis the rollout waits for a "
                        "person to approve (continue) or reject (roll back), [] for none; timeout_s: how long it "
                        "waits; on_timeout: reject or approve. Empty: the deployment's; a key given overrides "
                        "only that key",
            description_md=registry_values("approval", "A human gate: `after_steps` (the step, canary %, after "
                                           "whose passed analysis the rollout waits for approval; `[]` for none), "
                                           "`timeout_s`, `on_timeout` (`reject` rolls back, `approve` "
                                           "continues). A key given overrides only that key.")),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="run pre-flight and print the objects; create nothing"),
    },
)
def model_rollout():
    ModelRolloutOperator(task_id="rollout")


model_rollout()
