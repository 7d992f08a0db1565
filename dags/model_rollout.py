"""model_rollout: placeholder wiring; the rollout pipeline replaces the task body."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from llmops_airflow.dag_defaults import START_DATE, default_args


@dag(
    dag_id="model_rollout",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    default_args=default_args(),
    tags=["llmops", "serving"],
    doc_md="Roll a published model version out to a vLLM deployment with a self-judging canary.",
    params={
        "deployment": Param("tiny-llama-chat", type="string"),
        "version": Param("latest", type="string"),
        "dry_run": Param(True, type="boolean"),
    },
)
def model_rollout():
    @task
    def preflight(params=None):
        from llmops.config import load_registry

        return load_registry().deployment(params["deployment"]).name

    preflight()


model_rollout()
