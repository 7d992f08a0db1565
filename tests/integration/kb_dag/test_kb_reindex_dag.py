"""kb_reindex end to end through `airflow dags test`: a run with one good and one broken knowledge base.

The good one is an S3 prefix on a real SeaweedFS that accepts only one key pair, which reaches the job
only through the knowledge base's own `source.connection_id` Connection; it is really indexed (worker
environment, packaged MiniLM, Milvus Lite) and its Asset gets an event. The broken one (its source
directory is missing) fails; the report prints both outcomes and the run ends failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def write_registry(root: Path, knowledge_bases: list[dict]) -> Path:
    """A copy of include/config whose knowledge_bases.yaml holds `knowledge_bases` (over product-docs)."""
    config = root / "config"
    shutil.copytree(ROOT / "include" / "config", config)
    base = yaml.safe_load((config / "knowledge_bases.yaml").read_text())["knowledge_bases"][0]
    entries = []
    for changes in knowledge_bases:
        entry = json.loads(json.dumps(base))
        for key, value in changes.items():
            if isinstance(value, dict):
                entry[key].update(value)
            else:
                entry[key] = value
        entries.append(entry)
    (config / "knowledge_bases.yaml").write_text(yaml.safe_dump({"knowledge_bases": entries}, sort_keys=False))
    return config


def upload_sample(server, bucket: str, prefix: str) -> None:
    from support.seaweed import make_bucket

    make_bucket(server, bucket)
    client = server.client()
    sample = ROOT / "include" / "sample_kb" / "product-docs"
    for path in sorted(sample.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(sample).as_posix()}")


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory, airflow_db, venvs):
    from support.seaweed import seaweed_server

    root = tmp_path_factory.mktemp("kb-dag")
    with seaweed_server(root / "seaweed", enforce_credentials=True) as s3:
        upload_sample(s3, "kbdocs", "product")
        config = write_registry(root, [
            {"name": "good-docs", "alias": "good_docs", "milvus": {"uri": str(root / "milvus.db")},
             "source": {"kind": "s3", "uri": "s3://kbdocs/product", "connection_id": "kb_good_docs"},
             "schedule": "0 3 * * *"},
            {"name": "broken-docs", "alias": "broken_docs", "source": {"uri": str(root / "missing")},
             "milvus": {"uri": str(root / "milvus.db")}, "schedule": None},
        ])
        env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "OSS_"))}
        env.update({
            "LLMOPS_CONFIG_DIR": str(config), "LLMOPS_HOME": str(root / "home"), "LLMOPS_RUNTIME": "local",
            "LLMOPS_WORKER_PYTHON": str(venvs / "worker" / "bin" / "python"),
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("include", "plugins", "dags")),
            # the only way the S3 keys and endpoint reach the job: the knowledge base's own Connection
            "AIRFLOW_CONN_KB_GOOD_DOCS": json.dumps({
                "conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
                "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region}})})
        yield env, dags_test(env, root / "run.log", "kb_reindex", {"mode": "incremental"}), s3.secret_key


def dags_test(env: dict, log_path: Path, dag_id: str, conf: dict | None = None) -> str:
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "test", dag_id, "-c", json.dumps(conf or {})],
                          env=env, capture_output=True, text=True, timeout=900)
    log_path.write_text(done.stdout + done.stderr)
    return done.stdout + done.stderr


def asset_events(name: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [extra for (extra,) in session.query(AssetEvent.extra)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id).filter(AssetModel.name == name)
                .order_by(AssetEvent.id)]


def test_a_failed_item_fails_the_run_after_the_report_printed_every_outcome(failed_run):
    _, log, _ = failed_run
    assert "DagRun Finished: dag_id=kb_reindex" in log and "state=failed" in log, log[-5000:]
    row = next(line for line in log.splitlines() if line.startswith("good-docs "))
    assert row.split()[1:4] == ["full", "good_docs_v1", "12"], row  # the good knowledge base was indexed and reported
    assert "broken-docs          FAILED       the re-index failed: see the log of reindex[broken-docs]" in log
    assert "kb_reindex failed for broken-docs" in log
    report_failed = log.index("kb_reindex failed for broken-docs")
    assert log.index("broken-docs          FAILED") < report_failed  # printed before the task fails


def test_an_s3_source_reads_its_keys_from_its_own_connection(failed_run):
    """SeaweedFS refuses any other key pair (and the job has no other): listing, hashing and loading the 12
    documents prove the Connection's login/password and extra endpoint_url reached the job; the secret never
    reaches the log."""
    _, log, secret = failed_run
    assert "good-docs: 12 documents listed in s3://kbdocs/product" in log, log[-5000:]
    assert secret not in log


def test_only_the_good_knowledge_base_asset_gets_an_event(failed_run):
    _, log, _ = failed_run
    assert asset_events("knowledge_base__broken-docs") == []
    good = [e for e in asset_events("knowledge_base__good-docs") if e["run_id"].startswith("manual__")]
    assert good, log[-3000:]
    assert good[-1]["collection"] == "good_docs_v1" and good[-1]["mode"] == "full" and good[-1]["rows"] > 0


def test_the_knowledge_base_s_own_dag_updates_its_asset(failed_run, tmp_path):
    env, _, _ = failed_run
    before = len(asset_events("knowledge_base__good-docs"))
    log = dags_test(env, tmp_path / "own.log", "kb_reindex__good-docs")
    assert "DagRun Finished: dag_id=kb_reindex__good-docs" in log and "state=success" in log, log[-5000:]
    events = asset_events("knowledge_base__good-docs")
    assert len(events) == before + 1 and events[-1]["mode"] == "incremental", log[-3000:]


