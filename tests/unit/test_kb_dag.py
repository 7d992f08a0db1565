"""kb_reindex DAG wiring: mapped over knowledge bases, one at a time, typed Params, report at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "kb_reindex.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["kb_reindex"]


def test_reindex_is_mapped_and_limited_to_one_at_a_time(dag):
    reindex = dag.get_task("reindex")
    assert type(reindex).__name__ == "MappedOperator"
    assert reindex.partial_kwargs.get("max_active_tis_per_dag") == 1
    assert dag.max_active_runs == 1
    assert [t.task_id for t in reindex.upstream_list] == ["select"]
    assert [t.task_id for t in reindex.downstream_list] == ["report"]
    assert dag.get_task("report").trigger_rule == "all_done"  # the report also covers failed knowledge bases


def test_params_offer_the_modes_and_a_dry_run(dag):
    assert dag.params.get_param("mode").schema["enum"] == ["incremental", "full", "rollback"]
    assert dag.params.get_param("dry_run").schema["type"] == "boolean"
    assert dag.params["knowledge_base"] == "all"
    assert dag.params.get_param("knowledge_base").schema["enum"] == ["all", "product-docs"]


def test_select_turns_params_into_job_arguments(dag):
    select = dag.get_task("select")
    result = select.python_callable(params={"knowledge_base": "product-docs", "mode": "full", "dry_run": True})
    assert result == [{"arguments": ["--kb", "product-docs", "--mode", "full", "--dry-run"]}]
