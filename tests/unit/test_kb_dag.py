"""kb_reindex DAG wiring: the manual DAG and one DAG per knowledge base on the registry's own schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bag():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "kb_reindex.py"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def dag(bag):
    return bag.dags["kb_reindex"]


def test_reindex_is_mapped_and_limited_to_one_at_a_time(dag):
    reindex = dag.get_task("reindex")
    assert type(reindex).__name__ == "MappedOperator"
    assert reindex.partial_kwargs.get("max_active_tis_per_dag") == 1
    assert dag.max_active_runs == 1
    assert [t.task_id for t in reindex.upstream_list] == ["select"]
    assert sorted(t.task_id for t in reindex.downstream_list) == ["announce", "report"]


def test_report_is_the_only_leaf_and_runs_after_every_item(bag):
    """The run's state is its leaves' state: report runs whatever the items did and fails if one failed."""
    for dag_id, dag in bag.dags.items():
        assert [t.task_id for t in dag.leaves] == ["report"], dag_id
        assert dag.get_task("report").trigger_rule == "all_done"
        assert "announce" in dag.get_task("report").upstream_task_ids
    assert bag.dags["kb_reindex"].get_task("announce").trigger_rule == "all_done"  # alias: per successful item
    own = bag.dags["kb_reindex__product-docs"].get_task("announce")
    assert own.trigger_rule == "all_success"  # its one item succeeded
    assert [o.uri for o in own.outlets] == ["llmops://knowledge-bases/product-docs"]


def test_params_offer_the_modes_and_a_dry_run(dag):
    assert dag.params.get_param("mode").schema["enum"] == ["incremental", "full", "rollback"]
    assert dag.params.get_param("dry_run").schema["type"] == "boolean"
    assert dag.params["knowledge_base"] == "all"
    assert dag.params.get_param("knowledge_base").schema["enum"] == ["all", "product-docs"]
    assert dag.schedule is None  # manual: the schedules are the knowledge bases' own DAGs


def test_select_turns_params_into_job_arguments(bag):
    select = bag.dags["kb_reindex"].get_task("select")
    milvus = {"MILVUS_TOKEN": "milvus_default.password", "MILVUS_URI": "milvus_default.host"}
    result = select.python_callable(params={"knowledge_base": "product-docs", "mode": "full", "dry_run": True})
    assert result == [{"arguments": ["--kb", "product-docs", "--mode", "full", "--dry-run"], "secret_env": milvus}]
    own = bag.dags["kb_reindex__product-docs"].get_task("select")
    assert own.python_callable(params={"mode": "incremental"}) == [
        {"arguments": ["--kb", "product-docs", "--mode", "incremental"], "secret_env": milvus}]


def _kb(**changes):
    from llmops.config import load_file

    base = load_file(ROOT / "include" / "config" / "knowledge_bases.yaml").knowledge_bases[0]
    data = base.model_dump()
    for key, value in changes.items():
        data[key].update(value)
    return type(base).model_validate(data)


def test_each_knowledge_base_s_job_gets_its_own_source_and_embedder_connections():
    """The source's and the remote embedder's `connection_id` become that job's declared secrets, and only
    the ones its source kind and embedder read (a local source and a local embedder read none)."""
    from llmops_airflow.kb import job_kwargs, secret_env

    assert set(secret_env(_kb())) == {"MILVUS_TOKEN", "MILVUS_URI"}
    assert secret_env(_kb(milvus={"connection_id": "milvus_prod"})) == {
        "MILVUS_TOKEN": "milvus_prod.password", "MILVUS_URI": "milvus_prod.host"}
    assert secret_env(_kb(milvus={"connection_id": None})) == {}
    s3 = secret_env(_kb(source={"kind": "s3", "uri": "s3://b/docs", "connection_id": "kb_docs_s3"}))
    assert {k: v for k, v in s3.items() if not k.startswith("MILVUS_")} == {
        "AWS_ACCESS_KEY_ID": "kb_docs_s3.login", "AWS_SECRET_ACCESS_KEY": "kb_docs_s3.password",
        "AWS_ENDPOINT_URL": "kb_docs_s3.extra.endpoint_url", "AWS_DEFAULT_REGION": "kb_docs_s3.extra.region_name"}
    oss = secret_env(_kb(source={"kind": "oss", "uri": "oss://b/docs"}))  # the default Connection
    assert oss["OSS_ACCESS_KEY_SECRET"] == "llmops_kb_sources.password" and not any(k.startswith("AWS_") for k in oss)
    assert not any(k.startswith(("AWS_", "OSS_")) for k in secret_env(
        _kb(source={"kind": "s3", "uri": "s3://b/docs", "connection_id": None})))  # null: the SDK's chain (RRSA)
    remote = _kb(embedder={"kind": "openai", "endpoint": "http://e/v1", "connection_id": "team_embeddings",
                           "api_key_env": "TEAM_EMBEDDINGS_KEY"})
    assert secret_env(remote)["TEAM_EMBEDDINGS_KEY"] == "team_embeddings.password"
    assert secret_env(_kb(embedder={"kind": "openai", "endpoint": "http://e/v1"}))["EMBEDDINGS_API_KEY"] == \
        "embeddings_default.password"
    pod = job_kwargs(remote, ["--kb", "product-docs"], runtime="kubernetes")["pod_template_dict"]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "base" and {"name": "TEAM_EMBEDDINGS_KEY", "valueFrom": {"secretKeyRef": {
        "name": "llmops-team-embeddings", "key": "password", "optional": True}}} in container["env"]


@pytest.mark.parametrize(("change", "message"), [
    ({"source": {"connection_id": "not a conn id"}}, "String should match pattern"),
    ({"embedder": {"api_key_env": "lower-case"}}, "String should match pattern"),
])
def test_bad_connection_fields_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        _kb(**change)


def test_each_knowledge_base_gets_a_dag_on_its_own_schedule(tmp_path):
    """Parse the DAG folder against a registry with a cron, a preset, an Asset and a manual-only entry."""
    config = tmp_path / "config"
    config.mkdir()
    base = yaml.safe_load((ROOT / "include" / "config" / "knowledge_bases.yaml").read_text())["knowledge_bases"][0]
    schedules = {"nightly": "30 2 * * *", "weekly": "@weekly", "on-upload": {"asset": "s3://kbdocs/docs/"},
                 "by-hand": None}
    entries = [{**base, "name": name, "alias": name.replace("-", "_"), "schedule": schedule}
               for name, schedule in schedules.items()]
    (config / "knowledge_bases.yaml").write_text(yaml.safe_dump({"knowledge_bases": entries}))
    code = (
        "import json\n"
        "from airflow.models import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags' / 'kb_reindex.py')!r})\n"
        "out = {}\n"
        "for dag_id, dag in bag.dags.items():\n"
        "    s = dag.schedule\n"
        "    out[dag_id] = getattr(s, 'uri', s) if not isinstance(s, str) else s\n"
        "    out[dag_id + ':timetable'] = type(dag.timetable).__name__\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()}, 'dags': out}))\n"
    )
    env = {**os.environ, "LLMOPS_CONFIG_DIR": str(config)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    dags = result["dags"]
    assert dags["kb_reindex"] is None
    assert dags["kb_reindex__nightly"] == "30 2 * * *"
    assert dags["kb_reindex__weekly"] == "@weekly"
    assert dags["kb_reindex__on-upload"] == "s3://kbdocs/docs"  # Airflow normalises the URI
    assert dags["kb_reindex__on-upload:timetable"] == "AssetTriggeredTimetable"
    assert dags["kb_reindex__by-hand"] is None and dags["kb_reindex__by-hand:timetable"] == "NullTimetable"
    assert len(dags) == 2 * (len(schedules) + 1)


def test_a_broken_knowledge_base_takes_only_its_own_dag_down(tmp_path):
    """A bad cron in one entry, a bad milvus.uri in another: the valid knowledge base keeps its scheduled DAG, each
    broken one gets a DAG of its own that is never scheduled and shows its problems, and the file imports."""
    config = tmp_path / "config"
    config.mkdir()
    base = yaml.safe_load((ROOT / "include" / "config" / "knowledge_bases.yaml").read_text())["knowledge_bases"][0]
    entries = [{**base, "name": "good", "alias": "good", "schedule": "30 2 * * *"},
               {**base, "name": "bad-cron", "alias": "bad_cron", "schedule": "61 * * * *"},
               {**base, "name": "bad-milvus", "alias": "bad_milvus", "milvus": {"uri": "ftp://x"}}]
    (config / "knowledge_bases.yaml").write_text(yaml.safe_dump({"knowledge_bases": entries}))
    code = (
        "import json\n"
        "from airflow.models import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags' / 'kb_reindex.py')!r})\n"
        "out = {d: {'schedule': str(dag.schedule), 'tags': sorted(dag.tags), 'doc': dag.doc_md or ''}\n"
        "       for d, dag in bag.dags.items()}\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()}, 'dags': out}))\n"
    )
    env = {**os.environ, "LLMOPS_CONFIG_DIR": str(config)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    dags = result["dags"]
    assert dags["kb_reindex__good"]["schedule"] == "30 2 * * *"
    assert "invalid-registry-entry" not in dags["kb_reindex__good"]["tags"]
    for name, shown in (("bad-cron", "61 * * * *"), ("bad-milvus", "milvus.uri 'ftp://x'")):
        broken = dags[f"kb_reindex__{name}"]
        assert broken["schedule"] == "None" and "invalid-registry-entry" in broken["tags"]
        assert shown in broken["doc"] and "fix:" in broken["doc"], broken["doc"]
    assert set(dags) == {"kb_reindex", "kb_reindex__good", "kb_reindex__bad-cron", "kb_reindex__bad-milvus"}
