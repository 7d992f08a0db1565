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


def _types(schema: dict) -> set[str]:
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_trigger_form_accepts_the_defaults(dagbag, dag_id):
    """The React trigger form counts "" and [] as missing and then disables Trigger: an optional field is nullable,
    every default validates against its schema (the browser test in tests/airflow checks the real form)."""
    dag = dagbag.dags[dag_id]
    for name in dag.params:
        param = dag.params.get_param(name)
        if param.value in ("", [], {}, None):
            assert "null" in _types(param.schema), f"{dag_id}.{name}: an optional field needs type ['null', ...]"
        param.resolve(suppress_exception=False)  # the default passes its own schema


@pytest.mark.parametrize(("dag_id", "name", "registry"), [("model_refresh", "model", "models"),
                                                          ("kb_reindex", "knowledge_base", "knowledge_bases")])
def test_one_or_all_fields_are_drop_downs_of_the_registry(dagbag, dag_id, name, registry):
    from llmops.config import load_registry

    names = list(getattr(load_registry(), registry))
    param = dagbag.dags[dag_id].params.get_param(name)
    assert param.value == "all"
    assert param.schema["enum"] == ["all", *names]


def test_recipes_is_a_multi_select_of_the_catalogue(dagbag):
    from llmops.config.recipes import RECIPES

    schema = dagbag.dags["model_refresh"].params.get_param("recipes").schema
    assert schema["examples"] == sorted(RECIPES) == schema["items"]["enum"]
    assert "null" in _types(schema) and "array" in _types(schema)


@pytest.mark.parametrize(("value", "expected"), [("all", None), ("", None), (None, None), ("tiny-llama", "tiny-llama")])
def test_chosen_reads_all_empty_and_null_as_every_item(value, expected):
    from llmops_airflow.forms import chosen

    assert chosen(value) == expected
