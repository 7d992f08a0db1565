"""The step factory's contract with real jobs, on the local runtime: permanent errors fail once and
transient ones retry under a real `airflow dags test`; a job sees only the secrets its step declares; the
publish job gets the `llmops_artefacts` credentials and a SeaweedFS that enforces them proves it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException

from llmops.config import load_registry
from llmops.config.schema import ModelSpec
from llmops.refresh.plan import expand_targets
from llmops_airflow.steps import JobFailed, heavy_step
from support._proc import free_port
from support.seaweed import make_bucket, seaweed_server

ROOT = Path(__file__).resolve().parents[3]
SHA = "feedfacefeedfacefeedfacefeedfacefeedface"

DAG_FILE = """
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from llmops_airflow.steps import JobFailed, heavy_step

ARGS = ["--revision-sha", "{sha}", "--out", "{out}", "--config-dir", "{config}"]
with DAG("job_failures", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
         default_args={{"retries": 1, "retry_delay": timedelta(seconds=0)}}):
    # unknown model: a ConfigError, permanent
    heavy_step(task_id="unknown_model", job="download", arguments=["--model", "no-such-model", *ARGS])
    # the model's mirror is down: HubUnavailableError, transient
    heavy_step(task_id="mirror_down", job="download", arguments=["--model", "tiny-llama", *ARGS])
    # succeeds: its task instance links to the manifest it published
    heavy_step(task_id="publish", job="publish", arguments=["--item", {item!r}, "--store-uri", "{store}"])
