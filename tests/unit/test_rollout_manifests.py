"""Rendered vLLM objects pass kubernetes-validate (built-in kinds) and carry what the rollout relies on."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest

from llmops.config import load_registry
from llmops.serving.manifests import (
    ANNOTATION_PREVIOUS_VERSION,
    ANNOTATION_VERSION,
    VersionRef,
    render_all,
    render_httproute,
    replica_split,
)

K8S_VERSION = "1.31"
# kubernetes-validate bundles only built-in kinds. For the two CRDs we check the fields the Gateway API
# (v1.2 HTTPRoute) and Prometheus Operator (ServiceMonitor) CRDs declare required, plus weight ranges.
CRD_SCHEMAS = {
    "HTTPRoute": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "gateway.networking.k8s.io/v1"}, "spec": {
            "type": "object", "required": ["parentRefs", "rules"],
            "properties": {"parentRefs": {"type": "array", "minItems": 1, "items": {"required": ["name"]}},
                           "rules": {"type": "array", "items": {"properties": {"backendRefs": {
                               "type": "array", "maxItems": 16, "items": {
                                   "required": ["name", "port"],
                                   "properties": {"weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
                                                  "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}}}}}}}}},
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "spec": {
            "type": "object", "required": ["selector", "endpoints"],
            "properties": {"endpoints": {"type": "array", "minItems": 1,
                                         "items": {"properties": {"port": {"type": "string"},
                                                                  "path": {"type": "string"}}}}}}}},
}

STABLE = VersionRef("oss://models/tiny-llama/aaa/vllm-llmcompressor-w8a8/manifest.json", "tiny-llama", 1, 512)
CANARY = VersionRef("oss://models/tiny-llama/bbb/vllm-llmcompressor-w8a8/manifest.json", "tiny-llama", 1, 512)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def validate(obj):
    if obj["kind"] in CRD_SCHEMAS:
        jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("profile", ["a10", "a10-shared", "h20"])
@pytest.mark.parametrize("strategy", ["gateway-httproute", "replica-ratio"])
def test_every_rendered_object_validates(registry, profile, strategy):
    deployment = registry.deployment("tiny-llama-chat").model_copy(
        update={"traffic": registry.deployment("tiny-llama-chat").traffic.model_copy(update={"strategy": strategy})})
    objects = render_all(deployment, registry.gpu_profile(profile), stable=STABLE, canary=CANARY, canary_percent=10,
                         rollout_run="manual__1")
    kinds = sorted(o["kind"] for o in objects)
    expected = ["Deployment", "Deployment", "HorizontalPodAutoscaler", "Service", "Service", "Service",
                "ServiceMonitor"] + (["HTTPRoute"] if strategy == "gateway-httproute" else [])
    assert kinds == sorted(expected)
    for obj in objects:
        validate(obj)


def test_invalid_objects_are_caught(registry):
    """The validation in this file can fail: a broken Deployment and a bad weight are rejected."""
    objects = render_all(registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10"), stable=STABLE,
                         canary=CANARY, canary_percent=10)
    broken = objects[0] | {"spec": {**objects[0]["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)
    route = render_httproute(registry.deployment("tiny-llama-chat"), 10)
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    with pytest.raises(jsonschema.ValidationError):
        validate(route)


def test_pods_fetch_and_verify_then_serve_with_a_generating_readiness_probe(registry):
    deployment, profile = registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10")
    stable, canary = render_all(deployment, profile, stable=STABLE, canary=CANARY, canary_percent=10)[:2]
    pod = canary["spec"]["template"]["spec"]
    assert "llmops.jobs.fetch" in pod["initContainers"][0]["command"]
    assert CANARY.manifest_uri in pod["initContainers"][0]["command"]
    probe = " ".join(pod["containers"][0]["readinessProbe"]["exec"]["command"])
    assert "/v1/completions" in probe and "max_tokens" in probe
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1", "cpu": deployment.resources.cpu_limit,
                                   "memory": deployment.resources.memory_limit}
    assert resources["requests"] == {"nvidia.com/gpu": "1", "cpu": deployment.resources.cpu,
                                     "memory": deployment.resources.memory}
    assert pod["nodeSelector"] == {"aliyun.accelerator/nvidia_name": "NVIDIA-A10"}
    assert canary["metadata"]["annotations"][ANNOTATION_VERSION] == CANARY.manifest_uri
    assert canary["metadata"]["annotations"][ANNOTATION_PREVIOUS_VERSION] == STABLE.manifest_uri
    assert stable["metadata"]["annotations"][ANNOTATION_VERSION] == STABLE.manifest_uri
    shared = render_all(deployment, registry.gpu_profile("a10-shared"), stable=None, canary=CANARY, canary_percent=100)
    assert shared[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["aliyun.com/gpu-mem"] == "12"


def test_hpa_is_frozen_during_a_canary_only(registry):
    deployment, profile = registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10")
    during = {o["kind"]: o for o in render_all(deployment, profile, stable=STABLE, canary=CANARY, canary_percent=50)}
    after = {o["kind"]: o for o in render_all(deployment, profile, stable=CANARY, canary=None, canary_percent=0)}
    hpa = during["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] == hpa["maxReplicas"] == deployment.replicas
    assert after["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == deployment.max_replicas
    weights = [b["weight"] for b in during["HTTPRoute"]["spec"]["rules"][0]["backendRefs"]]
    assert weights == [50, 50]
    assert [b["weight"] for b in after["HTTPRoute"]["spec"]["rules"][0]["backendRefs"]] == [100, 0]


@pytest.mark.parametrize(("total", "percent", "expected"), [
    (3, 10, (2, 1)), (3, 50, (1, 2)), (3, 100, (0, 3)), (3, 0, (3, 0)), (2, 90, (1, 1)), (10, 30, (7, 3))])
def test_replica_split_keeps_both_tracks_alive_until_100(total, percent, expected):
    assert replica_split(total, percent) == expected
