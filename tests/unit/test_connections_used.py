"""What each Connection's fields are used for (the README's Connections table), where no server is needed:
the Milvus URI precedence of the kb job and the steps that declare the Connection fields they read."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.config import load_file
from llmops.jobs.kb_reindex import milvus_uri
from llmops.settings import get_settings
from llmops_airflow.hooks.huggingface import connection_url

ROOT = Path(__file__).resolve().parents[2]


def _kb(**milvus):
    registry = load_file(ROOT / "include" / "config" / "knowledge_bases.yaml")
    data = registry.knowledge_bases[0].model_dump(exclude_unset=True)
    data["milvus"] = {k: v for k, v in data["milvus"].items() if k != "uri"} | milvus
    return type(registry.knowledge_bases[0]).model_validate(data)


def test_milvus_uri_precedence(monkeypatch):
    monkeypatch.setenv("MILVUS_URI", "http://milvus.example:19530")  # the milvus_default Connection's host
    assert milvus_uri(_kb()) == "http://milvus.example:19530"
    assert milvus_uri(_kb(uri="kb.db")) == "kb.db"  # the knowledge base's own uri wins
    assert milvus_uri(_kb(uri="kb.db"), "http://override:1") == "http://override:1"  # --milvus-uri wins over all
    monkeypatch.setenv("MILVUS_URI", "milvus:19530")
    get_settings.cache_clear()  # a job reads its environment once; these are three jobs' environments
    assert milvus_uri(_kb()) == "http://milvus:19530"
    monkeypatch.delenv("MILVUS_URI")
    get_settings.cache_clear()
    assert milvus_uri(_kb()) == "milvus.db"  # no Connection: the default Milvus Lite file


@pytest.mark.parametrize(("host", "port", "url"), [("https://hf-mirror.com/", None, "https://hf-mirror.com"),
                                                   ("olah", 8090, "https://olah:8090"), ("", None, None)])
def test_a_connection_host_becomes_a_url(host, port, url):
    assert connection_url(host, port) == url


def test_the_dags_declare_the_connection_fields_their_jobs_read():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    # each knowledge base's job reads its own Connections (`select` maps them per item, see test_kb_dag)
    assert "secret_env" not in bag.dags["kb_reindex"].get_task("reindex").partial_kwargs
    refresh = bag.dags["model_refresh"]
    # each item's download reads the token of its model's own Connection (the group's mapped `hf_token`,
    # "<hf_connection_id>.password", see test_refresh_steps)
    token = refresh.get_task("item.download").secret_env["HF_TOKEN"]
    assert type(token).__name__ == "MappedArgument" and token._key == "hf_token"
    assert refresh.get_task("item.publish").store_access is True


def test_every_pod_that_opens_the_store_can_read_its_credentials_secret():
    from llmops.config import load_registry
    from llmops.serving.manifests import VersionRef, render_all
    from llmops_airflow.steps import heavy_step

    secret = {"secretRef": {"name": "llmops-llmops-artefacts", "optional": True}}
    registry = load_registry()
    deployment = registry.deployment("tiny-llama-chat")
    canary = VersionRef("s3://b/models/tiny-llama/" + "a" * 40 + "/vllm-x/manifest.json", deployment.model)
    vllm = render_all(deployment, registry.gpu_profile(deployment.gpu_profile), stable=None, canary=canary,
                      canary_percent=10)[0]
    (fetch,) = vllm["spec"]["template"]["spec"]["initContainers"]
    assert fetch["envFrom"] == [secret]
    publish = heavy_step(task_id="publish", job="publish", runtime="kubernetes")
    assert [e.to_dict() for e in publish.env_from] == [{"config_map_ref": None, "prefix": None,
                                                          "secret_ref": {"name": "llmops-llmops-artefacts",
                                                                         "optional": True}}]


def test_only_the_publish_step_gets_the_signing_key():
    """The private key of Connection `llmops_signing` reaches the publish step's environment (a Kubernetes Secret in
    pods), no other step: every other step's secret_env is checked for it."""
    from airflow.models import DagBag

    refresh = DagBag(dag_folder=str(ROOT / "dags")).dags["model_refresh"]
    assert refresh.get_task("item.publish").secret_env == {"LLMOPS_SIGNING_PRIVATE_KEY": "llmops_signing.password"}
    for task in refresh.tasks:
        if task.task_id != "item.publish":
            declared = getattr(task, "secret_env", None) or getattr(task, "partial_kwargs", {}).get("secret_env") or {}
            assert "LLMOPS_SIGNING_PRIVATE_KEY" not in (declared if isinstance(declared, dict) else {}), task.task_id
