"""model_refresh: placeholder wiring; the refresh pipeline replaces the task body."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from llmops_airflow.dag_defaults import START_DATE, default_args


@dag(
    dag_id="model_refresh",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["llmops", "models"],
    doc_md="Resolve each tracked model's Hugging Face revision, quantize it per target and publish it.",
    params={"model": Param("", type="string", description="one model from models.yaml; empty: all")},
)
def model_refresh():
    @task
    def plan(params=None):
        from llmops.config import load_registry

        registry = load_registry()
        wanted = (params or {}).get("model") or None
        return [name for name in registry.models if wanted in (None, name)]

    plan()


model_refresh()
