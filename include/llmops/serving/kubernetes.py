"""The rollout backend on Kubernetes: which objects to apply, patch or delete at each plan action.

No Airflow here: it talks through a `KubeClient` (the Airflow hook in plugins/ implements it over
cncf-kubernetes' `KubernetesHook` clients), so the same decisions are tested against the kmock
emulator with the official client.

Versions are recorded on the objects themselves: the stable Deployment carries
`llmops.io/version` and `llmops.io/previous-version`, which is all a manual roll back needs. The ConfigMap
`<deployment>-rollout-lock` holds the rollout record (`llmops.rollout.record`: lock, resolved request, progress),
created atomically (409 if it exists) and patched only at the resourceVersion it was read at (a merge patch
carrying resourceVersion is conditional: 409 when the object changed since).

Warm roll back (gateway-httproute): a promotion given `keep` applies `<deployment>-previous` (the replaced version,
`keep` replicas, annotation `llmops.io/keep-until`) before the stable Deployment moves on; `restore_warm` routes
100 % to it; the following promotion rolls the stable Deployment back to that version and `finish_promote` routes
to stable again and deletes the copy. With replica-ratio nothing is kept (behind the one Service the copy would
take a replica share of the traffic).
"""

from __future__ import annotations

import copy as copy_module
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from llmops.canary.probes import generation_ok
from llmops.config.schema import Deployment, GpuProfile
from llmops.serving import manifests as m
from llmops.serving.capacity import NodeCapacity, check_capacity, replica_request
from llmops.serving.port import ArtefactFacts, Problem, Readiness, WaitTarget, WarmCopy

log = logging.getLogger(__name__)


class KubeClient(Protocol):
    def apply(self, obj: dict) -> dict: ...
    def get(self, kind: str, name: str, namespace: str) -> dict | None: ...
    def delete(self, kind: str, name: str, namespace: str) -> bool: ...
    def create(self, obj: dict) -> dict | None: ...  # None when it already exists (409)
    def patch_if_unchanged(self, obj: dict) -> dict | None: ...  # at metadata.resourceVersion; None on 409
    def list(self, kind: str, namespace: str | None = None) -> list[dict]: ...


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


def _on_spot_pool(node: dict, profile: GpuProfile) -> bool:
    taints = (node.get("spec") or {}).get("taints") or []
    return profile.spot is not None and any(t.get("key") == profile.spot.taint.key for t in taints)


def node_capacity(client: KubeClient, profile: GpuProfile, *, spot: bool = False,
                  released: dict[str, str] | None = None) -> list[NodeCapacity]:
    """Allocatable minus requested `profile.resource_name` on the nodes matching the profile's selector; the
    profile's spot nodes count only for a deployment that may run there (`spot`: their taint keeps others off).
    Pods matching the labels `released` do not count (a kept copy the rollout releases before its canary starts)."""
    nodes = [n for n in client.list("Node") if _matches(n, profile.node_selector)
             and (spot or not _on_spot_pool(n, profile))]
    pods = [p for p in client.list("Pod") if not (released and _matches(p, released))]
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
        out.append(NodeCapacity(name, allocatable, requested))
    return out


def pod_ready(pod: dict) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def read_record_at(client: KubeClient, identifiers: dict) -> tuple[dict | None, str | None]:
    """The rollout record in the ConfigMap `identifiers["name"]` and its resourceVersion (a trigger reads it
    this way too)."""
    obj = client.get("ConfigMap", identifiers["name"], identifiers["namespace"])
    if obj is None or "record" not in (obj.get("data") or {}):
        return None, None
    return json.loads(obj["data"]["record"]), obj["metadata"].get("resourceVersion")


