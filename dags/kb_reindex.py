"""kb_reindex: list knowledge bases -> re-index each (mapped, worker environment) -> report.

Wiring only: the decisions live in `llmops.kb` (pipeline, index manager) and the heavy step is
`python -m llmops.jobs.kb_reindex` (a subprocess on the local runtime, a pod on Kubernetes).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from llmops_airflow.dag_defaults import START_DATE, default_args
from llmops_airflow.forms import chosen, one_or_all
from llmops_airflow.steps import heavy_step_partial, object_store_secret_env

DOC = """
### kb_reindex
Keeps each knowledge base of `include/config/knowledge_bases.yaml` in Milvus. Readers query the
collection **alias**; versions are `<alias>_v<N>`.

* **incremental** (default, scheduled): hash every source document; embed only new or changed ones;
  upsert (primary keys are derived from document and chunk); delete the chunks of removed documents;
  reconcile with the rows really in Milvus (rows deleted behind the pipeline's back are restored,
  orphans removed). A changed embedder or chunking turns the run into a full rebuild.
* **full**: build `<alias>_v<N+1>`, index and load it, validate it (row count with Strong
  consistency, golden-query recall@k >= `min_recall`), move the alias in one call, keep `retention`
  versions. A failed or killed build never touches the live alias.
* **rollback**: move the alias back to the previous kept version.

Params: **knowledge_base** (`all`, the default: every one; scheduled runs skip those with
`schedule: null`), **mode**, **dry_run** (plan and count, write nothing). The task log shows progress (documents done/total, rate);
the `report` task prints embedded / skipped / deleted / repaired / duration per knowledge base.
Credentials: Connection `milvus_default` (password = Milvus token) and `embeddings_default`
(password = API key of an OpenAI-compatible embeddings endpoint), both optional.
"""


@dag(
    dag_id="kb_reindex",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["llmops", "knowledge-base"],
    doc_md=DOC,
    params={
        "knowledge_base": one_or_all("knowledge_bases.yaml", "knowledge_bases", title="Knowledge base",
                                     description="one knowledge base from knowledge_bases.yaml, or all"),
        "mode": Param("incremental", type="string", enum=["incremental", "full", "rollback"], title="Mode",
                      description="incremental upserts, full blue/green rebuild, or rollback of the alias"),
        "dry_run": Param(False, type="boolean", title="Dry run", description="plan and count, write nothing"),
    },
)
def kb_reindex():
    @task
    def select(params=None, dag_run=None) -> list[dict]:
        from llmops.config import load_file
        from llmops.kb.runs import job_arguments
        from llmops.settings import get_settings

        params = params or {}
        registry = load_file(get_settings().config_dir / "knowledge_bases.yaml")
        scheduled = bool(dag_run and str(getattr(dag_run, "run_type", "")).lower().endswith("scheduled"))
        runs = job_arguments({kb.name: kb for kb in registry.knowledge_bases},
                             chosen(params.get("knowledge_base")) or "", params.get("mode") or "incremental",
                             bool(params.get("dry_run")), scheduled)
        print("re-indexing " + ", ".join(args[1] for args in runs))
        return [{"arguments": args} for args in runs]

    # One knowledge base at a time: a run holds the knowledge base's lock, and knowledge bases that
    # share a Milvus Lite file cannot be opened by two processes. Raise it when each uses a server.
    reindex = heavy_step_partial(
        task_id="reindex", job="kb_reindex", max_active_tis_per_dag=1,
        map_index_template="{{ task.arguments[1] }}",
        # MILVUS_URI (the Connection's host) is used by knowledge bases that set no milvus.uri themselves;
        # S3/OSS sources read their keys from the optional Connection llmops_kb_sources (else RRSA).
        secret_env={"MILVUS_TOKEN": "milvus_default.password", "MILVUS_URI": "milvus_default.host",
                    "EMBEDDINGS_API_KEY": "embeddings_default.password",
                    **object_store_secret_env("llmops_kb_sources")},
    ).expand_kwargs(select())

    @task(trigger_rule="all_done")
    def report(results) -> str:
        from llmops.kb.runs import format_report

        text = format_report(list(results or []))
        print(text)
        return text

    report(reindex.output)


kb_reindex()
