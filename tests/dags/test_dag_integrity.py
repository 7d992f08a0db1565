"""Every DAG loads without import errors and carries the metadata operators rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = {"model_refresh", "model_rollout", "kb_reindex"}
# kb_reindex also generates one DAG per knowledge base of the registry, on that knowledge base's schedule.
KB_DAG_IDS = {f"kb_reindex__{kb['name']}" for kb in yaml.safe_load(
    (ROOT / "include" / "config" / "knowledge_bases.yaml").read_text())["knowledge_bases"]}
EXPECTED_DAG_IDS = PIPELINES | KB_DAG_IDS
HEAVY_MODULES = ("torch", "transformers", "vllm", "pymilvus", "sentence_transformers", "llmcompressor", "modelopt")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}, "\n".join(f"{f}: {e}" for f, e in dagbag.import_errors.items())


def test_exactly_the_three_pipelines_and_one_dag_per_knowledge_base(dagbag):
    assert set(dagbag.dag_ids) == EXPECTED_DAG_IDS


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_dag_metadata(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.doc_md and len(dag.doc_md.strip()) > 40, "doc_md tells the operator what the DAG does"
    assert dag.tags and "llmops" in dag.tags
    assert dag.catchup is False
    assert dag.params, "manual triggers need typed Params"
    for task in dag.tasks:
        assert task.owner not in ("", "airflow"), f"{task.task_id}: set an owner"
        assert task.retries >= 1, f"{task.task_id}: retries"
        assert task.retry_exponential_backoff, f"{task.task_id}: exponential backoff"
        callbacks = task.on_failure_callback or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        assert any(type(cb).__name__ == "WebhookNotifier" for cb in callbacks), f"{task.task_id}: failure notifier"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_params_have_json_schema(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    for name in dag.params:
        schema = dag.params.get_param(name).schema
        assert schema.get("type"), f"{dag_id}.{name}: give the Param a JSON-schema type"


def test_parsing_imports_no_heavy_library():
    """Parse the DAG folder in a fresh interpreter and list which heavy modules got imported."""
    code = (
        "import json, sys\n"
        "from airflow.models import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        f"print(json.dumps({{'errors': list(bag.import_errors), 'heavy': [m for m in {HEAVY_MODULES!r} if m in sys.modules]}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(),
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"errors": [], "heavy": []}
