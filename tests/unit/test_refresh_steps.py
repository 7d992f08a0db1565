"""How planned work items become heavy-step arguments (plugins/llmops_airflow/refresh.py): on runtime kubernetes
a pod for the GPU profile the item was planned for, with the image its step needs."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from airflow.sdk import DAG
from kubernetes.client import ApiClient

from llmops.config import load_registry
from llmops.refresh import WorkItem, expand_targets
from llmops.settings import get_settings
from llmops_airflow.refresh import step_kwargs
from llmops_airflow.steps import heavy_step_partial

SHA = "0123456789abcdef0123456789abcdef01234567"


def items(runtime: str) -> tuple[dict[str, WorkItem], dict]:
    registry = load_registry()
    from llmops.config.schema import ModelSpec

    spec = ModelSpec(name="m", repo_id="org/m", targets=[
        {"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]},
        {"recipe": "modelopt-fp8", "gpu_profiles": ["a10", "l20", "h20"]},
        {"recipe": "trtllm-engine-fp8", "gpu_profiles": ["h20"]}], validation={"golden_prompts": [{"prompt": "Hello"}]})
    plan = expand_targets([spec], {"m": SHA}, registry.gpu_profiles, runtime=runtime, work_root="/models/refresh")
    return {item.recipe: item for item in plan.items}, registry.gpu_profiles


def test_on_the_local_runtime_a_step_gets_only_its_item():
    planned, profiles = items("local")
    kwargs = step_kwargs(planned["llmcompressor-w8a8"], "quantize", runtime="local", profiles=profiles)
    assert list(kwargs) == ["arguments"]
    flag, payload = kwargs["arguments"]
    assert flag == "--item" and WorkItem.from_json(payload) == planned["llmcompressor-w8a8"]


def test_on_kubernetes_quantize_and_validate_ask_for_the_planned_profiles_gpu():
    planned, profiles = items("kubernetes")
    fp8 = planned["modelopt-fp8"]
    assert fp8.build_profile == "l20"  # the A10 cannot run FP8, so the pod goes to an L20 node
    kwargs = step_kwargs(fp8, "quantize", runtime="kubernetes", profiles=profiles)
    assert kwargs["node_selector"] == {"aliyun.accelerator/nvidia_name": "NVIDIA-L20"}
    assert kwargs["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert kwargs["container_resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "image" not in kwargs  # the worker image, from the step factory
    json.dumps(kwargs)  # travels through XCom

    validate = step_kwargs(fp8, "validate", runtime="kubernetes", profiles=profiles)
    assert validate["image"] == get_settings().trtllm_image
    assert validate["node_selector"] == kwargs["node_selector"]


def test_on_kubernetes_publish_needs_no_gpu_and_the_legacy_engine_uses_its_pinned_image():
    planned, profiles = items("kubernetes")
    publish = step_kwargs(planned["llmcompressor-w8a8"], "publish", ["--run-id", "r"], runtime="kubernetes",
                          profiles=profiles)
    assert "node_selector" not in publish and "nvidia.com/gpu" not in json.dumps(publish)
    assert publish["arguments"][-2:] == ["--run-id", "r"]
    engine = planned["trtllm-engine-fp8"]
    assert engine.artefact_recipe == "trtllm-engine-fp8-sm90"
    assert "legacy" in step_kwargs(engine, "quantize", runtime="kubernetes", profiles=profiles)["image"]


@pytest.mark.parametrize(("recipe", "step", "node"), [("modelopt-fp8", "quantize", "NVIDIA-L20"),
                                                     ("modelopt-fp8", "validate", "NVIDIA-L20"),
                                                     ("llmcompressor-w8a8", "validate", "NVIDIA-A10"),
                                                     ("llmcompressor-w8a8", "publish", None)])
def test_a_mapped_step_unmaps_into_a_valid_pod_for_the_items_gpu(recipe, step, node):
    """What the scheduler does with one `expand_kwargs` entry: partial + item kwargs -> one pod spec."""
    planned, profiles = items("kubernetes")
    entry = step_kwargs(planned[recipe], step, runtime="kubernetes", profiles=profiles)
    with DAG("refresh_steps_test", schedule=None):
        mapped = heavy_step_partial(task_id=step, job=step, runtime="kubernetes",
                                    pool="gpu" if node else "default_pool").expand_kwargs([entry], strict=False)
    operator = mapped.unmap(json.loads(json.dumps(entry)))  # the entry as it comes back from XCom
    pod = ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(context=None, dry_run=True))
    kubernetes_validate.validate(pod, "1.33", strict=True)
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", f"llmops.jobs.{step}"]
    assert WorkItem.from_json(container["args"][1]) == planned[recipe]
    assert pod["spec"].get("nodeSelector", {}).get("aliyun.accelerator/nvidia_name") == node
    assert ("nvidia.com/gpu" in container["resources"]["limits"]) == (node is not None)
    assert any(m["mountPath"] == "/models" for m in container["volumeMounts"])  # the checkpoint's volume
