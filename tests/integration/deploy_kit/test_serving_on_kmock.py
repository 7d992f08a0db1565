"""The serving objects the rollout renders, applied to kmock's Kubernetes emulator through the hook the rollout uses.

Every object `render_all` renders for the registry's deployments (stable and canary tracks, Services, the HPA,
the stable track's PodDisruptionBudget, ServiceMonitor, HTTPRoute) is created, read back and re-applied with
`VllmKubernetesHook` (create, then JSON merge patch on 409, as in the rollout). The HPA's freeze is then driven
by the rollout backend's own actions (deploy_canary, set_weights, promote, roll back): it must freeze while a
canary runs and thaw completely, through a merge patch, on both ends. Pre-flight's GPU capacity counts a
profile's spot nodes only for a deployment that opts into spot. kmock runs no controllers: nothing here
shows the HPA or scheduler acting, only the objects they would read (their rules are checked in
tests/unit/test_rollout_manifests.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmops.config import load_registry
from llmops.serving import manifests as m
from llmops.serving.kubernetes import KubernetesBackend
from llmops.serving.port import ArtefactFacts
from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

STABLE = "oss://b/models/tiny-llama/aaa/vllm-llmcompressor-w8a8/manifest.json"
CANARY = "oss://b/models/tiny-llama/bbb/vllm-llmcompressor-w8a8/manifest.json"


@pytest.fixture
def hook(kube):
    return VllmKubernetesHook("kubernetes_default")


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_every_rendered_serving_object_applies_and_reapplies(hook, registry):
    objects = []
    for deployment in registry.deployments.values():
        profile = registry.gpu_profile(deployment.gpu_profile)
        objects += m.render_all(deployment, profile, stable=m.VersionRef(STABLE, deployment.model),
                                canary=m.VersionRef(CANARY, deployment.model), canary_percent=10, rollout_run="r1")
    assert "PodDisruptionBudget" in {o["kind"] for o in objects}
    for obj in objects:
        assert hook.create(obj) is not None, obj["metadata"]["name"]
    for obj in objects:
        stored = hook.get(obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"])
        assert stored["spec"] == obj["spec"], (obj["kind"], obj["metadata"]["name"])
        assert hook.create(obj) is None  # 409: the second apply patches
        hook.apply(obj)
        assert hook.get(obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"])["spec"] == obj["spec"]


def _hpa(hook, deployment) -> dict:
    return hook.get("HorizontalPodAutoscaler", m.object_name(deployment, "stable"), deployment.namespace)


def _frozen(hpa: dict) -> bool:
    policies = {hpa["spec"]["behavior"][d]["selectPolicy"] for d in ("scaleUp", "scaleDown")}
    assert policies in ({"Disabled"}, {"Max"}), policies  # never half frozen
    assert hpa["metadata"]["annotations"][m.ANNOTATION_HPA_FROZEN] == str(policies == {"Disabled"}).lower()
    return policies == {"Disabled"}


def _seeded_backend(hook, registry, strategy: str) -> KubernetesBackend:
    base = registry.deployment("tiny-llama-chat")
    deployment = base.model_copy(update={"traffic": base.traffic.model_copy(update={"strategy": strategy})})
    backend = KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile))
    for obj in m.render_all(deployment, backend.profile, stable=m.VersionRef(STABLE, deployment.model), canary=None,
                            canary_percent=0):
        hook.apply(obj)
    assert not _frozen(_hpa(hook, deployment))
    return backend


MANIFEST = SimpleNamespace(uri=CANARY, tensor_parallel_size=1, max_model_len=512)


@pytest.mark.parametrize("strategy", ["gateway-httproute", "replica-ratio"])
def test_a_canary_freezes_the_stable_hpa_and_a_roll_back_thaws_it(hook, registry, strategy):
    backend = _seeded_backend(hook, registry, strategy)
    d = backend.deployment
    backend.deploy_canary(MANIFEST, "run-1")
    hpa = _hpa(hook, d)
    assert _frozen(hpa)
    assert hook.get("PodDisruptionBudget", m.object_name(d, "stable"), d.namespace) is not None
    total = d.replicas + d.rollout.canary_replicas
    for percent in d.rollout.steps:
        backend.set_weights(percent)
        stable = hook.get("Deployment", m.object_name(d, "stable"), d.namespace)["spec"]["replicas"]
        if strategy == "replica-ratio":  # the tracks share a constant total between them
            canary = hook.get("Deployment", m.object_name(d, "canary"), d.namespace)["spec"]["replicas"]
            assert (stable, canary) == m.replica_split(total, percent), percent
        hpa = _hpa(hook, d)
        # the controller's min/max clamp would not move the stable track either (0: the HPA stands aside)
        assert stable == 0 or hpa["spec"]["minReplicas"] <= stable <= hpa["spec"]["maxReplicas"], (percent, stable)
        assert _frozen(hpa)
    backend.roll_back()
    hpa = _hpa(hook, d)
    assert not _frozen(hpa)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (d.replicas, d.max_replicas)
    assert hpa["spec"] == m.render_hpa(d)["spec"], "the merge patch left something of the freeze behind"
    assert hook.get("Deployment", m.object_name(d, "canary"), d.namespace) is None


def test_a_promotion_thaws_the_stable_hpa(hook, registry):
    backend = _seeded_backend(hook, registry, "gateway-httproute")
    d = backend.deployment
    backend.deploy_canary(MANIFEST, "run-2")
    assert _frozen(_hpa(hook, d))
    backend.set_weights(100)
    backend.begin_promote(MANIFEST)
    assert _frozen(_hpa(hook, d)), "the stable track's rolling update runs under the freeze"
    backend.finish_promote()
    assert _hpa(hook, d)["spec"] == m.render_hpa(d)["spec"]
    assert backend.stable_version() == CANARY


def test_spot_nodes_count_for_capacity_only_when_the_deployment_may_run_there(hook, registry):
    profile = registry.gpu_profile("a10")
    taint = profile.spot.taint
    core = hook.kube.core_v1_client
    for name, spot in (("on-demand-1", False), ("spot-1", True)):
        labels = {**profile.node_selector, **(profile.spot.node_label if spot else {})}
        spec = {"taints": [{"key": taint.key, "value": taint.value, "effect": taint.effect}]} if spot else {}
        core.create_node({"metadata": {"name": name, "labels": labels}, "spec": spec,
                          "status": {"allocatable": {"nvidia.com/gpu": "1"}}}, _preload_content=False)
    hook.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "busy", "namespace": "ml"},
                "spec": {"nodeName": "on-demand-1",
                         "containers": [{"name": "x", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
                "status": {"phase": "Running"}})
    facts = ArtefactFacts(uri=CANARY, model="tiny-llama", serving_runtime="vllm", quantization_format="w8a8",
                             min_compute_capability=7.5, tensor_parallel_size=1, max_model_len=512, weights_bytes=1)
    on_demand = registry.deployment("tiny-llama-chat")
    problems = KubernetesBackend(hook, on_demand, profile).capacity_problems(facts)
    assert problems and "GPU capacity" in str(problems[0]), "a free spot GPU is no capacity for on-demand serving"
    spot = on_demand.model_copy(update={"spot": True})
    assert KubernetesBackend(hook, spot, profile).capacity_problems(facts) == []


@pytest.mark.parametrize("name", ["tiny-llama-chat", "tiny-llama-trtllm"])
def test_what_the_backend_applies_mounts_the_cache_scrapes_each_pod_once_and_has_valid_names(hook, registry, name):
    """As stored by the API (emulator) after the backend's own deploy_canary: the canary's pods mount the model-cache
    claim (read-only for the server), the monitor selects exactly one Service per pod, and every name, label and
    port name is one the API server accepts."""
    from support.kube_names import name_problems
    from support.kube_selectors import selects

    deployment = registry.deployment(name)
    backend = KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                                model_cache_pvc="llmops-model-cache")
    assert backend.write_record({"run_id": "run-mounts", "status": "active", "resolved": {}}, None)
    backend.deploy_canary(MANIFEST, "run-mounts")
    d, ns = deployment, deployment.namespace
    canary = hook.get("Deployment", m.object_name(d, "canary"), ns)
    spec = canary["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "llmops-model-cache"}
    server_mounts = {v["mountPath"]: v for v in spec["containers"][0]["volumeMounts"]}
    assert server_mounts["/models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert "llmops.jobs.fetch" in spec["initContainers"][0]["command"]
    monitor = hook.get("ServiceMonitor", m.object_name(d), ns)
    services = [hook.get("Service", m.object_name(d, track), ns) for track in (None, "stable", "canary")]
    scraped = [s for s in services if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    pod_labels = canary["spec"]["template"]["metadata"]["labels"]
    assert [s["metadata"]["name"] for s in scraped if selects({"matchLabels": s["spec"]["selector"]}, pod_labels)] \
        == [m.object_name(d, "canary")]
    stored = [canary, monitor, *services, hook.get("PodDisruptionBudget", m.object_name(d, "stable"), ns),
              hook.get("ConfigMap", backend.lock_name, ns)]
    assert [p for obj in stored for p in name_problems(obj)] == []
