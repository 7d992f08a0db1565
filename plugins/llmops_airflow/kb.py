"""Airflow glue of kb_reindex: one Asset per knowledge base, the registry's schedules as Airflow schedules,
and the bodies of the select, announce and report tasks.

The decisions (which knowledge bases, what the report says, which items failed) are `llmops.kb.runs`.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger("llmops_airflow.kb")

#: The announce task adds one event per successfully re-indexed knowledge base through this alias.
KNOWLEDGE_BASES = AssetAlias(name="knowledge_bases", group="knowledge-base")


def knowledge_base_asset(name: str) -> Asset:
    """The Asset of one knowledge base: a successful re-index (incremental, full or rollback) updates it."""
    return Asset(name=f"knowledge_base__{name}", uri=f"llmops://knowledge-bases/{name}", group="knowledge-base")


def airflow_schedule(schedule: Any) -> Any:
    """A registry `schedule` (cron, preset, {asset: URI} or None) as the `schedule` argument of a DAG."""
    if schedule is None or isinstance(schedule, str):
        return schedule
    return Asset(uri=schedule.asset)


def mode_param():
    """The form's mode drop-down: the modes `llmops.kb.runs` defines, incremental first (the default)."""
    from airflow.sdk import Param

    from llmops.kb.plan import KB_MODES

    return Param(KB_MODES[0], type="string", enum=list(KB_MODES), title="Mode",
                 description="incremental upserts, full blue/green rebuild, or rollback of the alias")


def load_knowledge_bases() -> dict:
    """The valid knowledge bases by name (an invalid entry is left out here: see `invalid_knowledge_bases`)."""
    return _knowledge_bases()[0]


def invalid_knowledge_bases() -> dict[str, str]:
    """{entry name (or #index): every problem of it, one per line, each with its fix} for the entries of
    knowledge_bases.yaml that do not validate. The DAG file gives each a DAG of its own that shows the problems
    and fails when run, so one broken entry never takes the other knowledge bases' DAGs down."""
    return {name: "\n".join(f"{key}: {what}" + (f"; fix: {fix}" if fix else "") for key, what, fix in problems)
            for name, problems in _knowledge_bases()[1].items()}


def _knowledge_bases() -> tuple[dict, dict]:
    from llmops.config.loader import entries_by_validity
    from llmops.settings import get_settings

    return entries_by_validity(get_settings().config_dir / "knowledge_bases.yaml")


def secret_env(kb) -> dict[str, str]:
    """{ENV: "conn_id.field"}: the Connection fields one knowledge base's job gets, and only those.

    Milvus' token and server (used when the knowledge base sets no milvus.uri) from `milvus.connection_id`
    (default milvus_default); an s3/oss source's keys, endpoint and region from the source's own
    `connection_id` (as AWS_* or OSS_*, the SDKs' names); a remote (openai) embedder's API key from the
    embedder's own `connection_id` as the variable its `api_key_env` names. A missing Connection leaves its
    variables unset: the SDK's default chain (RRSA) or no key applies.
    """
    from llmops_airflow.steps import object_store_secret_env

    env: dict[str, str] = {}
    if kb.milvus.connection_id:
        env.update(MILVUS_TOKEN=f"{kb.milvus.connection_id}.password", MILVUS_URI=f"{kb.milvus.connection_id}.host")
    source = kb.source
    if source.kind != "local" and source.connection_id:
        prefix = "AWS_" if source.kind == "s3" else "OSS_"
        env.update({name: ref for name, ref in object_store_secret_env(source.connection_id).items()
                    if name.startswith(prefix)})
    embedder = kb.embedder
    if embedder.kind == "openai" and embedder.connection_id and embedder.api_key_env:
        env[embedder.api_key_env] = f"{embedder.connection_id}.password"
    return env


def job_kwargs(kb, arguments: list[str], runtime: str | None = None) -> dict:
    """One `expand_kwargs` entry of the reindex step: the job's arguments and the knowledge base's secrets
    (locally as the step's `secret_env`; in pods as env from the Connections' Kubernetes Secrets)."""
    from llmops.settings import get_settings
    from llmops_airflow.steps import pod_secret_env

    if (runtime or get_settings().runtime) != "kubernetes":
        return {"arguments": arguments, "secret_env": secret_env(kb)}
    return {"arguments": arguments,
            "pod_template_dict": {"spec": {"containers": [{"name": "base", "env": pod_secret_env(secret_env(kb))}]}}}


def select(params: dict | None, fixed_knowledge_base: str | None) -> list[dict]:
    """`expand_kwargs` of the reindex step: one `--kb NAME --mode MODE [--dry-run]` per knowledge base, each
    with its own Connections."""
    from llmops.kb.plan import KB_MODES
    from llmops.kb.runs import job_arguments
    from llmops_airflow.forms import chosen

    params = params or {}
    knowledge_bases = load_knowledge_bases()
    invalid = invalid_knowledge_bases()
    wanted = fixed_knowledge_base or chosen(params.get("knowledge_base"))
    if wanted in invalid:
        raise AirflowFailException(f"knowledge base {wanted} is invalid in knowledge_bases.yaml:\n{invalid[wanted]}")
    if invalid and not wanted:
        log.error("skipping %d invalid knowledge base(s) of knowledge_bases.yaml (python -m llmops validate):\n%s",
                  len(invalid), "\n".join(invalid.values()))
    runs = job_arguments(knowledge_bases, fixed_knowledge_base or chosen(params.get("knowledge_base")) or "",
                         params.get("mode") or KB_MODES[0], bool(params.get("dry_run")))
    print("re-indexing " + ", ".join(args[1] for args in runs))
    return [job_kwargs(knowledge_bases[args[1]], args) for args in runs]


def announce(selected: list[dict], results: Any, outlet_events, run_id: str, knowledge_base: str | None) -> list[str]:
    """Asset events for the knowledge bases whose re-index succeeded and wrote (not a dry run).

    The DAG of one knowledge base declares that knowledge base's Asset as the task's outlet (which also
    registers the Asset) and runs only when its re-index succeeded; the manual DAG adds events through
    the `knowledge_bases` alias, one per successful knowledge base, after all of them finished.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from llmops.kb.runs import outcomes

    updated = []
    for name, result in outcomes([item["arguments"][1] for item in selected], results):
        if result is None or result.get("dry_run") or result.get("already_running"):
            continue
        extra = {key: result.get(key) for key in ("mode", "collection", "previous_collection", "rows",
                                                  "embedded_chunks", "deleted_chunks", "recall")}
        extra["run_id"] = run_id
        if knowledge_base is None:
            outlet_events[KNOWLEDGE_BASES].add(knowledge_base_asset(name), extra=extra)
        else:
            outlet_events[knowledge_base_asset(name)].extra = extra
        updated.append(name)
    if not updated and knowledge_base is not None:
        raise AirflowSkipException("dry run: nothing was written, no Asset event")
    print("asset events: " + (", ".join(f"knowledge_base__{n}" for n in updated) or "none (nothing written)"))
    return updated


def report(selected: list[dict], results: Any) -> str:
    """Print every knowledge base's outcome, then fail the task (and so the run) if any re-index failed."""
    from llmops.kb.runs import format_report, outcomes

    items = outcomes([item["arguments"][1] for item in selected], results)
    text = format_report(items)
    print(text)
    failed = [name for name, result in items if result is None]
    if failed:
        # The items already retried on their own; failing here only sets the run's state: no retry.
        raise AirflowFailException(f"kb_reindex failed for {', '.join(failed)}; fix: read the log of "
                           + ", ".join(f"reindex[{name}]" for name in failed))
    return text
