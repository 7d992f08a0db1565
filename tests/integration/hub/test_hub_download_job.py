"""`python -m llmops.jobs.download` in the worker environment (huggingface_hub 1.x) against olah."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.jobs._cli import EXIT_PERMANENT, parse_result

ROOT = Path(__file__).resolve().parents[3]
WORKER_PYTHON = Path(os.environ.get("LLMOPS_HOME", ROOT / ".llmops")) / "venvs" / "worker" / "bin" / "python"
TOKEN = "hf_llmops_job_secret_do_not_print"


GOLDEN = {"golden_prompts": [{"prompt": "Hello"}]}


@pytest.fixture
def config_dir(tmp_path, mirror) -> Path:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "include" / "config", config)
    models = {"models": [
        {"name": "tiny-mirror", "repo_id": "llmops-test/tiny", "revision": "main", "endpoint": mirror.endpoint,
         "allow_patterns": ["*.json", "*.safetensors"],
         "targets": [{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}], "validation": GOLDEN},
        {"name": "tampered", "repo_id": "llmops-test/tampered", "endpoint": mirror.endpoint,
         "targets": [{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}], "validation": GOLDEN},
    ]}
    (config / "models.yaml").write_text(yaml.safe_dump(models))
    deployments = yaml.safe_load((config / "deployments.yaml").read_text()) or {}
    for deployment in deployments.get("deployments", []):
        deployment["model"] = "tiny-mirror"  # keep the cross-file check valid with our models.yaml
    (config / "deployments.yaml").write_text(yaml.safe_dump(deployments))
    return config


def run_job(*args: str) -> subprocess.CompletedProcess:
    if not WORKER_PYTHON.exists():
        pytest.fail(f"{WORKER_PYTHON} is missing; fix: scripts/envs.sh worker")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include"), "HF_TOKEN": TOKEN}
    return subprocess.run([str(WORKER_PYTHON), "-m", "llmops.jobs.download", *args], capture_output=True,
                          text=True, env=env, timeout=180)


def test_job_downloads_and_reports(mirror, config_dir, tmp_path):
    sha = mirror.shas["tiny@main"]
    done = run_job("--model", "tiny-mirror", "--revision-sha", sha, "--out", str(tmp_path / "src"),
                   "--config-dir", str(config_dir))
    assert done.returncode == 0, done.stderr
    result = parse_result(done.stdout)
    assert result["sha"] == sha and result["files"] == 3 and result["path"] == str(tmp_path / "src")
    assert (tmp_path / "src" / "model.safetensors").read_bytes() == mirror.weights[f"tiny@{sha}"]
    assert TOKEN not in done.stdout + done.stderr


def test_job_fails_on_a_tampered_blob_naming_the_file(mirror, config_dir, tmp_path):
    done = run_job("--model", "tampered", "--revision-sha", mirror.shas["tampered@main"], "--out",
                   str(tmp_path / "src"), "--config-dir", str(config_dir))
    assert done.returncode == EXIT_PERMANENT  # a checksum mismatch is not retried
    assert "model.safetensors" in done.stderr and "sha256" in done.stderr and "ERROR" in done.stderr
    assert parse_result(done.stdout) is None
    assert TOKEN not in done.stdout + done.stderr


def test_two_recipes_downloading_one_commit_at_once_share_one_download(mirror, config_dir, tmp_path):
    """Two recipes of one model start their download of the same commit into the same folder at the same
    moment (real processes against olah): both succeed, and only one of them fetches; the other waits for
    it, then reuses the verified snapshot."""
    sha = mirror.shas["tiny@main"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include"), "HF_TOKEN": TOKEN}
    args = ["--model", "tiny-mirror", "--revision-sha", sha, "--out", str(tmp_path / "src"), "--config-dir",
            str(config_dir)]
    twins = [subprocess.Popen([str(WORKER_PYTHON), "-m", "llmops.jobs.download", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [twin.communicate(timeout=300) for twin in twins]
    assert [twin.returncode for twin in twins] == [0, 0], outputs
    logs = [err for _, err in outputs]
    assert sum("downloading 3 files" in log for log in logs) == 1, logs
    assert sum("already downloaded and verified" in log for log in logs) == 1, logs
    assert all(parse_result(out)["files"] == 3 for out, _ in outputs)
    assert (tmp_path / "src" / "model.safetensors").read_bytes() == mirror.weights[f"tiny@{sha}"]


def test_a_file_missing_after_the_download_is_retried_not_permanent():
    from llmops.errors import is_permanent
    from llmops.hub.errors import DownloadIncompleteError

    assert not is_permanent(DownloadIncompleteError("model.safetensors is missing", fix="retried"))
