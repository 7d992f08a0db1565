"""model_refresh end to end on the local runtime: `airflow dags test` against an olah mirror serving the trained
tiny model through the real Hugging Face client, real llm-compressor and ModelOpt on CPU, real vLLM validation,
a file store.

The first run has three items, each on its own chain: tiny-llama/llmcompressor-w8a8 (validated by vLLM),
tiny-llama/modelopt-fp8 (TensorRT-LLM validation skipped locally) and tiny-strict/llmcompressor-w8a8, whose
golden prompt expects an answer the model never gives, so its validation fails (once vLLM has served the
unquantized model as the reference, before the candidate is served: the unquantized model misses it too). The
other two publish, the
run ends failed and the report lists all three. A second run (tiny-llama only) skips what the first published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from refresh_helpers import ROOT

from llmops.artefacts import open_store
from support.olah import olah_server, publish_repo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # two DAG runs, three vLLM starts, on a shared machine

FIRST_RUN = {"model": "all"}
SECOND_RUN = {"model": "tiny-llama"}


def registry_with_a_strict_model(config_dir: Path) -> Path:
    """The shipped registry plus tiny-strict: the same repo, a golden prompt expecting Berlin from France."""
    config_dir.mkdir(parents=True)
    for name in ("gpu_profiles.yaml", "deployments.yaml", "knowledge_bases.yaml", "models.yaml"):
        (config_dir / name).write_text((ROOT / "include" / "config" / name).read_text())
    models = yaml.safe_load((config_dir / "models.yaml").read_text())
    (tiny,) = [m for m in models["models"] if m["name"] == "tiny-llama"]
    strict = {**tiny, "name": "tiny-strict", "targets": [{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}],
              "validation": {**tiny["validation"], "golden_prompts": [
                  {"prompt": "The capital of France is", "expect_substring": "Berlin"}]}}
    models["models"].append(strict)
    (config_dir / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    return config_dir


@pytest.fixture(scope="module")
def refresh_env(tmp_path_factory, tiny_model, airflow_db, venvs):
    root = tmp_path_factory.mktemp("refresh-e2e")
    sha = publish_repo(root / "mirrors", "llmops-demo/tiny-llama", tiny_model, branch="main")
    with olah_server(root / "mirrors", work_dir=root / "olah") as endpoint:
        env = {**os.environ, "HF_ENDPOINT": endpoint, "LLMOPS_HOME": str(root / "home"),
               "LLMOPS_STORE_URI": (root / "store").as_uri(), "LLMOPS_RUNTIME": "local",
               "LLMOPS_WORKER_PYTHON": str(venvs / "worker" / "bin" / "python"),
               "LLMOPS_SERVING_PYTHON": str(venvs / "serving" / "bin" / "python"),
               "LLMOPS_CONFIG_DIR": str(registry_with_a_strict_model(root / "config")),
               "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("include", "plugins", "dags"))}
        yield env, sha, root


def latest_run_state() -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (session.query(DagRun).filter(DagRun.dag_id == "model_refresh")
               .order_by(DagRun.start_date.desc()).first())
        return str(run.state)


def dags_test(env: dict, log: Path, conf: dict) -> subprocess.CompletedProcess:
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "test", "model_refresh", "-c", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=1500)
    log.write_text(done.stdout + done.stderr)
    return done


@pytest.fixture(scope="module")
def first_run(refresh_env):
    env, sha, root = refresh_env
    done = dags_test(env, root / "run1.log", FIRST_RUN)
    return done, done.stdout + done.stderr


def test_one_item_failing_validation_does_not_stop_the_others_and_the_report_lists_all_three(refresh_env, first_run):
    env, sha, root = refresh_env
    done, log = first_run
    store = open_store(env["LLMOPS_STORE_URI"])
    assert store.read_manifest(f"models/tiny-llama/{sha}/vllm-llmcompressor-w8a8") is not None, log[-6000:]
    assert store.read_manifest(f"models/tiny-llama/{sha}/tensorrt-llm-modelopt-fp8") is not None, log[-6000:]
    assert store.read_manifest(f"models/tiny-strict/{sha}/vllm-llmcompressor-w8a8") is None
    assert latest_run_state() == "failed", log[-4000:]
    from support.refresh_report import report_from_log, rows

    report = report_from_log(log, "model_refresh: 2 published")  # the report task's return value, whole
    assert "0 skipped, 1 failed" in report.splitlines()[0]
    items = rows(report)
    assert report.splitlines()[1].split()[:3] == ["failed", "tiny-strict/llmcompressor-w8a8", "validate:"], report[:2000]
    assert "the unquantized model's own answers miss the golden expectations" in \
        items["tiny-strict/llmcompressor-w8a8"][1], report[:2000]
    published = {key: detail for key, (status, detail) in items.items() if status == "published"}
    assert sorted(published) == ["tiny-llama/llmcompressor-w8a8", "tiny-llama/modelopt-fp8"], report[:2000]
    assert all(detail.endswith("/manifest.json") for detail in published.values())
    assert "XCom not found" not in log


def test_the_first_run_downloads_quantizes_validates_with_vllm_and_publishes(refresh_env, first_run):
    env, sha, _ = refresh_env
    first_run = first_run[1]
    prefix = f"models/tiny-llama/{sha}/vllm-llmcompressor-w8a8"
    manifest = open_store(env["LLMOPS_STORE_URI"]).read_manifest(prefix)
    assert manifest is not None, first_run[-4000:]
    assert (manifest.source_repo, manifest.source_sha, manifest.source_revision) == ("llmops-demo/tiny-llama", sha, "main")
    assert manifest.model_extra["validation"]["status"] == "passed"
    validation = manifest.model_extra["validation"]
    assert validation["compared"].startswith("teacher-forced") and validation["positions"] > 0
    assert validation["mean_kl"] <= validation["thresholds"]["max_mean_kl"]
    assert validation["reference"]["served_by"] == "vllm"  # the unquantized model, served as the candidate is
    assert manifest.built_by.dag_id == "model_refresh" and manifest.built_by.run_id.startswith("manual__")
    assert "mean KL" in first_run and "PASS" in first_run  # the validation verdict reaches the task log
    assert Path(env["LLMOPS_HOME"], "work", "tiny-llama", sha, "source", "model.safetensors").is_file()


def test_the_run_emits_an_asset_event_carrying_the_manifest_uri_and_lineage(refresh_env, first_run):
    env, sha, _ = refresh_env
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .filter(AssetModel.name == "model_artefacts").all())
        extras = [event.extra for event in events if event.extra.get("source_sha") == sha
                  and event.extra.get("recipe") == "llmcompressor-w8a8" and event.extra.get("model") == "tiny-llama"]
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
    done = dags_test(env, root / "run2.log", SECOND_RUN)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert latest_run_state() == "success" and "XCom not found" not in log
    assert f"skip  tiny-llama/llmcompressor-w8a8: already published ({before.uri})" in log
    assert "0 artefact version(s) to build" in log
    assert "llmops.jobs.quantize" not in log and "llmops.jobs.validate" not in log
    assert store.read_manifest(prefix).created_at == before.created_at
