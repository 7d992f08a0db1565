"""The Kubernetes adapter against kmock's emulator over real HTTP, through KubernetesHook and the official client.

The emulator has no controllers, so the test plays the Deployment controller and kubelet: it writes
Deployment status and creates the Pods. Readiness generation goes to a real vLLM (the session's stable
server), once through a proxy that fails every completion while /health stays green (vLLM #36960).
"""

from __future__ import annotations

import asyncio
import json

import kubernetes_validate
import pytest

from llmops.rollout.preflight import PreflightError, RolloutInProgressError
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.rollout.runner import run_preflight
from llmops.serving import manifests as m
from llmops.serving.kubernetes import KubernetesBackend
from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook
from llmops_airflow.triggers.readiness import VllmReadyTrigger

from .fault_proxy import FaultProxy
from .kube_emulator import KubeEmulator

NS = "llmops"
A10 = {"aliyun.accelerator/nvidia_name": "NVIDIA-A10"}


@pytest.fixture
def kube(monkeypatch):
    with KubeEmulator() as emulator:
        conn = {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(emulator.kubeconfig)}}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
        yield emulator


@pytest.fixture
def hook(kube):
    hook = VllmKubernetesHook("kubernetes_default")
    for name, busy in (("a10-node-1", 1), ("a10-node-2", 0)):
        hook.kube.core_v1_client.create_node({"metadata": {"name": name, "labels": A10},
                                              "status": {"allocatable": {"nvidia.com/gpu": "1"}}},
                                             _preload_content=False)
        if busy:
            hook.apply({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"training-{name}", "namespace": "ml"},
                        "spec": {"nodeName": name, "containers": [
                            {"name": "t", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
                        "status": {"phase": "Running"}})
    return hook


def make_backend(hook, registry, port=8000):
    deployment = registry.deployment("tiny-llama-chat")
    return KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                             pod_url_template=f"http://127.0.0.1:{port}", poll_s=0.2)


def resolved(registry, uri):
    return resolve_request(RolloutRequest(model="tiny-llama", deployment="tiny-llama-chat", version=uri), registry)


def seed_stable(backend, store, uri):
    """What an earlier promoted rollout left: the stable track on version `uri`, ready."""
    d = backend.deployment
    for obj in m.render_all(d, backend.profile, stable=m.VersionRef(uri, d.model), canary=None, canary_percent=0):
        backend.client.apply(obj)
    play_controller(backend, "stable", uri)


def play_controller(backend, track, uri, *, pod_ip="127.0.0.1"):
    """The Deployment controller + kubelet the emulator lacks: status, and one Ready pod per replica."""
    d = backend.deployment
    name = m.object_name(d, track)
    obj = backend.client.get("Deployment", name, NS)
    replicas = obj["spec"]["replicas"]
    version = m.VersionRef(uri, d.model)
    for i in range(replicas):
        backend.client.apply({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": f"{name}-{version.version_id}-{i}", "namespace": NS,
                                           "labels": m.labels(d, track, version)},
                              "spec": {"nodeName": "a10-node-2", "containers": [{"name": "vllm"}]},
                              "status": {"phase": "Running", "podIP": pod_ip,
                                         "conditions": [{"type": "Ready", "status": "True"}]}})
    hook_core = backend.client.kube.apps_v1_client
    hook_core.patch_namespaced_deployment_status(
        name, NS, {"status": {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas}},
        _content_type="application/merge-patch+json", _preload_content=False)


def weights(backend):
    route = backend.client.get("HTTPRoute", "tiny-llama-chat", NS)
    return [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]]


def run_trigger(trigger):
    async def first_event():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(first_event())


