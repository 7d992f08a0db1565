"""The rollout backend on Kubernetes: which objects to apply, patch or delete at each plan action.

No Airflow here: it talks through a `KubeClient` (the Airflow hook in plugins/ implements it over
cncf-kubernetes' `KubernetesHook` clients), so the same decisions are tested against the kmock
emulator with the official client.

Versions are recorded on the objects themselves: the stable Deployment carries
`llmops.io/version` and `llmops.io/previous-version`, which is all a manual roll back needs. A
ConfigMap `<deployment>-rollout-lock`, created atomically (409 if it exists), is the rollout lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from llmops.canary.probes import generation_ok
from llmops.config.schema import Deployment, GpuProfile
from llmops.errors import LlmopsError
from llmops.rollout import preflight as pf
from llmops.serving import manifests as m

log = logging.getLogger(__name__)


class KubeClient(Protocol):
    def apply(self, obj: dict) -> dict: ...
    def get(self, kind: str, name: str, namespace: str) -> dict | None: ...
    def delete(self, kind: str, name: str, namespace: str) -> bool: ...
    def create(self, obj: dict) -> dict | None: ...  # None when it already exists (409)
    def list(self, kind: str, namespace: str | None = None) -> list[dict]: ...


class KubernetesRolloutError(LlmopsError):
    pass


def _matches(obj: dict, selector: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _quantity(value: Any) -> float:
    """Kubernetes quantities as used for GPUs: integers, or suffixed (e.g. '24', '1k')."""
    text = str(value or "0")
    for suffix, factor in (("Ki", 1024), ("Mi", 1024**2), ("Gi", 1024**3), ("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def node_capacity(client: KubeClient, profile: GpuProfile) -> list[pf.NodeCapacity]:
    """Allocatable minus requested `profile.resource_name` on the nodes matching the profile's selector."""
    nodes = [n for n in client.list("Node") if _matches(n, profile.node_selector)]
    pods = client.list("Pod")
    out = []
    for node in nodes:
        name = node["metadata"]["name"]
        allocatable = _quantity((node.get("status", {}).get("allocatable") or {}).get(profile.resource_name))
        requested = 0.0
        for pod in pods:
            if pod.get("spec", {}).get("nodeName") != name:
                continue
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for container in pod.get("spec", {}).get("containers", []):
                requests = (container.get("resources") or {}).get("requests") or {}
                limits = (container.get("resources") or {}).get("limits") or {}
                requested += _quantity(requests.get(profile.resource_name, limits.get(profile.resource_name)))
        out.append(pf.NodeCapacity(name, allocatable, requested))
    return out


def pod_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def check_ready(client: KubeClient, deployment: Deployment, track: m.Track, version_id: str, *,
                pod_url: Callable[[dict], str], generate: Callable[[str, str], tuple[bool, str]]) -> tuple[bool, str]:
    """Ready = the Deployment reports all replicas updated and ready, AND every ready pod of this version
    answers a real generation. A pod whose /health is green but cannot generate does not count."""
    obj = client.get("Deployment", m.object_name(deployment, track), deployment.namespace)
    if obj is None:
        return False, f"Deployment {m.object_name(deployment, track)} does not exist"
    want = int(obj.get("spec", {}).get("replicas") or 0)
    status = obj.get("status") or {}
    generation = obj.get("metadata", {}).get("generation")
    if generation is not None and status.get("observedGeneration", generation) < generation:
        return False, "the controller has not observed the latest spec yet"
    if int(status.get("updatedReplicas") or 0) < want or int(status.get("readyReplicas") or 0) < want:
        return False, (f"{status.get('readyReplicas') or 0}/{want} replicas ready, "
                       f"{status.get('updatedReplicas') or 0} updated")
    selector = {m.LABEL_NAME: deployment.name, m.LABEL_TRACK: track, m.LABEL_VERSION_ID: version_id}
    pods = [p for p in client.list("Pod", deployment.namespace) if _matches(p, selector) and pod_ready(p)]
    if len(pods) < want:
        return False, f"{len(pods)}/{want} pods of this version are Running and Ready"
    for pod in pods:
        ok, detail = generate(pod_url(pod), deployment.model)
        if not ok:
            return False, f"pod {pod['metadata']['name']} is Ready but cannot generate: {detail}"
    return True, f"{len(pods)} pod(s) generated"


