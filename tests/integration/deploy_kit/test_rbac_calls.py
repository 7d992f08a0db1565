"""The kit's RBAC is exactly what the code calls: no verb the code never uses, none it lacks.

Every Kubernetes call the pipelines' own code makes is recorded at kmock's emulator (real HTTP, the official
client): the connection test, the rollout backend's every action (pre-flight capacity, lock, canary, both traffic
strategies, readiness as the trigger checks it, promote, roll back) and the step pod operator's cleanup of a
finished job pod. The test plays the cluster's controllers and kubelet between those actions (node objects,
Deployment status, pods), and only the requests made inside the code's calls are counted (one thread: nothing
interleaves). The rest of KubernetesPodOperator's life cycle (create, watch the pod start, stream logs, exec into
the XCom sidecar) needs a kubelet kmock lacks: those calls are listed below from cncf-kubernetes 10.25's
utils/pod_manager.py and operators/pod.py, and added to the recorded ones. The union must equal the Role and
ClusterRole of deploy/ack/templates/10-rbac.yaml.
"""

from __future__ import annotations

import contextlib
import re
from types import SimpleNamespace

import pytest

from llmops.config import load_registry
from llmops.serving import manifests as m
from llmops.serving.kubernetes import KubernetesBackend, check_ready
from llmops.serving.port import ArtefactFacts
from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

NS = "llmops"
STABLE = "oss://b/models/tiny-llama/aaa/vllm-llmcompressor-w8a8/manifest.json"
CANARY = "oss://b/models/tiny-llama/bbb/vllm-llmcompressor-w8a8/manifest.json"
# (scope, api group, resource, verb): KubernetesPodOperator's calls kmock cannot reach without a kubelet
# (cncf-kubernetes 10.25: create_namespaced_pod; find_pod's list_namespaced_pod by labels (re-attach);
# read_namespaced_pod while waiting; read_namespaced_pod_log; connect_get_namespaced_pod_exec for the XCom
# sidecar, a websocket GET that Kubernetes >= 1.31 authorizes as `create` on pods/exec (KEP-4006) and older
# versions as `get`; patch_namespaced_pod to mark it checked; delete_namespaced_pod; list_namespaced_event
# when the pod fails).
POD_OPERATOR = {("namespace", "", "pods", verb) for verb in ("create", "list", "get", "patch", "delete")} | {
    ("namespace", "", "pods/log", "get"), ("namespace", "", "pods/exec", "create"),
    ("namespace", "", "pods/exec", "get"), ("namespace", "", "events", "list")}


class Recorder:
    """The emulator's requests made inside `code()` blocks, as RBAC (scope, group, resource, verb)."""

    def __init__(self, kube):
        self.kube, self.calls = kube, set()

    @contextlib.contextmanager
    def code(self):
        before = len(list(self.kube.emulator))
        yield
        for request in list(self.kube.emulator)[before:]:
            call = rbac_call(request.method.value, request.url.path, dict(request.url.query))
            if call is not None:
                self.calls.add(call)


def rbac_call(method: str, path: str, query: dict) -> tuple[str, str, str, str] | None:
    """An API request as RBAC sees it; None for non-resource URLs (/version: every authenticated client)."""
    found = re.fullmatch(r"/(?:api/v1|apis/([^/]+)/[^/]+)(?:/namespaces/([^/]+))?/([^/]+)(?:/([^/]+)(?:/([^/]+))?)?",
                         path)
    if found is None:
        return None
    group, namespace, resource, name, sub = found.groups()
    if sub:
        resource = f"{resource}/{sub}"
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update",
            "DELETE": "delete" if name else "deletecollection"}.get(method)
    if method == "GET":
        verb = "get" if name else ("watch" if str(query.get("watch", "")).lower() == "true" else "list")
    return ("namespace" if namespace else "cluster", group or "", resource, verb)


def granted(rendered: list[dict]) -> set[tuple[str, str, str, str]]:
    out = set()
    for doc in rendered:
        if doc["kind"] in ("Role", "ClusterRole"):
            scope = "namespace" if doc["kind"] == "Role" else "cluster"
            out |= {(scope, group, resource, verb) for rule in doc["rules"] for group in rule["apiGroups"]
                    for resource in rule["resources"] for verb in rule["verbs"]}
    return out


def play_controller(hook, track: str) -> None:
    """The Deployment controller and kubelet: status and one Ready pod per replica (not counted)."""
    obj = hook.get("Deployment", f"tiny-llama-chat-{track}", NS)
    if obj is None:
        return
    labels = obj["spec"]["template"]["metadata"]["labels"]
    replicas = obj["spec"]["replicas"]
    for i in range(replicas):
        hook.apply({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{obj['metadata']['name']}-{labels[m.LABEL_VERSION_ID]}-{i}",
                                 "namespace": NS, "labels": labels},
                    "spec": {"nodeName": "a10-node-2", "containers": [{"name": "vllm"}]},
                    "status": {"phase": "Running", "podIP": "127.0.0.1",
                               "conditions": [{"type": "Ready", "status": "True"}]}})
    hook.kube.apps_v1_client.patch_namespaced_deployment_status(
        obj["metadata"]["name"], NS, {"status": {"replicas": replicas, "readyReplicas": replicas,
                                                 "updatedReplicas": replicas}},
        _content_type="application/merge-patch+json", _preload_content=False)