def test_fp8_on_a10_and_full_cluster_are_refused_with_nothing_created(kube, hook, registry, rollout_store):
    store, uris = rollout_store
    backend = make_backend(hook, registry)
    writes_before = kube.writes()
    with pytest.raises(PreflightError, match=r"8\.9\+.*a10.*8\.6") as err:
        run_preflight(resolved(registry, uris["fp8"]), store=store, backend=backend, registry=registry, run_id="r1")
    assert "fix:" in str(err.value)
    # the only free A10 gets taken: a compatible version is refused for capacity
    hook.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "namespace": "ml"},
                "spec": {"nodeName": "a10-node-2",
                         "containers": [{"name": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
                "status": {"phase": "Running"}})
    writes_before = kube.writes()
    with pytest.raises(PreflightError, match="GPU capacity"):
        run_preflight(resolved(registry, uris["healthy"]), store=store, backend=backend, registry=registry,
                      run_id="r1")
    assert kube.writes() == writes_before, "pre-flight must not write anything"
    assert not [o for o in kube.live_objects() if o[1] == NS]


@pytest.mark.slow  # the readiness generation goes to a real vLLM (the session's stable server)
def test_canary_promote_on_kubernetes_and_manual_roll_back(kube, hook, registry, rollout_store, local_backend):
    store, uris = rollout_store
    stable_url = local_backend.local.load().stable.url
    port = int(stable_url.rsplit(":", 1)[1])
    backend = make_backend(hook, registry, port)
    seed_stable(backend, store, uris["stable"])

    pre = run_preflight(resolved(registry, uris["healthy"]), store=store, backend=backend, registry=registry,
                        run_id="run-1")
    assert pre.stable_version == uris["stable"] and backend.lock_holder() == "run-1"
    with pytest.raises(RolloutInProgressError, match="run-1"):
        run_preflight(resolved(registry, uris["healthy"]), store=store, backend=backend, registry=registry,
                      run_id="run-2")

    backend.deploy_canary(pre.manifest, "run-1")
    canary = hook.get("Deployment", "tiny-llama-chat-canary", NS)
    kubernetes_validate.validate(canary, "1.31", strict=True)  # as stored by the API server
    assert canary["metadata"]["annotations"][m.ANNOTATION_PREVIOUS_VERSION] == uris["stable"]
    assert weights(backend) == [100, 0]
    hpa = hook.get("HorizontalPodAutoscaler", "tiny-llama-chat-stable", NS)["spec"]
    assert hpa["minReplicas"] == hpa["maxReplicas"] == 2

    version_id = m.VersionRef(uris["healthy"], "tiny-llama").version_id
    common = dict(runtime="kubernetes", deployment="tiny-llama-chat", track="canary", version_id=version_id,
                  model="tiny-llama", poll_s=0.2)
    # before the controller acts: not ready
    assert run_trigger(VllmReadyTrigger(timeout_s=1, **common))["status"] == "not_ready"
    play_controller(backend, "canary", uris["healthy"])
    # Ready pods whose /health is green but whose completions fail do not count
    with FaultProxy(stable_url, error_every=1) as broken:
        event = run_trigger(VllmReadyTrigger(timeout_s=2, pod_url_template=broken.url, **common))
    assert event["status"] == "not_ready" and "cannot generate" in event["detail"]
    event = run_trigger(VllmReadyTrigger(timeout_s=30, pod_url_template=stable_url, **common))
    assert event["status"] == "ready", event

    for percent in (10, 50, 100):
        backend.set_weights(percent)
        assert weights(backend) == [100 - percent, percent]

    new_id = backend.begin_promote(pre.manifest)
    stable = hook.get("Deployment", "tiny-llama-chat-stable", NS)
    assert stable["metadata"]["annotations"][m.ANNOTATION_VERSION] == uris["healthy"]
    assert stable["metadata"]["annotations"][m.ANNOTATION_PREVIOUS_VERSION] == uris["stable"]
    assert backend.stable_ready(new_id)[0] is False  # old pods only, status not updated yet
    play_controller(backend, "stable", uris["healthy"])
    assert backend.stable_ready(new_id)[0] is True
    backend.finish_promote()
    backend.release("run-1")
    assert hook.get("Deployment", "tiny-llama-chat-canary", NS) is None
    assert weights(backend) == [100, 0]
    assert hook.get("HorizontalPodAutoscaler", "tiny-llama-chat-stable", NS)["spec"]["maxReplicas"] == 4
    assert backend.lock_holder() is None

    # a manual roll back as a rollout: version "previous" resolves from the annotation, checks run again
    back = run_preflight(resolved(registry, "previous"), store=store, backend=backend, registry=registry,
                         run_id="run-3")
    assert back.manifest.uri == uris["stable"] and back.stable_version == uris["healthy"]
    backend.release("run-3")
    # or directly: the stable Deployment goes back to the recorded previous version
    assert backend.roll_back_to_previous() == uris["stable"]
    annotations = hook.get("Deployment", "tiny-llama-chat-stable", NS)["metadata"]["annotations"]
    assert annotations[m.ANNOTATION_VERSION] == uris["stable"]
    assert annotations[m.ANNOTATION_PREVIOUS_VERSION] == uris["healthy"]


def test_roll_back_keeps_stable_and_a_rerun_after_a_crash_converges(kube, hook, registry, rollout_store):
    store, uris = rollout_store
    backend = make_backend(hook, registry)
    seed_stable(backend, store, uris["stable"])
    stable_before = hook.get("Deployment", "tiny-llama-chat-stable", NS)

    pre = run_preflight(resolved(registry, uris["garbage"]), store=store, backend=backend, registry=registry,
                        run_id="run-1")
    backend.deploy_canary(pre.manifest, "run-1")
    backend.set_weights(10)
    first_canary = hook.get("Deployment", "tiny-llama-chat-canary", NS)
    # run-1's worker dies here: canary and lock are left behind. Another run is refused, not queued.
    with pytest.raises(RolloutInProgressError):
        run_preflight(resolved(registry, uris["garbage"]), store=store, backend=backend, registry=registry,
                      run_id="run-2")
    # run-1's retry re-enters (same run id) and rolls back
    run_preflight(resolved(registry, uris["garbage"]), store=store, backend=backend, registry=registry,
                  run_id="run-1")
    backend.deploy_canary(pre.manifest, "run-1")  # idempotent: applying again changes nothing
    assert hook.get("Deployment", "tiny-llama-chat-canary", NS) == first_canary
    backend.roll_back()
    backend.roll_back()  # and so is rolling back twice
    backend.release("run-1")
    assert hook.get("Deployment", "tiny-llama-chat-canary", NS) is None
    assert weights(backend) == [100, 0]
    assert hook.get("Deployment", "tiny-llama-chat-stable", NS) == stable_before
    assert backend.lock_holder() is None
    # now run-2 proceeds and reaches the same state run-1 had
    run_preflight(resolved(registry, uris["garbage"]), store=store, backend=backend, registry=registry,
                  run_id="run-2")
    backend.deploy_canary(pre.manifest, "run-2")
    again = hook.get("Deployment", "tiny-llama-chat-canary", NS)
    assert again["spec"] == first_canary["spec"]
    assert again["metadata"]["annotations"][m.ANNOTATION_ROLLOUT] == "run-2"
