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
    result = select.python_callable(params={"knowledge_base": "product-docs", "mode": "full", "dry_run": True})
    assert result == [{"arguments": ["--kb", "product-docs", "--mode", "full", "--dry-run"]}]
    own = bag.dags["kb_reindex__product-docs"].get_task("select")
    assert own.python_callable(params={"mode": "incremental"}) == [
        {"arguments": ["--kb", "product-docs", "--mode", "incremental"]}]


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
