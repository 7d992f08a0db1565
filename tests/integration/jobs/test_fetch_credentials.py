"""The vLLM pods' fetch init container (the real `python -m llmops.jobs.fetch` in the worker environment) against
a SeaweedFS that accepts only its own key: wrong keys, or none, end it with one line naming the fix and the
permanent exit status, no traceback, no secret in the output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from llmops.jobs._cli import EXIT_PERMANENT
from support.seaweed import make_bucket, seaweed_server

ROOT = Path(__file__).resolve().parents[3]
WORKER_PYTHON = Path(os.environ.get("LLMOPS_HOME", ROOT / ".llmops")) / "venvs" / "worker" / "bin" / "python"
MANIFEST = "s3://artefacts/llmops/models/m/" + "a" * 40 + "/vllm-r/manifest.json"


def _fetch(tmp_path, **store_env) -> subprocess.CompletedProcess:
    # what the pod has: no ambient AWS files or instance metadata, only the variables of the optional Secret
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "include"),
           "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
           "AWS_EC2_METADATA_DISABLED": "true", **store_env}
    return subprocess.run([str(WORKER_PYTHON), "-m", "llmops.jobs.fetch", "--manifest-uri", MANIFEST, "--dest",
                           str(tmp_path / "model")], capture_output=True, text=True, env=env, timeout=300)


def test_fetch_with_wrong_or_no_keys_fails_at_once_in_one_line(tmp_path):
    if not WORKER_PYTHON.exists():
        pytest.fail(f"{WORKER_PYTHON} is missing; fix: scripts/envs.sh worker")
    with seaweed_server(tmp_path / "s3", enforce_credentials=True) as s3:
        make_bucket(s3, "artefacts")
        endpoint = {"AWS_ENDPOINT_URL": s3.endpoint_url, "AWS_DEFAULT_REGION": s3.region}
        wrong = _fetch(tmp_path, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY="not-the-secret", **endpoint)
        missing = _fetch(tmp_path, **endpoint)
    for done, says in ((wrong, "the store refused the credentials"), (missing, "no credentials for the store")):
        output = done.stdout + done.stderr
        assert done.returncode == EXIT_PERMANENT, output
        assert says in output and "llmops-llmops-artefacts" in output and "permanent error" in output, output
        assert "Traceback" not in output and "not-the-secret" not in output
        assert len([line for line in output.splitlines() if line.startswith("ERROR")]) == 1, output