"""


@pytest.fixture(scope="module")
def failing_dag(tmp_path_factory, airflow_db):
    """A registry whose tiny-llama points at a closed port, and a DAG of two failing download steps."""
    root = tmp_path_factory.mktemp("job-failures")
    config = root / "config"
    shutil.copytree(ROOT / "include" / "config", config)
    models = yaml.safe_load((config / "models.yaml").read_text())
    for model in models["models"]:
        model["endpoint"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (config / "models.yaml").write_text(yaml.safe_dump(models))
    dags = root / "dags"
    dags.mkdir()
    item = _publishable_item(root / "work")
    store = (root / "store").as_uri()
    (dags / "job_failures.py").write_text(DAG_FILE.format(sha=SHA, out=root / "out", config=config,
                                                          item=item.to_json(), store=store))
    return dags, f"{store}/{item.prefix}/manifest.json"


def test_permanent_errors_fail_at_once_transient_ones_retry_and_publish_links_its_manifest(failing_dag):
    failing_dag, manifest_uri = failing_dag
    env = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(failing_dag), "LLMOPS_RUNTIME": "local"}
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "test", "job_failures"], env=env, capture_output=True, text=True,
                          timeout=600)
    log = done.stdout + done.stderr
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (session.query(DagRun).filter(DagRun.dag_id == "job_failures")
               .order_by(DagRun.start_date.desc()).first())
        tries = {ti.task_id: (str(ti.state), ti.try_number)
                 for ti in session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id,
                                                              TaskInstance.dag_id == "job_failures")}
        link = (session.query(XComModel).filter(XComModel.run_id == run.run_id, XComModel.task_id == "publish",
                                                XComModel.key == "_link_manifest_uri").one_or_none())
    assert tries["publish"] == ("success", 1), log[-5000:]
    assert link is not None and link.value == manifest_uri  # the "Manifest" button of the task
    assert tries["unknown_model"] == ("failed", 1), log[-5000:]
    assert tries["mirror_down"] == ("failed", 2), log[-5000:]
    assert "permanent error, not retried" in log and "has no model named 'no-such-model'" in log
    assert "transient error, will be retried" in log


def test_a_local_job_sees_only_the_secrets_its_step_declares(monkeypatch):
    """Real doctor job; it lists the names (never values) of every secret-like variable it can see."""
    monkeypatch.setenv("AIRFLOW_CONN_HUGGINGFACE_TEST", '{"conn_type": "generic", "password": "hf_from_conn"}')
    monkeypatch.setenv("AIRFLOW_CONN_SOMETHING_ELSE", '{"conn_type": "generic", "password": "other"}')
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow:pw@db/airflow")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ambient-aws-secret")
    monkeypatch.setenv("HF_TOKEN", "ambient-hf-token")
    monkeypatch.setenv("VENDOR_API_TOKEN", "ambient")
    op = heavy_step(task_id="doctor", job="doctor", runtime="local",
                    secret_env={"HF_TOKEN": "huggingface_test.password"})
    result = op.execute(context={})
    assert result["credentials"] == ["HF_TOKEN"]


def _publishable_item(work_root: Path):
    """A checkpoint the publish job accepts: quantize metadata and a (skipped) validation record."""
    registry = load_registry()
    spec = ModelSpec(name="tiny-llama", repo_id="llmops-demo/tiny-llama", max_model_len=512,
                     validation={"golden_prompts": [{"prompt": "hello"}], "min_agreement": 0.5},
                     targets=[{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["h20"]}])
    (item,) = expand_targets([spec], {spec.name: SHA}, registry.gpu_profiles, runtime="local",
                             work_root=str(work_root)).items
    checkpoint = Path(item.checkpoint_dir)
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(os.urandom(4096))
    (checkpoint / "llmops_quantize.json").write_text(json.dumps({"scheme": "W8A8", "params": {}, "tool_versions": {}}))
    Path(item.validation_file).write_text(json.dumps({"status": "skipped", "reason": "a test checkpoint"}))
    return item


def _artefacts_connection(s3, secret: str) -> str:
    return json.dumps({"conn_type": "aws", "login": s3.access_key, "password": secret,
                       "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region}})


def test_publish_gets_the_store_credentials_from_the_connection(tmp_path, monkeypatch):
    """SeaweedFS with an S3 identity config refuses every key but its own: a wrong secret in the Connection
    fails the real publish job with a clear message, the right one publishes."""
    with seaweed_server(tmp_path / "s3", enforce_credentials=True) as s3:
        make_bucket(s3, "artefacts")
        store_uri = "s3://artefacts/llmops"
        monkeypatch.setenv("LLMOPS_STORE_URI", store_uri)
        from llmops.settings import get_settings

        get_settings.cache_clear()
        item = _publishable_item(tmp_path / "work")
        arguments = ["--item", item.to_json(), "--store-uri", store_uri]
        op = heavy_step(task_id="publish", job="publish", arguments=arguments, runtime="local")
        assert op.store_access

        monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_ARTEFACTS", _artefacts_connection(s3, "not-the-secret"))
        with pytest.raises(AirflowFailException, match="the store refused the credentials") as failed:
            op.execute(context={})  # permanent: no retry would fix a wrong key
        assert "not-the-secret" not in str(failed.value)
        listed = s3.client().list_objects_v2(Bucket="artefacts").get("KeyCount", 0)
        assert listed == 0

        monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_ARTEFACTS", _artefacts_connection(s3, s3.secret_key))
        result = op.execute(context={})
        assert result["manifest_uri"] == f"{store_uri}/{item.prefix}/manifest.json"
        body = s3.client().get_object(Bucket="artefacts", Key=f"llmops/{item.prefix}/manifest.json")["Body"].read()
        assert json.loads(body)["source_sha"] == SHA
    get_settings.cache_clear()



def test_kb_reindex_reads_an_s3_source_with_the_declared_connection_only(tmp_path, monkeypatch):
    """The kb_reindex DAG's own step declaration, the real job (dry run: lists the source and plans, embeds
    nothing) against a SeaweedFS that accepts only its own key: ambient AWS_* variables are not inherited,
    the `llmops_kb_sources` Connection's keys are."""
    from airflow.models import DagBag

    reindex = DagBag(dag_folder=str(ROOT / "dags" / "kb_reindex.py")).dags["kb_reindex"].get_task("reindex")
    secret_env = reindex.partial_kwargs["secret_env"]
    with seaweed_server(tmp_path / "s3", enforce_credentials=True) as s3:
        make_bucket(s3, "kbdocs")
        sample = ROOT / "include" / "sample_kb" / "product-docs"
        for path in sorted(p for p in sample.rglob("*") if p.is_file()):
            s3.client().upload_file(str(path), "kbdocs", f"docs/{path.relative_to(sample).as_posix()}")
        config = tmp_path / "config"
        shutil.copytree(ROOT / "include" / "config", config)
        registry = yaml.safe_load((config / "knowledge_bases.yaml").read_text())
        registry["knowledge_bases"][0]["source"] = {"kind": "s3", "uri": "s3://kbdocs/docs"}
        (config / "knowledge_bases.yaml").write_text(yaml.safe_dump(registry))
        name = registry["knowledge_bases"][0]["name"]
        arguments = ["--kb", name, "--mode", "incremental", "--dry-run", "--config-dir", str(config),
                     "--milvus-uri", str(tmp_path / "kb.db")]
        op = heavy_step(task_id="reindex", job="kb_reindex", arguments=arguments, secret_env=secret_env,
                        runtime="local", env_vars={"LLMOPS_HOME": str(tmp_path / "home")})
        # the right keys in the worker's environment do not reach the job
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
        with pytest.raises(JobFailed, match="Unable to locate credentials"):
            op.execute(context={})
        monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_KB_SOURCES", _artefacts_connection(s3, s3.secret_key))
        result = op.execute(context={})
    assert result["documents"] == 12 and result["dry_run"] is True
