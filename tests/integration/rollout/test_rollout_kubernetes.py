"""The Kubernetes backend against kmock's emulator over real HTTP, through KubernetesHook and the official client.

Pre-flight runs through the driver in-process; promote and roll back run through the same DAG task
(`airflow dags test model_rollout`, runtime kubernetes) that users run, in a subprocess talking to the
emulator. The emulator has no controllers, so a thread in the test plays the Deployment controller and
kubelet: it writes Deployment status and creates the Pods of the version each Deployment asks for.
Pod and Service URLs point at a real vLLM (the session's stable server), so readiness is a real
generation and the analysis probes a real server (once through a proxy that fails every completion
while /health stays green, vLLM #36960).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import kubernetes_validate
import pytest

from llmops.config.schema import KeepPrevious
from llmops.rollout import driver
from llmops.rollout.errors import PreflightError
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.serving import manifests as m
from llmops.serving.kubernetes import KubernetesBackend
from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook
from llmops_airflow.triggers.readiness import KubernetesVllmReadyTrigger

from .conftest import dag_env, dags_test, newest_report
from .fault_proxy import FaultProxy

NS = "llmops"
A10 = {"aliyun.accelerator/nvidia_name": "NVIDIA-A10"}


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


def make_backend(hook, registry, url="http://127.0.0.1:8000"):
    deployment = registry.deployment("tiny-llama-chat")
    return KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                             pod_url_template=url, service_url_template=url)


def context(backend, registry, store, uri, run_id, tmp_path):
    resolved = resolve_request(RolloutRequest(deployment="tiny-llama-chat", version=uri), registry)
    return driver.RolloutContext(resolved, store, backend, registry, run_id, tmp_path / "report")


def seed_stable(backend, uri):
    """What an earlier promoted rollout left: the stable track on version `uri`, ready."""
    d = backend.deployment
    for obj in m.render_all(d, backend.profile, stable=m.VersionRef(uri, d.model), canary=None, canary_percent=0):
        backend.client.apply(obj)
    play_controller(backend.client, "stable")


def play_controller(client, track):
    """The Deployment controller + kubelet the emulator lacks: status, and one Ready pod per replica of the
    version the Deployment's pod template asks for. Returns False when there is nothing to do."""
    name = f"tiny-llama-chat-{track}"
    obj = client.get("Deployment", name, NS)
    if obj is None:
        return False
    replicas = obj["spec"]["replicas"]
    labels = obj["spec"]["template"]["metadata"]["labels"]
    status = obj.get("status") or {}
    pods = [p for p in client.list("Pod", NS)
            if p["metadata"]["labels"].get(m.LABEL_VERSION_ID) == labels[m.LABEL_VERSION_ID]
            and p["metadata"]["labels"].get(m.LABEL_TRACK) == track]
    if status.get("readyReplicas") == replicas and status.get("updatedReplicas") == replicas and len(pods) >= replicas:
        return False
    for i in range(replicas):
        client.apply({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": f"{name}-{labels[m.LABEL_VERSION_ID]}-{i}", "namespace": NS,
                                   "labels": labels},
                      "spec": {"nodeName": "a10-node-2", "containers": [{"name": "vllm"}]},
                      "status": {"phase": "Running", "podIP": "127.0.0.1",
                                 "conditions": [{"type": "Ready", "status": "True"}]}})
    client.kube.apps_v1_client.patch_namespaced_deployment_status(
        name, NS, {"status": {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas}},
        _content_type="application/merge-patch+json", _preload_content=False)
    return True


class Controller(threading.Thread):
    """Plays the controller while a DAG run goes on; with `kill_canary`, deletes the canary's pods as soon as
    the canary takes traffic (a node lost mid-analysis). `samples`: what the cluster looked like over time."""

    def __init__(self, client, *, kill_canary=False):
        super().__init__(daemon=True)
        self.client, self.kill_canary = client, kill_canary
        self.stop, self.killed = threading.Event(), False
        self.samples: list[dict] = []

    def run(self):
        while not self.stop.is_set():
            try:
                if not self.killed:
                    play_controller(self.client, "canary")
                play_controller(self.client, "stable")
                play_controller(self.client, "previous")
                self.samples.append(sample(self.client))
                if self.kill_canary and not self.killed and weights(self.client)[1] > 0:
                    for pod in self.client.list("Pod", NS):
                        if pod["metadata"]["labels"].get(m.LABEL_TRACK) == "canary":
                            self.client.delete("Pod", pod["metadata"]["name"], NS)
                    self.killed = True
            except Exception:  # noqa: BLE001 - objects appear and vanish while the run goes on
                pass
            time.sleep(0.3)
        self.samples.append(sample(self.client))  # as the run left it


