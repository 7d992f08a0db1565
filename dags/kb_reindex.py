"""kb_reindex: list knowledge bases -> re-index each (mapped, worker environment) -> announce -> report.

One factory, two kinds of DAG: the manual `kb_reindex` (a form: any knowledge base or all, any mode)
and one `kb_reindex__<name>` per knowledge base of `include/config/knowledge_bases.yaml`, on that
knowledge base's own `schedule` (cron, preset, an Asset, or null: manual only), each with its own
run history. Wiring only: the decisions live in `llmops.kb` and the heavy step is
`python -m llmops.jobs.kb_reindex` (a subprocess on the local runtime, a pod on Kubernetes).
"""

from __future__ import annotations

import re

from airflow.sdk import Param, dag, task

from llmops_airflow.dag_defaults import START_DATE, default_args
from llmops_airflow.forms import one_or_all
from llmops_airflow.kb import (
    KNOWLEDGE_BASES,
    airflow_schedule,
    invalid_knowledge_bases,
    knowledge_base_asset,
    load_knowledge_bases,
    mode_param,
)
from llmops_airflow.steps import heavy_step_partial

DOC = """
### kb_reindex
Keeps each knowledge base of `include/config/knowledge_bases.yaml` in Milvus. Readers query the
collection **alias**; versions are `<alias>_v<N>`. This DAG is the manual form; each knowledge base
also has its own DAG **kb_reindex__&lt;name&gt;** on its registry `schedule` (cron, preset, an Asset such
as its source prefix, or `null`: manual only), with its own run history.

* **incremental** (default, scheduled): hash every source document; embed only new or changed ones;
  upsert (primary keys are derived from document and chunk); delete the chunks of removed documents;
  reconcile with the rows really in Milvus (rows deleted behind the pipeline's back are restored,
  orphans removed). A changed embedder or chunking turns the run into a full rebuild.
* **full**: build `<alias>_v<N+1>`, index and load it, validate it (row count with Strong
  consistency, golden-query recall@k >= `min_recall`), move the alias in one call, keep `retention`
  versions. A failed or killed build never touches the live alias.
* **rollback**: move the alias back to the previous kept version.

Params: **knowledge_base** (`all`, the default: every one), **mode**, **dry_run** (count documents and chunks, estimate
the time, write nothing). The task log shows a heartbeat (chunks done/total, rate, ETA). `announce`
updates the Asset `knowledge_base__<name>` of every knowledge base re-indexed successfully; `report`
prints embedded / skipped / deleted / repaired / duration per knowledge base and fails the run when
any knowledge base failed. Credentials, all optional: each knowledge base's `milvus.connection_id` (default
`milvus_default`: password = Milvus token, host = server), each S3/OSS source's `source.connection_id` (default `llmops_kb_sources`: keys, endpoint, region) and each
OpenAI-compatible embedder's `embedder.connection_id` (default `embeddings_default`: password = API key).
"""

def build_kb_reindex(dag_id: str, schedule=None, knowledge_base: str | None = None, params: dict | None = None):
    """One kb_reindex DAG: all knowledge bases chosen by the form, or the one `knowledge_base`."""

    @dag(
        dag_id=dag_id,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(),
        tags=["llmops", "knowledge-base"],
        doc_md=DOC if knowledge_base is None else f"Re-index knowledge base **{knowledge_base}**.\n{DOC}",
        params=params,
    )
    def kb_reindex():
        @task
        def select(params=None) -> list[dict]:
            from llmops_airflow import kb

            return kb.select(params, knowledge_base)

        selected = select()
        # One knowledge base at a time: a run holds the knowledge base's lock, and knowledge bases that
        # share a Milvus Lite file cannot be opened by two processes. Raise it when each uses a server.
        reindex = heavy_step_partial(
            task_id="reindex", job="kb_reindex", max_active_tis_per_dag=1,
            map_index_template="{{ task.arguments[1] }}",
            # Each item carries its knowledge base's own Connections (its Milvus', its source's and its
            # remote embedder's connection_id): `select` adds them to its arguments.
        ).expand_kwargs(selected)

        # The DAG of one knowledge base updates its Asset when its re-index succeeded; the manual DAG
        # adds an event per successful knowledge base through the alias once all of them finished.
        announce_rule, outlets = (("all_done", [KNOWLEDGE_BASES]) if knowledge_base is None
                                  else ("all_success", [knowledge_base_asset(knowledge_base)]))

        @task(trigger_rule=announce_rule, outlets=outlets)
        def announce(selected: list[dict], results, outlet_events=None, run_id=None) -> list[str]:
            from llmops_airflow import kb

            return kb.announce(selected, results, outlet_events, run_id, knowledge_base)

        @task(trigger_rule="all_done")
        def report(selected: list[dict], results) -> str:
            from llmops_airflow import kb

            return kb.report(selected, results)

        announce(selected, reindex.output) >> report(selected, reindex.output)

    return kb_reindex()


build_kb_reindex(
    "kb_reindex",
    params={
        "knowledge_base": one_or_all("knowledge_bases.yaml", "knowledge_bases", title="Knowledge base",
                                     description="one knowledge base from knowledge_bases.yaml, or all"),
        "mode": mode_param(),
        "dry_run": Param(False, type="boolean", title="Dry run", description="plan and count, write nothing"),
    },
)

def build_invalid_kb_reindex(name: str, problems: str):
    """The DAG of a knowledge base whose registry entry does not validate: never scheduled, its page shows the
    problems, and a run fails at once with them. The other knowledge bases keep their DAGs."""
    dag_id = f"kb_reindex__{name}" if re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", name) else \
        "kb_reindex__invalid-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:100].strip("-") or "entry")

    @dag(dag_id=dag_id, schedule=None, start_date=START_DATE, catchup=False, default_args=default_args(),
         tags=["llmops", "knowledge-base", "invalid-registry-entry"],
         doc_md=f"### Invalid entry {name} of knowledge_bases.yaml\nNot scheduled until fixed "
                f"(`python -m llmops validate`):\n```\n{problems}\n```")
    def kb_reindex_invalid():
        @task
        def invalid_registry_entry():
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"knowledge base {name} is invalid in knowledge_bases.yaml:\n{problems}")

        invalid_registry_entry()

    return kb_reindex_invalid()


for _name, _problems in invalid_knowledge_bases().items():
    build_invalid_kb_reindex(_name, _problems)

for _name, _kb in load_knowledge_bases().items():
    build_kb_reindex(
        f"kb_reindex__{_name}", schedule=airflow_schedule(_kb.schedule), knowledge_base=_name,
        params={
            "mode": mode_param(),
            "dry_run": Param(False, type="boolean", title="Dry run", description="plan and count, write nothing"),
        },
    )
