"""model_refresh end to end on the local runtime: `airflow dags test` against an olah mirror serving the trained
tiny model through the real Hugging Face client, real llm-compressor on CPU, real vLLM validation, a file store.
A second run must skip what the first published. (ModelOpt runs in test_quantize_recipes; here the run's
`recipes` filter keeps one recipe to hold the test to one quantization and one vLLM start.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from refresh_helpers import ROOT

from llmops.artefacts.store import open_store
from support.olah import olah_server, publish_repo

RUN_CONF = {"model": "tiny-llama", "recipes": ["llmcompressor-w8a8"]}


@pytest.fixture(scope="module")
def refresh_env(tmp_path_factory, tiny_model, airflow_db, venvs):
    root = tmp_path_factory.mktemp("refresh-e2e")
    sha = publish_repo(root / "mirrors", "llmops-demo/tiny-llama", tiny_model, branch="main")
    with olah_server(root / "mirrors", work_dir=root / "olah") as endpoint:
        env = {**os.environ, "HF_ENDPOINT": endpoint, "LLMOPS_HOME": str(root / "home"),
               "LLMOPS_STORE_URI": (root / "store").as_uri(), "LLMOPS_RUNTIME": "local",
               "LLMOPS_WORKER_PYTHON": str(venvs / "worker" / "bin" / "python"),
               "LLMOPS_SERVING_PYTHON": str(venvs / "serving" / "bin" / "python"),
               "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("include", "plugins", "dags"))}
        yield env, sha, root


def dags_test(env: dict, log: Path) -> subprocess.CompletedProcess:
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "test", "model_refresh", "-c", json.dumps(RUN_CONF)], env=env,
                          capture_output=True, text=True, timeout=1500)
    log.write_text(done.stdout + done.stderr)
    return done


@pytest.fixture(scope="module")
def first_run(refresh_env):
    env, sha, root = refresh_env
    done = dags_test(env, root / "run1.log")
    assert done.returncode == 0, f"first run failed, log {root / 'run1.log'}:\n{(done.stdout + done.stderr)[-6000:]}"
    return done.stdout + done.stderr


def test_the_first_run_downloads_quantizes_validates_with_vllm_and_publishes(refresh_env, first_run):
    env, sha, _ = refresh_env
    prefix = f"models/tiny-llama/{sha}/vllm-llmcompressor-w8a8"
    manifest = open_store(env["LLMOPS_STORE_URI"]).read_manifest(prefix)
    assert manifest is not None, first_run[-4000:]
    assert (manifest.source_repo, manifest.source_sha, manifest.source_revision) == ("llmops-demo/tiny-llama", sha, "main")
    assert manifest.model_extra["validation"]["status"] == "passed"
    assert manifest.model_extra["validation"]["agreement"] >= 0.5
    assert manifest.built_by.dag_id == "model_refresh" and manifest.built_by.run_id.startswith("manual__")
    assert "skip  tiny-llama/modelopt-fp8: not in this run's recipes filter" in first_run
    assert "agreement" in first_run and "PASS" in first_run  # the validation verdict reaches the task log
    assert Path(env["LLMOPS_HOME"], "work", "tiny-llama", sha, "source", "model.safetensors").is_file()


def test_the_run_emits_an_asset_event_carrying_the_manifest_uri_and_lineage(refresh_env, first_run):
    env, sha, _ = refresh_env
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .filter(AssetModel.name == "model_artefacts").all())
        extras = [event.extra for event in events if event.extra.get("source_sha") == sha]
    (extra,) = extras
    assert extra["manifest_uri"] == f"{env['LLMOPS_STORE_URI']}/models/tiny-llama/{sha}/vllm-llmcompressor-w8a8/manifest.json"
    assert (extra["recipe"], extra["serving_runtime"], extra["quantization_format"]) == (
        "llmcompressor-w8a8", "vllm", "W8A8")
    assert extra["built_by"]["dag_id"] == "model_refresh"


def test_a_second_run_skips_what_is_published_and_changes_nothing(refresh_env, first_run):
    env, sha, root = refresh_env
    store = open_store(env["LLMOPS_STORE_URI"])
    prefix = f"models/tiny-llama/{sha}/vllm-llmcompressor-w8a8"
    before = store.read_manifest(prefix)
    done = dags_test(env, root / "run2.log")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert f"skip  tiny-llama/llmcompressor-w8a8: already published ({before.uri})" in log
    assert "0 artefact version(s) to build" in log
    assert "llmops.jobs.quantize" not in log and "llmops.jobs.validate" not in log
    assert store.read_manifest(prefix).created_at == before.created_at