def drive_rollout(hook, recorder: Recorder, strategy: str, *, promote: bool) -> None:
    registry = load_registry()
    base = registry.deployment("tiny-llama-chat")
    deployment = base.model_copy(update={"traffic": base.traffic.model_copy(update={"strategy": strategy})})
    backend = KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                                model_cache_pvc="llmops-model-cache")
    manifest = SimpleNamespace(uri=CANARY, tensor_parallel_size=1, max_model_len=512)
    facts = ArtefactFacts(uri=CANARY, model="tiny-llama", serving_runtime="vllm", quantization_format="w8a8",
                          min_compute_capability=7.5, tensor_parallel_size=1, max_model_len=512, weights_bytes=1)
    for obj in m.render_all(deployment, backend.profile, stable=m.VersionRef(STABLE, deployment.model), canary=None,
                            canary_percent=0, model_cache_pvc="llmops-model-cache"):
        hook.apply(obj)  # what an earlier rollout left (not counted)
    play_controller(hook, "stable")
    with recorder.code():
        assert hook.test_connection()[0], "the connection test reads /version"
        assert backend.capacity_problems(facts) == []
        record = {"run_id": f"run-{strategy}-{promote}", "status": "active", "resolved": {}}
        _, earlier = backend.read_record()  # the previous rollout's finished record, if any
        version = backend.write_record(record, earlier)  # the rollout record: lock, then every transition
        assert version and backend.read_record() == (record, version)
        assert backend.stable_version() == STABLE
        backend.deploy_canary(manifest, f"run-{strategy}-{promote}")
    play_controller(hook, "canary")
    with recorder.code():
        target = backend.wait_target("canary", manifest)
        assert check_ready(hook, target.identifiers, generate=lambda url, model: (True, "")).ready
        for percent in deployment.rollout.steps:
            backend.set_weights(percent)
            assert backend.canary_gone() is None
        backend.endpoints()
        if promote:
            backend.begin_promote(manifest, (1, 4e9))  # keeping the replaced version warm (gateway only)
    if promote:
        play_controller(hook, "stable")
        play_controller(hook, "previous")
    with recorder.code():
        if promote:
            assert check_ready(hook, backend.wait_target("stable", manifest).identifiers,
                               generate=lambda url, model: (True, "")).ready
            backend.finish_promote()
            kept = backend.warm_copy()  # a warm roll back: check the kept copy, route to it, release it
            if strategy == "gateway-httproute":
                assert kept is not None and kept.version == STABLE
                assert check_ready(hook, kept.target.identifiers, generate=lambda url, model: (True, "")).ready
                backend.restore_warm(STABLE)
            else:  # behind the one Service a kept copy would take a replica share: nothing is kept
                assert kept is None
            backend.release_warm()
        else:
            backend.roll_back()
        assert backend.write_record({**record, "status": "finished"}, version)
        assert backend.lock_holder() is None


def cleanup_a_finished_job_pod(recorder: Recorder) -> None:
    from airflow.sdk.exceptions import AirflowException
    from kubernetes.client import models as k8s

    from llmops_airflow.steps import heavy_step

    op = heavy_step(task_id="download", job="download", runtime="kubernetes")
    pod = op.build_pod_request_obj(context=None)
    pod.metadata.namespace = NS
    state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=1, message="failed"))
    pod.status = k8s.V1PodStatus(phase="Failed", container_statuses=[k8s.V1ContainerStatus(
        name="base", state=state, ready=False, restart_count=0, image=pod.spec.containers[0].image, image_id="")])
    op.hook.core_v1_client.create_namespaced_pod(NS, op.hook.core_v1_client.api_client
                                                 .sanitize_for_serialization(pod))  # the kubelet's part
    with recorder.code(), pytest.raises(AirflowException):
        op.cleanup(pod, pod)


def test_the_role_grants_exactly_the_calls_the_code_makes(kube, tmp_path):
    from support.ack import render_kit

    hook = VllmKubernetesHook("kubernetes_default")
    core = hook.kube.core_v1_client
    for name in ("a10-node-1", "a10-node-2"):  # the cloud's node controller (not counted)
        core.create_node({"metadata": {"name": name, "labels": {"aliyun.accelerator/nvidia_name": "NVIDIA-A10"}},
                          "status": {"allocatable": {"nvidia.com/gpu": "4"}}}, _preload_content=False)
    recorder = Recorder(kube)
    for strategy in ("gateway-httproute", "replica-ratio"):
        for promote in (True, False):
            drive_rollout(hook, recorder, strategy, promote=promote)
    cleanup_a_finished_job_pod(recorder)
    assert ("cluster", "", "pods", "list") in recorder.calls, "the capacity check reads pods of every namespace"
    needed = recorder.calls | POD_OPERATOR
    role = granted(render_kit(tmp_path / "out"))
    assert not needed - role, f"the code calls what the kit does not grant: {sorted(needed - role)}"
    assert not role - needed, f"the kit grants what the code never calls: {sorted(role - needed)}"


def test_the_comparison_can_fail(tmp_path):
    """A grant the code never uses, and a call the kit does not grant, are both reported."""
    from support.ack import render_kit

    role = granted(render_kit(tmp_path / "out"))
    assert ("namespace", "", "services", "delete") not in role  # the rollout never deletes a Service
    assert rbac_call("DELETE", "/api/v1/namespaces/llmops/services/x", {}) == ("namespace", "", "services", "delete")
    assert rbac_call("GET", "/apis/apps/v1/namespaces/llmops/deployments", {"watch": "true"})[3] == "watch"
    assert rbac_call("GET", "/api/v1/pods", {}) == ("cluster", "", "pods", "list")
    assert rbac_call("GET", "/version", {}) is None
