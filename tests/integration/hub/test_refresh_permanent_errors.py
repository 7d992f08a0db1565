"""model_refresh on the local runtime (`airflow dags test`) against the session's olah mirror, with two models
that fail permanently: one whose repo does not exist (its resolve task fails) and one whose mirror serves a
tampered weight file (its download step fails the checksum). Each is attempted once, not retried, the run
ends failed, and the report names each failure's step and first error line. No vLLM, no quantization."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = {"golden_prompts": [{"prompt": "Hello"}]}
TARGETS = [{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}]


def test_permanent_errors_are_attempted_once_and_the_report_names_them(mirror, tmp_path, airflow_db, venvs):
    config = tmp_path / "config"
    shutil.copytree(ROOT / "include" / "config", config)
    models = {"models": [
        {"name": "tampered", "repo_id": "llmops-test/tampered", "endpoint": mirror.endpoint, "targets": TARGETS,
         "validation": GOLDEN},
        {"name": "missing", "repo_id": "llmops-test/no-such-repo", "endpoint": mirror.endpoint, "targets": TARGETS,
         "validation": GOLDEN},
    ]}
    (config / "models.yaml").write_text(yaml.safe_dump(models))
    deployments = yaml.safe_load((config / "deployments.yaml").read_text()) or {}
    for deployment in deployments.get("deployments", []):
        deployment["model"] = "tampered"  # keep the cross-file check valid with this models.yaml
    (config / "deployments.yaml").write_text(yaml.safe_dump(deployments))
    env = {**os.environ, "LLMOPS_CONFIG_DIR": str(config), "LLMOPS_HOME": str(tmp_path / "home"),
           "LLMOPS_STORE_URI": (tmp_path / "store").as_uri(), "LLMOPS_RUNTIME": "local",
           "LLMOPS_WORKER_PYTHON": str(venvs / "worker" / "bin" / "python"),
           "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("include", "plugins", "dags"))}
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "test", "model_refresh", "-c", json.dumps({"model": "all"})],
                          env=env, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    (tmp_path / "run.log").write_text(log)

    from support.refresh_report import report_from_log, rows

    report = report_from_log(log, "model_refresh: 0 published")  # the report task's return value, whole
    assert report.splitlines()[0] == "model_refresh: 0 published, 0 skipped, 2 failed", report[:3000]
    items = rows(report)
    assert items["missing"][0] == "failed" and "resolve: repo 'llmops-test/no-such-repo' was not found" in \
        items["missing"][1], report[:3000]
    assert items["tampered/llmcompressor-w8a8"][1].startswith("download: "), report[:3000]
    assert "the mirror served different bytes" in items["tampered/llmcompressor-w8a8"][1], report[:3000]

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run_id = (session.query(TaskInstance.run_id).filter(TaskInstance.dag_id == "model_refresh")
                  .order_by(TaskInstance.start_date.desc()).first())[0]
        tis = {(ti.task_id, ti.map_index): ti for ti in session.query(TaskInstance).filter(
            TaskInstance.dag_id == "model_refresh", TaskInstance.run_id == run_id)}
    resolve = [ti for (task, _), ti in tis.items() if task == "resolve" and ti.state == "failed"]
    download = tis[("item.download", 0)]
    assert len(resolve) == 1 and resolve[0].try_number == 1, "a permanent resolve error must not be retried"
    assert (download.state, download.try_number) == ("failed", 1), "a checksum mismatch must not be retried"
    assert tis[("item.quantize", 0)].state == "upstream_failed"
    assert tis[("report", -1)].state == "failed"  # the run ends failed, after the report printed every item
    assert "XCom not found" not in log  # no misleading error lines
