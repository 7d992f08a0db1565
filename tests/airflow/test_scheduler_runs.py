"""The pipelines under a real scheduler: triggered through the REST API (/api/v2) on the running stack
(tests/airflow/conftest.py, the code `make ui` runs), executed by the LocalExecutor with the local runtime's
worker environment, against the stand-ins (olah hub mirror, a Milvus Lite server, a file store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _served_milvus(airflow_stack) -> str:
    registry = yaml.safe_load((Path(airflow_stack.env["LLMOPS_CONFIG_DIR"]) / "knowledge_bases.yaml").read_text())
    return registry["knowledge_bases"][0]["milvus"]["uri"]


def test_kb_reindex_runs_to_success_and_fills_the_served_milvus(airflow_stack):
    run_id = airflow_stack.trigger("kb_reindex", {"knowledge_base": "all", "mode": "incremental"})
    state = airflow_stack.wait_for_run("kb_reindex", run_id, timeout=600)
    assert state == "success", airflow_stack.run_summary("kb_reindex", run_id)
    report = airflow_stack.task_log("kb_reindex", run_id, "report")
    assert "product-docs" in report and "incremental" in report, report[-3000:]

    from pymilvus import MilvusClient

    client = MilvusClient(uri=_served_milvus(airflow_stack))  # another process, while the server runs
    assert "product_docs" in client.list_aliases().get("aliases", [])
    assert client.query("product_docs", filter="chunk_index >= 0", output_fields=["doc_id"], limit=5)


def test_model_refresh_builds_and_publishes_the_demo_model(airflow_stack):
    from llmops.artefacts.store import open_store

    run_id = airflow_stack.trigger("model_refresh", {"model": "tiny-llama", "recipes": ["modelopt-fp8"]})
    state = airflow_stack.wait_for_run("model_refresh", run_id, timeout=900)
    assert state == "success", airflow_stack.run_summary("model_refresh", run_id)
    versions = open_store(airflow_stack.env["LLMOPS_STORE_URI"]).list_versions("tiny-llama")
    assert [(m.recipe, m.source_repo, m.built_by.run_id) for m in versions] == [
        ("modelopt-fp8", "llmops-demo/tiny-llama", run_id)]


def test_a_value_outside_the_form_is_refused_before_a_run_exists(airflow_stack):
    status, body = airflow_stack.api("POST", "/dags/model_refresh/dagRuns",
                                     {"logical_date": None, "conf": {"model": "no-such-model"}})
    assert status == 400 and "model" in str(body), (status, body)
    _, runs = airflow_stack.api("GET", "/dags/model_refresh/dagRuns?limit=100")
    assert all(run["conf"].get("model") != "no-such-model" for run in runs["dag_runs"])


def test_a_run_whose_job_fails_ends_failed(airflow_stack):
    """A rollback with no earlier collection version to go back to is a permanent error: the run fails."""
    run_id = airflow_stack.trigger("kb_reindex", {"knowledge_base": "product-docs", "mode": "rollback"})
    state = airflow_stack.wait_for_run("kb_reindex", run_id, timeout=600)
    assert state == "failed", airflow_stack.run_summary("kb_reindex", run_id)