def weights(client):
    route = client.get("HTTPRoute", "tiny-llama-chat", NS)
    return [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] if route else [100, 0]


def sample(client):
    """Replicas per track (None: no Deployment), the stable's version and the route's weights by backend."""
    out = {}
    for track in ("stable", "canary", "previous"):
        obj = client.get("Deployment", f"tiny-llama-chat-{track}", NS)
        out[track] = None if obj is None else obj["spec"]["replicas"]
        if track == "stable" and obj is not None:
            out["stable_version"] = obj["metadata"]["annotations"][m.ANNOTATION_VERSION]
    route = client.get("HTTPRoute", "tiny-llama-chat", NS)
    out["weights"] = {b["name"].removeprefix("tiny-llama-chat-"): b["weight"]
                      for b in route["spec"]["rules"][0]["backendRefs"]} if route else {}
    return out


def run_trigger(trigger):
    async def first_event():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(first_event())


def test_fp8_on_a10_and_full_cluster_are_refused_with_nothing_created(kube, hook, registry, rollout_store,
                                                                       tmp_path):
    store, uris = rollout_store
    backend = make_backend(hook, registry)
    writes_before = kube.writes()
    with pytest.raises(PreflightError, match=r"8\.9\+.*a10.*8\.6") as err:
        driver.preflight(context(backend, registry, store, uris["fp8"], "r1", tmp_path))
    assert "fix:" in str(err.value)
    # a version that was never published: the store's error becomes one problem, its fix kept as data
    missing = f"{store.root_uri}/models/tiny-llama/{'0' * 40}/vllm-none/manifest.json"
    with pytest.raises(PreflightError) as err:
        driver.preflight(context(backend, registry, store, missing, "r1", tmp_path))
    [problem] = err.value.problems
    assert (problem.check, problem.fix) == ("artefact", "pick a published version (list_versions('tiny-llama')) or 'latest'")
    assert "does not exist (no manifest)" in problem.what and "fix:" not in problem.what
    # the only free A10 gets taken: a compatible version is refused for capacity
    hook.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "namespace": "ml"},
                "spec": {"nodeName": "a10-node-2",
                         "containers": [{"name": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
                "status": {"phase": "Running"}})
    writes_before = kube.writes()
    with pytest.raises(PreflightError, match="GPU capacity"):
        driver.preflight(context(backend, registry, store, uris["healthy"], "r1", tmp_path))
    assert kube.writes() == writes_before, "pre-flight must not write anything"
    assert not [o for o in kube.live_objects() if o[1] == NS]



@pytest.fixture
def kube_env(kube, hook, rollout_tmp, rollout_store, local_backend, airflow_db, venvs):
    url = local_backend.load().stable.url
    conn = {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kube.kubeconfig)}}
    env = dag_env(rollout_tmp / "kube-home", rollout_tmp / "store", venvs, LLMOPS_RUNTIME="kubernetes",
                  AIRFLOW_CONN_KUBERNETES_DEFAULT=json.dumps(conn), LLMOPS_KUBE_POD_URL_TEMPLATE=url,
                  LLMOPS_KUBE_SERVICE_URL_TEMPLATE=url)
    return env, url


