"""The pipelines under a real scheduler: triggered through the REST API (/api/v2) on the running stack
(tests/airflow/conftest.py, the code `make ui` runs), executed by the LocalExecutor with the local runtime's
worker environment, against the stand-ins (olah hub mirror, a Milvus Lite server, a file store).

The runs are triggered together as soon as Airflow is up (conftest.rest_runs); each test waits for its own."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def finished(airflow_stack, rest_runs, name: str, timeout: float = 900) -> tuple[str, str]:
    dag_id, run_id = rest_runs[name]
    return run_id, airflow_stack.wait_for_run(dag_id, run_id, timeout=timeout)


def test_kb_reindex_runs_to_success_and_fills_the_served_milvus(airflow_stack, rest_runs):
    run_id, state = finished(airflow_stack, rest_runs, "kb")
    assert state == "success", airflow_stack.run_summary("kb_reindex", run_id)
    report = airflow_stack.task_log("kb_reindex", run_id, "report")
    assert "product-docs" in report and "incremental" in report, report[-3000:]

    from pymilvus import MilvusClient

    client = MilvusClient(uri=airflow_stack.env["LLMOPS_MILVUS_URI"])  # another process, while the server runs
    assert "product_docs" in client.list_aliases().get("aliases", [])
    assert client.query("product_docs", filter="chunk_index >= 0", output_fields=["doc_id"], limit=5)


def test_model_refresh_builds_and_publishes_the_demo_model(airflow_stack, rest_runs):
    from llmops.artefacts import open_store

    run_id, state = finished(airflow_stack, rest_runs, "refresh")
    assert state == "success", airflow_stack.run_summary("model_refresh", run_id)
    versions = open_store(airflow_stack.env["LLMOPS_STORE_URI"]).list_versions("tiny-llama")
    # test_rollout_resume.py publishes an unquantized version of its own into the stack's store (no DAG run)
    built = [(m.recipe, m.source_repo, m.built_by.run_id) for m in versions if m.built_by and m.built_by.run_id]
    assert built == [("modelopt-fp8", "llmops-demo/tiny-llama", run_id)], versions


def test_a_refresh_of_a_repo_missing_on_the_hub_ends_failed(airflow_stack, rest_runs, missing_model):
    from llmops.artefacts import open_store

    run_id, state = finished(airflow_stack, rest_runs, "missing_model")
    assert state == "failed", airflow_stack.run_summary("model_refresh", run_id)
    log = airflow_stack.task_log("model_refresh", run_id, "resolve", map_index=0)
    assert "llmops-demo/no-such-repo" in log, log[-3000:]
    # the per-item report is in the report task's log view, wrapped between words with its fix whole
    report = airflow_stack.task_log("model_refresh", run_id, "report")
    assert "model_refresh: 0 published, 0 skipped, 1 failed" in report, report[-3000:]
    words = " ".join(report.split())
    assert f"failed {missing_model} resolve: repo 'llmops-demo/no-such-repo' was not found" in words, report[-3000:]
    assert "fix: check repo_id in models.yaml" in words and "has access to it" in words, report[-3000:]
    assert open_store(airflow_stack.env["LLMOPS_STORE_URI"]).list_versions(missing_model) == []


def test_a_value_outside_the_form_is_refused_before_a_run_exists(airflow_stack):
    status, body = airflow_stack.api("POST", "/dags/model_refresh/dagRuns",
                                     {"logical_date": None, "conf": {"model": "no-such-model"}})
    assert status == 400 and "model" in str(body), (status, body)
    _, listing = airflow_stack.api("GET", "/dags/model_refresh/dagRuns?limit=100")
    assert all(run["conf"].get("model") != "no-such-model" for run in listing["dag_runs"])


def test_a_rest_rollout_with_only_deployment_and_version_uses_the_registry(airflow_stack, rest_runs,
                                                                          registry_rollout):
    """The Params default to empty, so deployments.yaml's steps, window and thresholds apply (the stack's
    registry sets values unlike the schema's defaults). The stack's store holds no vLLM build of tiny-llama,
    so the run ends in pre-flight, before anything changes; the request line is logged before that."""
    run_id, state = finished(airflow_stack, rest_runs, "rollout")
    _, run = airflow_stack.api("GET", f"/dags/model_rollout/dagRuns/{run_id}")
    assert run["conf"] == {"deployment": "tiny-llama-chat", "version": "latest"}
    log = airflow_stack.task_log("model_rollout", run_id, "rollout")
    t = registry_rollout["thresholds"]
    assert (f"steps {registry_rollout['steps']} (deployments.yaml); window {registry_rollout['analysis_window_s']} "
            f"s (deployments.yaml); thresholds p95 ratio {t['max_p95_latency_ratio']:g}, error rate "
            f"{t['max_error_rate']:g}, golden pass rate {t['min_golden_pass_rate']:g} (deployments.yaml)") in log, \
        log[-3000:]
    # refused in pre-flight (the log API returns the exception's text outside the log events read here)
    assert state == "failed", airflow_stack.run_summary("model_rollout", run_id)