def check_ready(client: KubeClient, identifiers: dict, *,
                generate: Callable[[str, str], tuple[bool, str]] | None = None) -> Readiness:
    """Ready = the Deployment reports all replicas updated and ready, AND every ready pod of this version
    answers a real generation. A pod whose /health is green but cannot generate does not count.

    `identifiers` (the trigger carries exactly these): namespace, name (the Deployment), deployment (the
    `llmops.io/name` label), track, version_id, model, pod_url_template, port."""
    generate = generate or (lambda url, model: generation_ok(url, model, timeout_s=30))
    namespace, name = identifiers["namespace"], identifiers["name"]
    obj = client.get("Deployment", name, namespace)
    if obj is None:
        return Readiness(False, f"Deployment {name} does not exist", fatal=True)
    want = int(obj.get("spec", {}).get("replicas") or 0)
    status = obj.get("status") or {}
    generation = obj.get("metadata", {}).get("generation")
    if generation is not None and status.get("observedGeneration", generation) < generation:
        return Readiness(False, "the controller has not observed the latest spec yet")
    if int(status.get("updatedReplicas") or 0) < want or int(status.get("readyReplicas") or 0) < want:
        return Readiness(False, f"{status.get('readyReplicas') or 0}/{want} replicas ready, "
                                f"{status.get('updatedReplicas') or 0} updated")
    pods = ready_pods(client, identifiers)
    if len(pods) < want:
        return Readiness(False, f"{len(pods)}/{want} pods of this version are Running and Ready")
    for pod in pods:
        ok, detail = generate(pod_url(identifiers, pod), identifiers["model"])
        if not ok:
            return Readiness(False, f"pod {pod['metadata']['name']} is Ready but cannot generate: {detail}")
    return Readiness(True, f"{len(pods)} pod(s) generated")


def ready_pods(client: KubeClient, identifiers: dict) -> list[dict]:
    selector = {m.LABEL_NAME: identifiers["deployment"], m.LABEL_TRACK: identifiers["track"],
                m.LABEL_VERSION_ID: identifiers["version_id"]}
    return [p for p in client.list("Pod", identifiers["namespace"]) if _matches(p, selector) and pod_ready(p)]


def pod_url(identifiers: dict, pod: dict) -> str:
    return identifiers["pod_url_template"].format(pod_ip=pod.get("status", {}).get("podIP", ""),
                                                  port=identifiers["port"], name=pod["metadata"]["name"])


