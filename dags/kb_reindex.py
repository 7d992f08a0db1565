"""kb_reindex: placeholder wiring; the knowledge-base pipeline replaces the task body."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from llmops_airflow.dag_defaults import START_DATE, default_args


@dag(
    dag_id="kb_reindex",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["llmops", "knowledge-base"],
    doc_md="Re-index knowledge bases into Milvus: incremental, or a blue/green rebuild with an alias swap.",
    params={
        "knowledge_base": Param("", type="string"),
        "mode": Param("incremental", type="string", enum=["incremental", "full"]),
        "dry_run": Param(False, type="boolean"),
    },
)
def kb_reindex():
    @task
    def plan(params=None):
        from llmops.config import load_registry

        return list(load_registry().knowledge_bases)

    plan()


kb_reindex()
