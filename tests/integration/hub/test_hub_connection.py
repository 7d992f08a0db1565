"""The `huggingface_default` Connection's host is the mirror when neither the model's `endpoint` nor
HF_ENDPOINT says otherwise: the resolve task and the plan's download step (the real job) both use it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from llmops.hub import HubError
from llmops.settings import get_settings
from llmops_airflow.refresh_tasks import plan_run, resolve_model
from llmops_airflow.steps import heavy_step
from support._proc import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def via_connection(tmp_path, mirror, monkeypatch):
    """A registry whose model names no endpoint, HF_ENDPOINT unset, the Connection's host = the olah mirror."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "include" / "config", config)
    models = yaml.safe_load((config / "models.yaml").read_text())
    (model,) = models["models"]
    model.pop("endpoint", None)
    model.update(repo_id="llmops-test/tiny", revision="main", allow_patterns=["*.json", "*.safetensors"])
    (config / "models.yaml").write_text(yaml.safe_dump(models))
    monkeypatch.setenv("LLMOPS_CONFIG_DIR", str(config))
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOPS_STORE_URI", (tmp_path / "store").as_uri())
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_HUGGINGFACE_DEFAULT",
                       json.dumps({"conn_type": "generic", "host": mirror.endpoint}))
    get_settings.cache_clear()
    yield model["name"]
    get_settings.cache_clear()


def test_resolve_and_download_use_the_connection_host(via_connection, mirror, tmp_path):
    resolved = resolve_model(via_connection)
    assert resolved["sha"] == mirror.shas["tiny@main"]
    planned = plan_run([via_connection], [resolved], recipes=None, force=False, run_id="manual__test")
    assert planned["items"] and all(i["download"][-2:] == ["--mirror", mirror.endpoint] for i in planned["items"])
    item = planned["items"][0]  # one item per recipe; each downloads the same snapshot
    result = heavy_step(task_id="download", job="download", arguments=item["download"],
                        runtime="local").execute(context={})
    assert result["endpoint"] == mirror.endpoint and result["sha"] == resolved["sha"]
    assert (Path(result["path"]) / "model.safetensors").read_bytes() == mirror.weights[f"tiny@{resolved['sha']}"]


def test_hf_endpoint_still_wins_over_the_connection(via_connection, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    with pytest.raises(HubError, match=dead):
        resolve_model(via_connection)