@pytest.mark.slow  # readiness and analysis go to a real vLLM (the session's stable server)
@pytest.mark.timeout(2400)  # counts the session's stable vLLM start when it runs first
def test_promote_on_kubernetes_through_the_dag(kube_env, hook, registry, rollout_store, rollout_tmp):
    env, url = kube_env
    store, uris = rollout_store
    backend = make_backend(hook, registry, url)
    seed_stable(backend, uris["stable"])
    controller = Controller(hook)
    controller.start()
    try:
        rc, log = dags_test(env, {"version": uris["healthy"], "steps": [50, 100], "analysis_window_s": 5})
    finally:
        controller.stop.set()
        controller.join()
    assert rc == 0, log[-6000:]
    assert "waiting for the canary track" in log and "waiting for the stable track" in log  # deferred twice
    stable = hook.get("Deployment", "tiny-llama-chat-stable", NS)
    kubernetes_validate.validate(stable, "1.31", strict=True)  # as stored by the API server
    assert stable["metadata"]["annotations"][m.ANNOTATION_VERSION] == uris["healthy"]
    assert stable["metadata"]["annotations"][m.ANNOTATION_PREVIOUS_VERSION] == uris["stable"]
    assert hook.get("Deployment", "tiny-llama-chat-canary", NS) is None
    assert weights(hook) == [100, 0]
    assert hook.get("HorizontalPodAutoscaler", "tiny-llama-chat-stable", NS)["spec"]["maxReplicas"] == 4
    assert backend.lock_holder() is None
    assert "PROMOTED" in newest_report(rollout_tmp / "kube-home")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_canary_pods_lost_mid_analysis_roll_back_on_kubernetes_through_the_dag(kube_env, hook, registry,
                                                                               rollout_store, rollout_tmp):
    env, url = kube_env
    store, uris = rollout_store
    backend = make_backend(hook, registry, url)
    seed_stable(backend, uris["stable"])
    stable_before = hook.get("Deployment", "tiny-llama-chat-stable", NS)
    controller = Controller(hook, kill_canary=True)
    controller.start()
    try:
        rc, log = dags_test(env, {"version": uris["healthy"], "steps": [50, 100], "analysis_window_s": 120})
    finally:
        controller.stop.set()
        controller.join()
    assert rc != 0 and "rolled back" in log, log[-6000:]
    report = newest_report(rollout_tmp / "kube-home")
    assert "canary_alive | FAIL" in report and "stopped early" in report
    assert hook.get("Deployment", "tiny-llama-chat-canary", NS) is None
    assert weights(hook) == [100, 0]
    assert hook.get("Deployment", "tiny-llama-chat-stable", NS)["spec"] == stable_before["spec"]
    assert backend.lock_holder() is None


@pytest.mark.slow  # the readiness generation goes to a real vLLM (the session's stable server)
@pytest.mark.timeout(2400)
def test_readiness_needs_a_real_generation(kube, hook, registry, rollout_store, local_backend):
    _, uris = rollout_store
    stable_url = local_backend.load().stable.url
    backend = make_backend(hook, registry, stable_url)
    seed_stable(backend, uris["stable"])
    target = backend.wait_target("stable", type("M", (), {"uri": uris["stable"], "tensor_parallel_size": 1,
                                                          "max_model_len": 512})())
    ids = target.identifiers
    assert run_trigger(KubernetesVllmReadyTrigger(identifiers=ids, timeout_s=10, poll_s=0.2))["status"] == "ready"
    with FaultProxy(stable_url, error_every=1) as broken:  # Ready pods whose completions fail do not count
        event = run_trigger(KubernetesVllmReadyTrigger(identifiers={**ids, "pod_url_template": broken.url},
                                                       timeout_s=2, poll_s=0.2))
    assert event["status"] == "not_ready" and "cannot generate" in event["detail"]
    hook.delete("Deployment", "tiny-llama-chat-stable", NS)
    event = run_trigger(KubernetesVllmReadyTrigger(identifiers=ids, timeout_s=30, poll_s=0.2))
    assert event["status"] == "not_ready" and "does not exist" in event["detail"]  # fatal: no 30 s wait


def keeping(resolved, replicas, minutes):
    d = resolved.deployment
    rollout = d.rollout.model_copy(update={"keep_previous": KeepPrevious(replicas=replicas, minutes=minutes)})
    return resolved.model_copy(update={"deployment": d.model_copy(update={"rollout": rollout})})


def rollout_in_process(hook, registry, store, url, version, run_id, tmp_path, *, keep=(2, 30.0)):
    """One rollout through the driver (waiting with the trigger's check in-process), the controller playing."""
    backend = make_backend(hook, registry, url)
    ctx = context(backend, registry, store, version, run_id, tmp_path / run_id)
    # stable and canary are the same vLLM here: the latency gate would only judge the machine's noise (a round's
    # ratio reached 2.7 on a loaded machine), so it is set to its widest; these tests are about what is kept
    request = RolloutRequest(deployment="tiny-llama-chat", version=version, steps=[100], analysis_window_s=5,
                             thresholds={"max_p95_latency_ratio": 10.0})
    ctx.resolved = keeping(resolve_request(request, registry), *keep)
    backend.deployment = ctx.resolved.deployment
    controller = Controller(hook)
    controller.start()
    try:
        finished = driver.run_blocking(ctx, poll_s=0.3)
    finally:
        controller.stop.set()
        controller.join()
    return finished, controller.samples