class KubernetesBackend:
    """`llmops.rollout.runner.RolloutBackend` on a cluster."""

    runtime = "kubernetes"

    def __init__(self, client: KubeClient, deployment: Deployment, profile: GpuProfile, *,
                 fetch_image: str = "llmops-worker:0.1.0", pod_url_template: str = "http://{pod_ip}:{port}",
                 service_url_template: str = "http://{service}.{namespace}.svc.cluster.local:{port}",
                 poll_s: float = 5.0):
        self.client = client
        self.deployment = deployment
        self.profile = profile
        self.fetch_image = fetch_image
        self.pod_url_template = pod_url_template
        self.service_url_template = service_url_template
        self.poll_s = poll_s
        self._canary: m.VersionRef | None = None

    # --- names and versions --------------------------------------------------------------------
    @property
    def lock_name(self) -> str:
        return f"{self.deployment.name}-rollout-lock"

    def _version(self, manifest: Any) -> m.VersionRef:
        return m.VersionRef(manifest.uri, self.deployment.model, manifest.tensor_parallel_size,
                            manifest.max_model_len)

    def _get(self, kind: str, track: m.Track | None = None) -> dict | None:
        return self.client.get(kind, m.object_name(self.deployment, track), self.deployment.namespace)

    def stable_object(self) -> dict | None:
        return self._get("Deployment", "stable")

    def stable_version(self) -> str | None:
        obj = self.stable_object()
        return (obj or {}).get("metadata", {}).get("annotations", {}).get(m.ANNOTATION_VERSION)

    def previous_version(self) -> str | None:
        obj = self.stable_object()
        return (obj or {}).get("metadata", {}).get("annotations", {}).get(m.ANNOTATION_PREVIOUS_VERSION)

    def canary_version(self) -> str | None:
        obj = self._get("Deployment", "canary")
        return (obj or {}).get("metadata", {}).get("annotations", {}).get(m.ANNOTATION_VERSION)

    def pod_url(self, pod: dict) -> str:
        return self.pod_url_template.format(pod_ip=pod.get("status", {}).get("podIP", ""), port=self.deployment.port,
                                            name=pod["metadata"]["name"])

    def service_url(self, track: m.Track) -> str:
        return self.service_url_template.format(service=m.object_name(self.deployment, track),
                                                namespace=self.deployment.namespace, port=self.deployment.port)

    # --- lock ----------------------------------------------------------------------------------
    def lock_holder(self) -> str | None:
        obj = self.client.get("ConfigMap", self.lock_name, self.deployment.namespace)
        return (obj or {}).get("data", {}).get("run_id") if obj else None

    def acquire(self, run_id: str) -> bool:
        created = self.client.create({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.lock_name, "namespace": self.deployment.namespace,
                         "labels": m.labels(self.deployment)},
            "data": {"run_id": run_id, "since": str(int(time.time()))}})
        return created is not None or self.lock_holder() == run_id

    def release(self, run_id: str) -> None:
        if self.lock_holder() in (run_id, None):
            self.client.delete("ConfigMap", self.lock_name, self.deployment.namespace)

    # --- pre-flight ----------------------------------------------------------------------------
    def verify_artefact(self, store: Any, manifest: Any) -> Any:
        """Before any object exists: every file's size and the checksum the store keeps for it (recorded in the
        manifest at publish) against what the store reports now, reading no bytes. The pods' init container
        later downloads and verifies every sha256 before vLLM starts."""
        return store.verify_stored(manifest)

    def capacity_problems(self, facts: pf.ArtefactFacts) -> list[pf.Problem]:
        per_replica = pf.replica_request(self.profile, facts)
        return pf.check_capacity(node_capacity(self.client, self.profile), profile=self.profile,
                                 per_replica=per_replica, replicas=self.deployment.rollout.canary_replicas)

    # --- actions -------------------------------------------------------------------------------
    def _stable_ref(self) -> m.VersionRef | None:
        uri = self.stable_version()
        return m.VersionRef(uri, self.deployment.model) if uri else None

    def _stable_replicas(self) -> int:
        obj = self.stable_object()
        return int((obj or {}).get("spec", {}).get("replicas") or self.deployment.replicas)

    def deploy_canary(self, manifest: Any, run_id: str) -> None:
        canary = self._version(manifest)
        stable = self._stable_ref()
        d = self.deployment
        replicas = d.rollout.canary_replicas
        self.client.apply(m.render_deployment(d, self.profile, "canary", canary, replicas=replicas,
                                              previous_version=stable.manifest_uri if stable else None,
                                              rollout_run=run_id, fetch_image=self.fetch_image))
        for track in (None, "stable", "canary"):
            self.client.apply(m.render_service(d, track))
        self.client.apply(m.render_service_monitor(d))
        if stable is not None:  # freeze the stable HPA at its current size for the experiment
            self.client.apply(m.render_hpa(d, frozen_replicas=self._stable_replicas()))
        if d.traffic.strategy == "gateway-httproute":
            self.client.apply(m.render_httproute(d, 0))
        self._canary = canary

    def canary_ready(self) -> tuple[bool, str]:
        obj = self._get("Deployment", "canary")
        if obj is None:
            return False, "no canary Deployment"
        version_id = obj["metadata"]["labels"][m.LABEL_VERSION_ID]
        return check_ready(self.client, self.deployment, "canary", version_id, pod_url=self.pod_url,
                           generate=lambda url, model: generation_ok(url, model, timeout_s=30))

    def wait_ready(self, timeout_s: float) -> float:
        from llmops.rollout.runner import NotReadyError

        started = time.monotonic()
        detail = ""
        while time.monotonic() - started < timeout_s:
            ok, detail = self.canary_ready()
            if ok:
                return time.monotonic() - started
            time.sleep(self.poll_s)
        raise NotReadyError(f"canary not ready after {timeout_s:.0f} s: {detail}")

    def set_weights(self, canary_percent: int) -> None:
        d = self.deployment
        if d.traffic.strategy == "gateway-httproute":
            self.client.apply(m.render_httproute(d, canary_percent))
            return
        # replica ratio behind the one Service: resize both tracks (the canary first, so capacity never dips)
        total = self._stable_replicas() + d.rollout.canary_replicas
        stable_n, canary_n = m.replica_split(total, canary_percent)
        for track, n in (("canary", canary_n), ("stable", max(stable_n, 0))):
            if self._get("Deployment", track) is not None:
                self.client.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                                   "metadata": {"name": m.object_name(d, track), "namespace": d.namespace},
                                   "spec": {"replicas": n}})

    def endpoints(self) -> tuple[str | None, str]:
        return (self.service_url("stable") if self.stable_version() else None), self.service_url("canary")

    def begin_promote(self, manifest: Any) -> str:
        """Move the stable Deployment to the new version (rolling update, maxUnavailable 0); traffic stays
        on the canary until `finish_promote`. Returns the version id to wait for on the stable track."""
        d = self.deployment
        new = self._version(manifest)
        old = self.stable_version()
        if old == new.manifest_uri:
            return new.version_id  # a retry after the patch
        self.client.apply(m.render_deployment(d, self.profile, "stable", new, replicas=self._stable_replicas(),
                                              previous_version=old, fetch_image=self.fetch_image))
        return new.version_id

    def stable_ready(self, version_id: str) -> tuple[bool, str]:
        return check_ready(self.client, self.deployment, "stable", version_id, pod_url=self.pod_url,
                           generate=lambda url, model: generation_ok(url, model, timeout_s=30))

    def finish_promote(self) -> None:
        """Weights back to the (new) stable, canary removed, HPA unfrozen."""
        d = self.deployment
        if d.traffic.strategy == "gateway-httproute":
            self.client.apply(m.render_httproute(d, 0))
        self.client.delete("Deployment", m.object_name(d, "canary"), d.namespace)
        self.client.apply(m.render_hpa(d))

    def promote(self, manifest: Any, *, timeout_s: float | None = None) -> None:
        version_id = self.begin_promote(manifest)
        deadline = time.monotonic() + (timeout_s or self.deployment.rollout.readiness_timeout_s)
        detail = ""
        while time.monotonic() < deadline:
            ok, detail = self.stable_ready(version_id)
            if ok:
                self.finish_promote()
                return
            time.sleep(self.poll_s)
        raise KubernetesRolloutError(f"the stable track did not become ready on the new version: {detail}")

    def roll_back(self) -> None:
        """Weights restored to stable, canary removed, HPA unfrozen; the stable Deployment is not touched."""
        d = self.deployment
        if d.traffic.strategy == "gateway-httproute" and self._get("HTTPRoute") is not None:
            self.client.apply(m.render_httproute(d, 0))
        self.client.delete("Deployment", m.object_name(d, "canary"), d.namespace)
        if self.stable_object() is not None:
            self.client.apply(m.render_hpa(d))

    def roll_back_to_previous(self) -> str:
        """Manual roll back: point the stable Deployment at the version its annotation says it replaced."""
        obj = self.stable_object()
        annotations = (obj or {}).get("metadata", {}).get("annotations", {})
        previous = annotations.get(m.ANNOTATION_PREVIOUS_VERSION)
        if not previous:
            raise KubernetesRolloutError(
                f"{m.object_name(self.deployment, 'stable')} records no previous version "
                f"(annotation {m.ANNOTATION_PREVIOUS_VERSION}); fix: trigger model_rollout with an explicit version")
        current = annotations.get(m.ANNOTATION_VERSION)
        ref = m.VersionRef(previous, self.deployment.model)
        self.client.apply(m.render_deployment(self.deployment, self.profile, "stable", ref,
                                              replicas=self._stable_replicas(), previous_version=current,
                                              fetch_image=self.fetch_image))
        return previous