class KubernetesBackend:
    """`llmops.serving.port.RolloutBackend` on a cluster. Waiting is not done here: `wait_target` names
    what to wait for, and `check_ready` (the trigger's check too) looks once."""

    runtime = "kubernetes"

    def __init__(self, client: KubeClient, deployment: Deployment, profile: GpuProfile, *,
                 fetch_image: str = "llmops-worker:0.1.0", pod_url_template: str = "http://{pod_ip}:{port}",
                 service_url_template: str = "http://{service}.{namespace}.svc.cluster.local:{port}",
                 model_cache_pvc: str = ""):
        self.client = client
        self.deployment = deployment
        self.profile = profile
        self.fetch_image = fetch_image
        self.model_cache_pvc = model_cache_pvc
        self.pod_url_template = pod_url_template
        self.service_url_template = service_url_template
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

    def identifiers(self, track: m.Track, version_id: str) -> dict:
        d = self.deployment
        return {"namespace": d.namespace, "name": m.object_name(d, track), "deployment": d.name, "track": track,
                "version_id": version_id, "model": d.model, "pod_url_template": self.pod_url_template,
                "port": d.port, "kubernetes_conn_id": d.kubernetes_connection_id}

    def service_url(self, track: m.Track) -> str:
        return self.service_url_template.format(service=m.object_name(self.deployment, track),
                                                namespace=self.deployment.namespace, port=self.deployment.port)

    # --- the rollout record (lock, request, progress: llmops.rollout.record) ------------------------
    def read_record(self) -> tuple[dict | None, str | None]:
        return read_record_at(self.client, self.record_identifiers())

    def record_identifiers(self) -> dict:
        return {"runtime": self.runtime, "namespace": self.deployment.namespace, "name": self.lock_name,
                "kubernetes_conn_id": self.deployment.kubernetes_connection_id}

    def write_record(self, data: dict, version: str | None) -> str | None:
        """Create the ConfigMap (409: someone else did) or patch it at `version` (409: it changed since). Every
        key of `data` is sent each time, so the merge patch replaces the record whole."""
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.lock_name, "namespace": self.deployment.namespace,
                             "labels": m.labels(self.deployment)},
                "data": {"run_id": data["run_id"], "status": data["status"], "record": json.dumps(data)}}
        if version is None:
            written = self.client.create(body)
        else:
            body["metadata"]["resourceVersion"] = version
            written = self.client.patch_if_unchanged(body)
        return None if written is None else written["metadata"].get("resourceVersion", "")

    def lock_holder(self) -> str | None:
        record, _ = self.read_record()
        return record["run_id"] if record and record.get("status") != "finished" else None

    # --- pre-flight ----------------------------------------------------------------------------
    def verify_artefact(self, store: Any, manifest: Any) -> Any:
        """Before any object exists: every file's size and the checksum the store keeps for it (recorded in the
        manifest at publish) against what the store reports now, reading no bytes. The pods' init container
        later downloads and verifies every sha256 before vLLM starts."""
        return store.verify_stored(manifest)

    def capacity_problems(self, facts: ArtefactFacts) -> list[Problem]:
        per_replica = replica_request(self.profile, facts)
        kept = {m.LABEL_NAME: self.deployment.name, m.LABEL_TRACK: "previous"}
        return check_capacity(node_capacity(self.client, self.profile, spot=self.deployment.spot, released=kept),
                              profile=self.profile,
                              per_replica=per_replica, replicas=self.deployment.rollout.canary_replicas)

    # --- actions -------------------------------------------------------------------------------
    def _stable_ref(self) -> m.VersionRef | None:
        uri = self.stable_version()
        return m.VersionRef(uri, self.deployment.model) if uri else None

    def _stable_replicas(self) -> int:
        obj = self.stable_object()
        return int((obj or {}).get("spec", {}).get("replicas") or self.deployment.replicas)

    def deploy_canary(self, manifest: Any, run_id: str, extra_args: list[str] | None = None) -> None:
        canary = self._version(manifest)
        stable = self._stable_ref()
        d = self.deployment
        canary_deployment = d.model_copy(update={"extra_args": [*d.extra_args, *(extra_args or [])]})
        self.client.apply(m.render_deployment(canary_deployment, self.profile, "canary", canary,
                                              replicas=d.rollout.canary_replicas,
                                              previous_version=stable.manifest_uri if stable else None,
                                              rollout_run=run_id, fetch_image=self.fetch_image,
                                              model_cache_pvc=self.model_cache_pvc))
        for track in (None, "stable", "canary"):
            self.client.apply(m.render_service(d, track))
        self.client.apply(m.render_service_monitor(d))
        self.client.apply(m.render_pdb(d))
        if stable is not None:  # freeze the stable HPA for the experiment (m.render_hpa says how)
            self.client.apply(m.render_hpa(d, frozen_at=self._stable_replicas()))
        if d.traffic.strategy == "gateway-httproute":
            self.client.apply(m.render_httproute(d, 0))
        self._canary = canary

    def wait_target(self, track: m.Track, manifest: Any) -> WaitTarget:
        return WaitTarget("kubernetes", track, self.identifiers(track, self._version(manifest).version_id))

    def check_ready(self, target: WaitTarget) -> Readiness:
        return check_ready(self.client, target.identifiers)

    def canary_gone(self) -> str | None:
        obj = self._get("Deployment", "canary")
        if obj is None:
            return f"the canary Deployment {m.object_name(self.deployment, 'canary')} is gone"
        version_id = obj["metadata"].get("labels", {}).get(m.LABEL_VERSION_ID, "")
        if not ready_pods(self.client, self.identifiers("canary", version_id)):
            return f"no Ready pod of the canary Deployment {m.object_name(self.deployment, 'canary')} is left"
        return None

    def set_weights(self, canary_percent: int) -> None:
        d = self.deployment
        if d.traffic.strategy == "gateway-httproute":
            self.client.apply(m.render_httproute(d, canary_percent))
            return
        # replica ratio behind the one Service: resize both tracks (the canary first, so capacity never dips).
        # The total is what both tracks hold now, so it stays the same from step to step (a stable track at 0
        # counts as 0; a missing one, on a first rollout, as the deployment's size).
        current = {track: self._get("Deployment", track) for track in m.TRACKS}
        default = {"stable": d.replicas, "canary": d.rollout.canary_replicas}
        total = sum(int(obj["spec"].get("replicas") or 0) if obj is not None else default[track]
                    for track, obj in current.items())
        stable_n, canary_n = m.replica_split(total, canary_percent)
        for track, n in (("canary", canary_n), ("stable", max(stable_n, 0))):
            if current[track] is not None:
                self.client.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                                   "metadata": {"name": m.object_name(d, track), "namespace": d.namespace},
                                   "spec": {"replicas": n}})

    def endpoints(self) -> tuple[str | None, str]:
        return (self.service_url("stable") if self.stable_version() else None), self.service_url("canary")

    def begin_promote(self, manifest: Any, keep: tuple[int, float] | None = None) -> bool:
        """Move the stable Deployment to the new version (rolling update, maxUnavailable 0); traffic stays
        on the canary until `finish_promote`. True: the stable track must be waited for. With `keep` (replicas,
        until) the replaced version first gets its own Deployment, NAME-previous (gateway-httproute only)."""
        d = self.deployment
        new = self._version(manifest)
        old = self.stable_version()
        kept = old if old != new.manifest_uri else self.previous_version()  # a retry: the stable moved already
        if keep and keep[0] > 0 and kept and d.traffic.strategy == "gateway-httproute":
            self._keep(kept, replicas=keep[0], until=keep[1])
        if old != new.manifest_uri:  # else a retry after the patch
            self.client.apply(m.render_deployment(d, self.profile, "stable", new, replicas=self._stable_replicas(),
                                                  previous_version=old, fetch_image=self.fetch_image,
                                                  model_cache_pvc=self.model_cache_pvc))
        return True

    def finish_promote(self) -> None:
        """Weights back to the (new) stable, canary removed, HPA unfrozen; a kept copy of the version the stable
        now serves (the one a warm roll back routed to) is deleted."""
        d = self.deployment
        if d.traffic.strategy == "gateway-httproute":
            self.client.apply(m.render_httproute(d, 0))
        self.client.delete("Deployment", m.object_name(d, "canary"), d.namespace)
        copy = self.warm_copy()
        if copy is not None and copy.version == self.stable_version():
            self.release_warm()
        self.client.apply(m.render_hpa(d))

    # --- warm roll back ------------------------------------------------------------------------
    def _keep(self, uri: str, *, replicas: int, until: float) -> None:
        """NAME-previous serving `uri`: the stable Deployment's pod spec as it still is (its GPUs, tensor
        parallelism and arguments), under the track label `previous`. A retry after the stable moved on finds the
        copy there already and only sets its size and time."""
        d = self.deployment
        name = m.object_name(d, "previous")
        copy, stable = self.warm_copy(), self.stable_object()
        meta = {"name": name, "namespace": d.namespace,
                "annotations": {m.ANNOTATION_VERSION: uri, m.ANNOTATION_KEEP_UNTIL: f"{until:.0f}"}}
        if copy is not None and copy.version == uri:
            self.client.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                               "spec": {"replicas": replicas}})
        elif stable is not None and stable["metadata"].get("annotations", {}).get(m.ANNOTATION_VERSION) == uri:
            spec = copy_module.deepcopy(stable["spec"])
            spec["replicas"] = replicas
            spec["selector"]["matchLabels"][m.LABEL_TRACK] = "previous"
            template = spec["template"]
            template["metadata"]["labels"][m.LABEL_TRACK] = "previous"
            for constraint in template["spec"].get("topologySpreadConstraints") or []:
                constraint.get("labelSelector", {}).get("matchLabels", {})[m.LABEL_TRACK] = "previous"
            labels = dict(template["metadata"]["labels"])
            self.client.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": {**meta, "labels": labels}, "spec": spec})
        else:
            log.warning("%s: the stable Deployment no longer serves %s; nothing is kept", d.name, uri)
            return
        self.client.apply(m.render_service(d, "previous"))

    def warm_copy(self) -> WarmCopy | None:
        obj = self._get("Deployment", "previous")
        if obj is None:
            return None
        meta = obj["metadata"]
        version_id = (meta.get("labels") or {}).get(m.LABEL_VERSION_ID, "")
        return WarmCopy(meta.get("annotations", {}).get(m.ANNOTATION_VERSION, ""),
                        float(meta.get("annotations", {}).get(m.ANNOTATION_KEEP_UNTIL) or 0),
                        int(obj.get("spec", {}).get("replicas") or 0), self.service_url("previous"),
                        WaitTarget("kubernetes", "previous", self.identifiers("previous", version_id)))

    def restore_warm(self, version: str) -> None:
        """All traffic to NAME-previous (its pods run already: no new pod). Idempotent."""
        copy = self.warm_copy()
        if copy is None or copy.version != version:
            raise RuntimeError(f"{self.deployment.name}: no kept Deployment of {version} to route to")
        self.client.apply(m.render_httproute(self.deployment, 0, previous_percent=100))

    def release_warm(self) -> str | None:
        name = m.object_name(self.deployment, "previous")
        return f"Deployment {name}" if self.client.delete("Deployment", name, self.deployment.namespace) else None

    def roll_back(self) -> None:
        """Weights restored to stable, canary removed, HPA unfrozen; the stable Deployment is not touched."""
        d = self.deployment
        if d.traffic.strategy == "gateway-httproute" and self._get("HTTPRoute") is not None:
            self.client.apply(m.render_httproute(d, 0))
        self.client.delete("Deployment", m.object_name(d, "canary"), d.namespace)
        if self.stable_object() is not None:
            self.client.apply(m.render_hpa(d))
