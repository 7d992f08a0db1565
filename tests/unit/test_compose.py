"""docker-compose.yaml: the services a developer needs, the project mounted into every Airflow service.

`.ci/run` also runs `docker-compose config` (Debian's docker-compose parses without an engine); this
test checks what that cannot: that the file says what the README promises.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-init"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services(compose):
    assert AIRFLOW_SERVICES | {"postgres", "etcd", "minio", "milvus", "minio-buckets"} <= set(compose["services"])


def test_project_mounted_and_importable_in_every_airflow_service(compose):
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        mounts = {m.split(":")[1] for m in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= mounts, name
        assert "/opt/airflow/include" in service["environment"]["PYTHONPATH"], name


def test_connections_preset(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    for conn in ("LLMOPS_ARTEFACTS", "MILVUS_DEFAULT", "HUGGINGFACE_DEFAULT", "LLMOPS_ALERTS"):
        assert f"AIRFLOW_CONN_{conn}" in env


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_config_accepts_the_file():
    subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "--quiet"], check=True)