@pytest.mark.slow  # readiness, golden prompts and analysis go to a real vLLM (the session's stable server)
@pytest.mark.timeout(2400)
def test_warm_roll_back_on_kubernetes_keeps_routes_back_and_expires(kube, hook, registry, rollout_store,
                                                                   local_backend, tmp_path):
    store, uris = rollout_store
    url = local_backend.load().stable.url
    backend = make_backend(hook, registry, url)
    seed_stable(backend, uris["stable"])

    # promote: the replaced version gets NAME-previous at keep_previous.replicas, kept until the report says
    started = time.time()
    promoted, samples = rollout_in_process(hook, registry, store, url, uris["healthy"], "promote", tmp_path)
    assert promoted.report.outcome == "promoted", promoted.report.reason
    kept = hook.get("Deployment", "tiny-llama-chat-previous", NS)
    kubernetes_validate.validate(kept, "1.31", strict=True)
    assert kept["spec"]["replicas"] == 2
    assert kept["metadata"]["annotations"][m.ANNOTATION_VERSION] == uris["stable"]
    until = float(kept["metadata"]["annotations"][m.ANNOTATION_KEEP_UNTIL])
    assert started + 30 * 60 - 5 <= until <= time.time() + 30 * 60 + 5
    assert promoted.report.kept_previous["until"] == pytest.approx(until, abs=1)
    assert "previous version kept warm" in Path(promoted.locations["local_markdown"]).read_text()
    assert samples[-1]["weights"] == {"stable": 100, "canary": 0} and samples[-1]["canary"] is None
    assert backend.stable_version() == uris["healthy"]

    # version previous within the window: the kept Deployment takes 100 % (no canary, no new Deployment of the
    # version), then the stable Deployment is moved back to it and traffic returns to stable; the copy is deleted
    rolled, samples = rollout_in_process(hook, registry, store, url, "previous", "warm", tmp_path)
    report = rolled.report
    assert report.outcome == "promoted" and report.warm_roll_back, report.reason
    assert "traffic_restored_s" in report.timings and not report.kept_previous  # nothing kept after going back
    assert all(s["canary"] is None for s in samples), "a warm roll back starts no canary"
    on_copy = [i for i, s in enumerate(samples) if s["weights"].get("previous") == 100]
    assert on_copy, samples
    assert samples[on_copy[0]]["weights"] == {"stable": 0, "canary": 0, "previous": 100}
    events = [event for _, _, event, _ in report.timeline]
    assert events == ["start", "warm_ready", "warm_restored", "promoted"]  # traffic moved before the stable did
    assert samples[on_copy[0]]["previous"] == 2  # the kept pods, not scaled or replaced
    assert hook.get("Deployment", "tiny-llama-chat-previous", NS) is None
    assert weights(hook) == [100, 0] and backend.stable_version() == uris["stable"]
    assert backend.previous_version() == uris["healthy"] and backend.lock_holder() is None

    # promote again with a short window; once it expired, version previous is the normal canary rollout, and the
    # expired copy is deleted before its canary starts
    promoted, _ = rollout_in_process(hook, registry, store, url, uris["healthy"], "promote-2", tmp_path,
                                     keep=(1, 0.02))
    assert promoted.report.outcome == "promoted"
    assert hook.get("Deployment", "tiny-llama-chat-previous", NS)["spec"]["replicas"] == 1
    time.sleep(max(0.0, promoted.report.kept_previous["until"] - time.time()) + 0.5)
    cold, samples = rollout_in_process(hook, registry, store, url, "previous", "cold", tmp_path)
    assert cold.report.outcome == "promoted" and cold.report.manual_roll_back and not cold.report.warm_roll_back
    with_canary = [s for s in samples if s["canary"] is not None]
    assert with_canary and with_canary[0]["previous"] is None  # the expired copy was released before the canary
    assert backend.stable_version() == uris["stable"]
    # ... and that normal promotion keeps the version it replaced, as any promotion does
    assert hook.get("Deployment", "tiny-llama-chat-previous", NS)["metadata"]["annotations"][
        m.ANNOTATION_VERSION] == uris["healthy"]
