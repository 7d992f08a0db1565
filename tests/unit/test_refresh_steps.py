"""How a planned work item becomes its own chain of heavy steps (plugins/llmops_airflow/refresh_tasks.py): the entry of
the item's mapped task group, and on runtime kubernetes the pods its steps become for the GPU profile the
item was planned for, with the image each step needs and the token of the model's own Connection."""

from __future__ import annotations

import json
from types import SimpleNamespace

import kubernetes_validate
import pytest
from airflow.sdk import DAG, task_group
from kubernetes.client import ApiClient

from llmops.config import load_registry
from llmops.config.schema import ModelSpec
from llmops.jobs._cli import parse_item
from llmops.refresh.plan import WorkItem, expand_targets
from llmops.settings import get_settings
from llmops_airflow.refresh_tasks import ITEM_FIELDS, item_chain, item_entry
from support.ack import KUBERNETES_VERSION

SHA = "0123456789abcdef0123456789abcdef01234567"
RUN = ["--dag-id", "model_refresh", "--run-id", "r", "--task-id", "item.publish"]


def items(runtime: str) -> tuple[dict[str, WorkItem], dict]:
    registry = load_registry()
    spec = ModelSpec(name="m", repo_id="org/m", targets=[
        {"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]},
        {"recipe": "modelopt-fp8", "gpu_profiles": ["a10", "l20", "h20"]}],
        validation={"golden_prompts": [{"prompt": "Hello"}]})
    plan = expand_targets([spec], {"m": SHA}, registry.gpu_profiles, runtime=runtime, work_root="/models/refresh")
    return {item.recipe: item for item in plan.items}, registry.gpu_profiles


def entry_for(recipe: str, runtime: str, conn: str | None = "hf_team_b") -> tuple[WorkItem, dict]:
    planned, profiles = items(runtime)
    entry = item_entry(planned[recipe], hf_connection_id=conn, run=RUN, runtime=runtime, profiles=profiles)
    return planned[recipe], json.loads(json.dumps(entry))  # the entry as it comes back from XCom


def test_on_the_local_runtime_an_entry_carries_each_steps_arguments_and_the_models_connection():
    item, entry = entry_for("llmcompressor-w8a8", "local")
    assert set(entry) == set(ITEM_FIELDS)
    assert entry["key"] == "m/llmcompressor-w8a8"
    assert entry["download"] == ["--model", "m", "--revision-sha", SHA, "--out", item.source_dir]
    for step in ("quantize", "validate"):
        flag, payload = entry[step]
        assert flag == "--item" and parse_item(payload) == item
    assert entry["publish"][2:] == RUN
    assert entry["hf_token"] == "hf_team_b.password"
    assert entry["node_selector"] is None and entry["gpu_pod"] is None  # pods are kubernetes-only


def rendered_pods(entry: dict) -> dict[str, dict]:
    """What the scheduler does with one item: the group's operators, their mapped arguments resolved, as pods."""
    with DAG("refresh_steps_test", schedule=None) as dag:
        @task_group(group_id="item")
        def item(key, download, quantize, validate, publish, hf_token, quantize_image, validate_image,
                 node_selector, gpu_resources, download_pod, gpu_pod):
            item_chain(**locals(), runtime="kubernetes")

        item.expand_kwargs([entry])  # a literal list resolves like the plan's XCom does, by map index
    pods = {}
    context = {"ti": SimpleNamespace(map_index=0)}
    for task in dag.tasks:
        task.render_template_fields(context)
        pod = task.build_pod_request_obj(context=None, dry_run=True)
        pods[task.task_id.split(".")[-1]] = ApiClient().sanitize_for_serialization(pod)
    return pods


@pytest.mark.parametrize(("recipe", "node"), [("modelopt-fp8", "NVIDIA-L20"), ("llmcompressor-w8a8", "NVIDIA-A10")])
def test_on_kubernetes_each_step_becomes_a_valid_pod_gpu_steps_on_the_items_profile(recipe, node):
    item, entry = entry_for(recipe, "kubernetes")
    pods = rendered_pods(entry)
    assert set(pods) == {"download", "quantize", "validate", "publish"}
    settings = get_settings()
    images = {"download": settings.worker_image, "quantize": settings.worker_image, "publish": settings.worker_image,
              "validate": settings.trtllm_image if recipe == "modelopt-fp8" else settings.serving_image}
    for step, pod in pods.items():
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
        container = pod["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", f"llmops.jobs.{step}"]
        assert container["image"] == images[step], step
        gpu = step in ("quantize", "validate")
        assert pod["spec"].get("nodeSelector", {}).get("aliyun.accelerator/nvidia_name") == (node if gpu else None)
        assert ("nvidia.com/gpu" in container["resources"].get("limits", {})) == gpu, step
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["spec"].get("tolerations") or []) == gpu, step
        assert any(m["mountPath"] == "/models" for m in container["volumeMounts"])  # the checkpoint's volume
    assert parse_item(pods["quantize"]["spec"]["containers"][0]["args"][1]) == item


def test_on_kubernetes_the_download_reads_the_token_from_the_secret_of_the_models_own_connection():
    _, entry = entry_for("llmcompressor-w8a8", "kubernetes", conn="hf_team_b")
    env = {e["name"]: e for e in rendered_pods(entry)["download"]["spec"]["containers"][0].get("env", [])}
    ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"], ref["optional"]) == ("llmops-hf-team-b", "password", True)
    assert "value" not in env["HF_TOKEN"]  # never the token itself in the pod spec
    _, public = entry_for("llmcompressor-w8a8", "kubernetes", conn=None)
    env = rendered_pods(public)["download"]["spec"]["containers"][0].get("env", [])
    assert "HF_TOKEN" not in {e["name"] for e in env}
