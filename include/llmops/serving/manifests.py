"""Render the Kubernetes objects of a vLLM deployment with a stable and a canary track. Pure dicts.

A deployment with `serving_runtime: tensorrt-llm` gets the same objects and the same pod around a
`trtllm-serve` container instead of vLLM's (serving/trtllm.py: its flags, health and metrics endpoints).

Objects for deployment NAME:
    Deployment   NAME-stable, NAME-canary   pods fetch the version (init container: download from OSS and
                                            verify sha256 against the manifest, into the model-cache claim
                                            when one is configured, keeping files already verified there), then
                                            run vLLM with /models read-only; started once a one-token generation
                                            answers (startupProbe: vLLM's /health stays green on a broken GPU,
                                            vLLM #36960), ready and live on /health
    Service      NAME-stable, NAME-canary   one per track (HTTPRoute backends)
                 NAME                       both tracks (replica-ratio strategy, and the stable URL)
    HPA          NAME-stable                on vLLM's queue (or KV-cache use, or GPU utilisation) through the
                                            metrics adapter; frozen while a canary runs (see render_hpa)
    PDB          NAME-stable                PodDisruptionBudget of the stable track (drains take one pod at a time)
    ServiceMonitor NAME                     Prometheus Operator / ARMS scrape of /metrics through the track
                                            Services only: one target per pod
    HTTPRoute    NAME                       Gateway API weights stable/canary (ACK Gateway with Envoy)
    Deployment   NAME-previous              the replaced stable version kept warm after a promotion (rollout.
    Service      NAME-previous              keep_previous, gateway-httproute only: behind the combined Service
                                            NAME it would take a replica share); `llmops.io/keep-until` says
                                            until when; a warm roll back routes to it, then it is deleted

Zones: each track is ONE Deployment spread over zones and nodes (topologySpreadConstraints), not one
Deployment per zone behind the gateway: the rollout, the HPA and the PDB then each see one stable track,
and the canary's weights need no per-zone split. Spot: vLLM pods stay on on-demand nodes (the spot pools
are tainted) unless the deployment sets `spot: true`; `gpu_placement` is shared with the refresh steps' pods.

Annotations on each Deployment record the version it serves and the one it replaced, so a manual
roll back to the previous version needs no other state.

Pods pass the Pod Security Standards "restricted" profile: they run as uid/gid 10001 (the vLLM image's
default user is root; nothing in it needs root, and HOME points at a writable emptyDir), drop every
capability, forbid privilege escalation, use the RuntimeDefault seccomp profile, mount only emptyDir
and PVC volumes and keep the root filesystem read-only (HOME and /tmp are a size-limited emptyDir). No service-account token is mounted: neither vLLM nor the init container calls the
Kubernetes API (RRSA's OIDC token for OSS is a projected volume the ACK webhook adds on its own). Every
container has CPU and memory requests and limits. Exceptions: none; the pod template's
`llmops.io/pod-security` annotations say so, and a new exception must be recorded there and in the README.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from llmops.artefacts.credentials import KUBERNETES_SECRET
from llmops.canary.metrics import metrics_path
from llmops.config.schema import Deployment, GpuProfile, quantity
from llmops.serving import trtllm
from llmops.settings import TRUSTED_KEYS_ENV

Track = Literal["stable", "canary", "previous"]
TRACKS: tuple[Track, ...] = ("stable", "canary")  # the tracks of a rollout; "previous" is the warm copy

ANNOTATION_VERSION = "llmops.io/version"
ANNOTATION_PREVIOUS_VERSION = "llmops.io/previous-version"
ANNOTATION_ROLLOUT = "llmops.io/rollout-run"
ANNOTATION_KEEP_UNTIL = "llmops.io/keep-until"  # epoch seconds: the kept previous version is released after
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TRACK = "llmops.io/track"
LABEL_VERSION_ID = "llmops.io/version-id"
LABEL_MODEL = "llmops.io/model"
ANNOTATION_POD_SECURITY = "llmops.io/pod-security"
ANNOTATION_HPA_FROZEN = "llmops.io/frozen"
ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"
ANNOTATION_POD_SECURITY_EXCEPTIONS = "llmops.io/pod-security-exceptions"
MODEL_MOUNT = "/models"
HOME_MOUNT = "/home/llmops"
TMP_MOUNT = "/tmp"
# The uid/gid the worker image creates (images/worker/Dockerfile); images without it run fine as this uid.
RUN_AS_USER = 10001
# The init container streams files through sha256: one core and a small buffer are enough.
FETCH_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}}


def restricted_pod_security_context() -> dict[str, Any]:
    """Pod-level settings of the "restricted" Pod Security Standard (shared by step pods and vLLM pods)."""
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container_security_context(*, read_only_root: bool = False) -> dict[str, Any]:
    """Container-level settings of the "restricted" Pod Security Standard; `read_only_root`: the root filesystem
    is read-only too (serving pods: every path they write is a volume)."""
    out = {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "privileged": False,
           "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    if read_only_root:
        out["readOnlyRootFilesystem"] = True
    return out

# The startup probe generates one token (vLLM's /health stays green on a broken GPU, vLLM #36960): a pod is
# started only once it has generated. Any Python in the vLLM image runs it.
_GENERATE_PROBE = (
    "import json,sys,urllib.request as u;"
    "r=u.urlopen(u.Request('http://127.0.0.1:{port}/v1/completions',"
    "data=json.dumps({{'model':'{model}','prompt':'ping','max_tokens':1,'temperature':0}}).encode(),"
    "headers={{'Content-Type':'application/json'}}),timeout=20);"
    "sys.exit(0 if json.load(r).get('choices') else 1)"
)


@dataclass(frozen=True)
class VersionRef:
    """A published artefact version as the cluster sees it."""

    manifest_uri: str
    model: str
    tensor_parallel_size: int = 1
    max_model_len: int | None = None

    @property
    def version_id(self) -> str:
        """A label-safe id of the version (label values are limited to 63 characters)."""
        return hashlib.sha256(self.manifest_uri.encode()).hexdigest()[:12]


def object_name(deployment: Deployment, track: Track | None = None) -> str:
    return f"{deployment.name}-{track}" if track else deployment.name


def labels(deployment: Deployment, track: Track | None = None, version: VersionRef | None = None) -> dict[str, str]:
    out = {LABEL_NAME: deployment.name, LABEL_MANAGED_BY: "llmops", LABEL_MODEL: deployment.model}
    if track:
        out[LABEL_TRACK] = track
    if version:
        out[LABEL_VERSION_ID] = version.version_id
    return out


def _quantity_sum(*values: str) -> str:
    """Kubernetes quantities added up, written in Gi when whole (else bytes): "20Gi" + "200Gi" -> "220Gi"."""
    total = sum(quantity(v) for v in values)
    return f"{int(total // 2**30)}Gi" if total % 2**30 == 0 else str(int(total))


def model_volume(deployment: Deployment, model_cache_pvc: str = "") -> dict[str, Any]:
    """The /models volume: the model-cache claim when one is configured (LLMOPS_MODEL_CACHE_PVC: a version
    fetched once is verified, not downloaded, by every later replica), else an emptyDir the size of
    `resources.model_volume` (each replica downloads the version onto its node's disk)."""
    if model_cache_pvc:
        return {"name": "models", "persistentVolumeClaim": {"claimName": model_cache_pvc}}
    return {"name": "models", "emptyDir": {"sizeLimit": deployment.resources.model_volume}}


def render_deployment(deployment: Deployment, profile: GpuProfile, track: Track, version: VersionRef, *,
                      replicas: int, previous_version: str | None = None, rollout_run: str | None = None,
                      fetch_image: str = "llmops-worker:0.1.0", model_cache_pvc: str = "") -> dict[str, Any]:
    per_replica = profile.resource_per_replica if profile.shared else max(profile.resource_per_replica,
                                                                          version.tensor_parallel_size)
    gpu = {profile.resource_name: str(per_replica)}
    trtllm_runtime = deployment.serving_runtime == trtllm.RUNTIME
    model_dir = (trtllm.model_dir(deployment, version.version_id, MODEL_MOUNT) if trtllm_runtime
                 else f"{MODEL_MOUNT}/{deployment.model}/{version.version_id}")
    annotations = {ANNOTATION_VERSION: version.manifest_uri}
    if previous_version:
        annotations[ANNOTATION_PREVIOUS_VERSION] = previous_version
    if rollout_run:
        annotations[ANNOTATION_ROLLOUT] = rollout_run
    pod_labels = labels(deployment, track, version)
    res = deployment.resources
    # Node disk: the scratch emptyDir (HOME and /tmp: torch, Triton and CUDA-graph caches; the vLLM image's HOME,
    # /root, is not writable as uid 10001 and the root filesystem is read-only), plus the model when it lands
    # on the node rather than on the claim.
    disk = res.ephemeral_storage if model_cache_pvc else _quantity_sum(res.ephemeral_storage, res.model_volume)
    resources = {"requests": {"cpu": res.cpu, "memory": res.memory, "ephemeral-storage": disk, **gpu},
                 "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit, **gpu}}
    # The server only reads the version: /models is read-only for it (the fetch init container writes).
    mounts = [{"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True},
              {"name": "scratch", "mountPath": HOME_MOUNT, "subPath": "home"},
              {"name": "scratch", "mountPath": TMP_MOUNT, "subPath": "tmp"},
              {"name": "shm", "mountPath": "/dev/shm"}]
    if trtllm_runtime:
        server = trtllm.container(deployment, model_path=model_dir, tensor_parallel_size=version.tensor_parallel_size,
                                  max_model_len=version.max_model_len, home=HOME_MOUNT, resources=resources,
                                  security_context=restricted_container_security_context(read_only_root=True),
                                  volume_mounts=mounts)
    else:
        server = _vllm_container(deployment, version, model_dir, resources, mounts)
    pod_spec: dict[str, Any] = {
        "serviceAccountName": deployment.service_account,
        # Neither vLLM nor the fetch init container calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": restricted_pod_security_context(),
        **gpu_placement(profile, spot="prefer" if deployment.spot else "never", patchable=True),
        "topologySpreadConstraints": topology_spread(deployment, track),
        "initContainers": [{
            "name": "fetch-model",
            "image": fetch_image,
            # Files already in /models (a claim shared by every replica) whose size and sha256 match the
            # manifest are kept; the rest is downloaded under per-attempt names and renamed into place, so
            # replicas starting together never see each other's partial files (ArtefactStore.fetch).
            "command": ["python", "-m", "llmops.jobs.fetch", "--manifest-uri", version.manifest_uri,
                        "--dest", model_dir, *fetch_signature_args(deployment)],
            "env": [{"name": "HOME", "value": HOME_MOUNT}, {"name": "TMPDIR", "value": TMP_MOUNT},
                    *fetch_signature_env(deployment)],
            # store credentials (AWS_* / OSS_*) when the Secret exists, else RRSA
            "envFrom": [{"secretRef": {"name": KUBERNETES_SECRET, "optional": True}}],
            "volumeMounts": [{"name": "models", "mountPath": MODEL_MOUNT},
                             {"name": "scratch", "mountPath": HOME_MOUNT, "subPath": "home"},
                             {"name": "scratch", "mountPath": TMP_MOUNT, "subPath": "tmp"}],
            "resources": copy.deepcopy(FETCH_RESOURCES),
            "securityContext": restricted_container_security_context(read_only_root=True),
        }],
        "containers": [server],
        "volumes": [model_volume(deployment, model_cache_pvc),
                    {"name": "scratch", "emptyDir": {"sizeLimit": res.ephemeral_storage}},
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": res.shm}}],
    }
    if deployment.runtime_class_name:
        pod_spec["runtimeClassName"] = deployment.runtime_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": object_name(deployment, track), "namespace": deployment.namespace,
                     "labels": pod_labels, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_NAME: deployment.name, LABEL_TRACK: track}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                # No prometheus.io/* annotations: Prometheus finds the pods through the monitor only
                # (render_service_monitor), so an annotation-driven job never scrapes a pod a second time.
                "metadata": {"labels": pod_labels,
                             "annotations": {ANNOTATION_VERSION: version.manifest_uri,
                                             ANNOTATION_POD_SECURITY: "restricted",
                                             ANNOTATION_POD_SECURITY_EXCEPTIONS: "none"}},
                "spec": pod_spec,
            },
        },
    }


def fetch_signature_args(deployment: Deployment) -> list[str]:
    """The fetch init container verifies the version's signature as pre-flight did (llmops.jobs.fetch)."""
    return ["--require-signature"] if deployment.signing.require_signature else []


def fetch_signature_env(deployment: Deployment) -> list[dict[str, str]]:
    """The deployment's trusted public keys (PEM, not secret) for the fetch init container."""
    keys = deployment.signing.public_keys
    return [{"name": TRUSTED_KEYS_ENV, "value": "\n".join(k.strip() for k in keys) + "\n"}] if keys else []


def _vllm_container(deployment: Deployment, version: VersionRef, model_dir: str, resources: dict[str, Any],
                    mounts: list[dict[str, Any]]) -> dict[str, Any]:
    args = ["--model", model_dir, "--served-model-name", deployment.model, "--host", "0.0.0.0",
            "--port", str(deployment.port), "--tensor-parallel-size", str(version.tensor_parallel_size)]
    if version.max_model_len:
        args += ["--max-model-len", str(version.max_model_len)]
    args += list(deployment.extra_args)
    probe_cmd = _GENERATE_PROBE.format(port=deployment.port, model=deployment.model)
    return {
        "name": "vllm",
        "image": deployment.image,
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": args,
        # USER: uid 10001 has no passwd entry in the vLLM image, and getpass.getuser() (torch's compile caches
        # under /tmp/torchinductor_<user>) raises without it.
        "env": [{"name": "HOME", "value": HOME_MOUNT}, {"name": "TMPDIR", "value": TMP_MOUNT},
                {"name": "USER", "value": "llmops"}],
        "ports": [{"name": "http", "containerPort": deployment.port}],
        "resources": resources,
        "securityContext": restricted_container_security_context(read_only_root=True),
        "volumeMounts": mounts,
        # Loading, compiling and CUDA-graph capture of a large model take minutes: up to 30 min to generate a
        # first token. After that, readiness and liveness ask /health only (cheap, never queued behind requests:
        # a one-token generation under load timed out and took busy pods out of the Service); the rollout's
        # own readiness gate generates on every pod before the track counts as ready (serving.kubernetes).
        "startupProbe": {"exec": {"command": ["python3", "-c", probe_cmd]},
                         "periodSeconds": 10, "timeoutSeconds": 30, "failureThreshold": 180},
        "readinessProbe": {"httpGet": {"path": "/health", "port": deployment.port},
                           "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": deployment.port},
                          "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6},
    }


def render_service(deployment: Deployment, track: Track | None = None) -> dict[str, Any]:
    selector = {LABEL_NAME: deployment.name}
    if track:
        selector[LABEL_TRACK] = track
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": object_name(deployment, track), "namespace": deployment.namespace,
                     "labels": labels(deployment, track)},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": deployment.port,
                                                  "targetPort": "http", "protocol": "TCP"}]},
    }


#: autoscaling.metric -> (the Pods metric the HPA asks the metrics adapter for, the Prometheus series it is
#: renamed from by deploy/ack/templates/55-metrics-adapter-values.yaml, the default per-pod target).
HPA_METRICS: dict[str, tuple[str, str, float]] = {
    "queue": ("vllm_num_requests_waiting", "vllm:num_requests_waiting", 5.0),
    "kv-cache": ("vllm_kv_cache_usage_perc", "vllm:kv_cache_usage_perc", 0.8),
    "gpu-utilization": ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_UTIL", 80.0),
}


def _quantity(value: float) -> str:
    """A metric target as a Kubernetes quantity: 5 -> "5", 0.8 -> "800m"."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def hpa_metrics(runtime: str) -> dict[str, tuple[str, str, float]]:
    """The HPA's metric per `autoscaling.metric` for a serving runtime: TensorRT-LLM's are trtllm_* names."""
    return trtllm.HPA_METRICS if runtime == trtllm.RUNTIME else HPA_METRICS


def render_hpa(deployment: Deployment, *, frozen_at: int | None = None) -> dict[str, Any]:
    """HPA of the stable track, on `deployment.autoscaling`'s per-pod metric.

    The HPA reads Pods metrics of the pods its target's selector matches (name + track stable), so canary pods
    never feed it. While a canary runs it is frozen (`frozen_at`: the stable track's current replicas): both
    scaling directions are Disabled and the bounds (1 .. max(max_replicas, current)) are wide enough that the
    controller's min/max clamp never moves the track either, so the stable track neither grows into GPUs the
    canary needs nor fights the replica-ratio strategy resizing it (down to 0 at 100 %, where the HPA stands
    aside by itself). Frozen and thawed render the same keys, so a merge patch lifts the freeze completely.
    """
    scaling = deployment.autoscaling
    metric, _, default_target = hpa_metrics(deployment.serving_runtime)[scaling.metric]
    frozen = frozen_at is not None
    select = "Disabled" if frozen else "Max"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": object_name(deployment, "stable"), "namespace": deployment.namespace,
                     "labels": labels(deployment, "stable"),
                     "annotations": {ANNOTATION_HPA_FROZEN: "true" if frozen else "false"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": object_name(deployment, "stable")},
            "minReplicas": 1 if frozen else deployment.replicas,
            "maxReplicas": max(deployment.max_replicas, frozen_at or 0),
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": metric},
                "target": {"type": "AverageValue", "averageValue": _quantity(scaling.target or default_target)}}}],
            # A GPU replica takes minutes to start: add two at most per minute, remove one per two minutes after
            # the stabilisation window.
            "behavior": {
                "scaleUp": {"selectPolicy": select, "stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                "scaleDown": {"selectPolicy": select,
                              "stabilizationWindowSeconds": scaling.scale_down_stabilization_s,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
            },
        },
    }


def render_pdb(deployment: Deployment) -> dict[str, Any]:
    """PodDisruptionBudget of the stable track: a node drain or node-pool upgrade takes `max_unavailable` pods at
    a time. A pod that is not Ready anyway may always be evicted (a broken replica never blocks a drain). It
    cannot stop a spot reclaim or a zone outage: the zone spread is what keeps replicas elsewhere then."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": object_name(deployment, "stable"), "namespace": deployment.namespace,
                     "labels": labels(deployment, "stable")},
        "spec": {"maxUnavailable": deployment.availability.max_unavailable,
                 "selector": {"matchLabels": {LABEL_NAME: deployment.name, LABEL_TRACK: "stable"}},
                 "unhealthyPodEvictionPolicy": "AlwaysAllow"},
    }


def topology_spread(deployment: Deployment, track: Track) -> list[dict[str, Any]]:
    """Spread a track's pods over zones, then nodes. `pod-template-hash` keeps a rolling update's new pods
    spread among themselves instead of being counted with the pods they replace."""
    selector = {"matchLabels": {LABEL_NAME: deployment.name, LABEL_TRACK: track}}
    availability = deployment.availability
    return [{"topologyKey": key, "maxSkew": spread.max_skew, "whenUnsatisfiable": spread.when_unsatisfiable,
             "labelSelector": copy.deepcopy(selector), "matchLabelKeys": ["pod-template-hash"]}
            for key, spread in ((ZONE_KEY, availability.zone_spread), (HOSTNAME_KEY, availability.node_spread))]


def gpu_placement(profile: GpuProfile, *, spot: Literal["never", "prefer", "require"],
                  patchable: bool = False) -> dict[str, Any]:
    """nodeSelector, tolerations and affinity of a pod on `profile`'s nodes.

    spot "never": on-demand nodes only (the spot pool's taint keeps the pod off it); "prefer": tolerate the taint
    and prefer spot nodes, falling back to on-demand ones; "require": spot nodes only. A profile without a spot
    pool always gives on-demand placement. `patchable`: always render the affinity key (empty when unused), so
    a merge patch of a Deployment that stops preferring spot removes the old preference.
    """
    tolerations = [t.model_dump(exclude_none=True) for t in profile.tolerations]
    preferred: list[dict[str, Any]] = []
    node_affinity: dict[str, Any] = {}
    pool = profile.spot
    if pool is not None and spot != "never":
        tolerations.append(pool.taint.toleration().model_dump(exclude_none=True))
        ((key, value),) = pool.node_label.items()
        term = {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}
        if spot == "require":
            node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [term]}
        else:
            preferred.append({"weight": 100, "preference": term})
    if preferred or patchable:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    out: dict[str, Any] = {"nodeSelector": dict(profile.node_selector), "tolerations": tolerations}
    if node_affinity:
        out["affinity"] = {"nodeAffinity": node_affinity}
    return out


def step_placement(profile: GpuProfile, *, interruptible: bool) -> dict[str, Any]:
    """`gpu_placement` of a job pod: interruptible work (model_refresh's quantize and validate, which a retry
    resumes from the model cache) goes where the profile's spot pool says (`refresh_steps`); the rest on-demand."""
    spot = profile.spot.refresh_steps if interruptible and profile.spot is not None else "never"
    return gpu_placement(profile, spot=spot)


def render_service_monitor(deployment: Deployment) -> dict[str, Any]:
    """Prometheus scrapes each pod once: through the track Services (NAME-stable, NAME-canary), never the combined
    Service NAME, which selects the same pods (a second target per pod doubled every `sum by (pod)` the metrics
    adapter computes for the HPA). The combined Service has no track label; the selector requires one."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": object_name(deployment), "namespace": deployment.namespace,
                     "labels": labels(deployment)},
        "spec": {
            "selector": {"matchLabels": {LABEL_NAME: deployment.name, LABEL_MANAGED_BY: "llmops"},
                         "matchExpressions": [{"key": LABEL_TRACK, "operator": "In", "values": list(TRACKS)}]},
            "endpoints": [{"port": "http", "path": metrics_path(deployment.serving_runtime), "interval": "15s"}],
        },
    }


def render_httproute(deployment: Deployment, canary_percent: int, *, previous_percent: int = 0) -> dict[str, Any]:
    """Weights stable/canary; `previous_percent` > 0 adds the kept previous version (a warm roll back)."""
    if not 0 <= canary_percent <= 100 or not 0 <= previous_percent <= 100 - canary_percent:
        raise ValueError(f"canary_percent {canary_percent} and previous_percent {previous_percent} must be within "
                         "0..100 together")
    traffic = deployment.traffic
    spec: dict[str, Any] = {
        "parentRefs": [{"name": traffic.gateway_name or "gateway",
                        "namespace": traffic.gateway_namespace or deployment.namespace}],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {"name": object_name(deployment, "stable"), "port": deployment.port,
                 "weight": 100 - canary_percent - previous_percent},
                {"name": object_name(deployment, "canary"), "port": deployment.port, "weight": canary_percent},
            ],
        }],
    }
    if previous_percent:
        spec["rules"][0]["backendRefs"].append(
            {"name": object_name(deployment, "previous"), "port": deployment.port, "weight": previous_percent})
    if traffic.hostname:
        spec["hostnames"] = [traffic.hostname]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": object_name(deployment), "namespace": deployment.namespace,
                     "labels": labels(deployment), "annotations": {"llmops.io/canary-percent": str(canary_percent)}},
        "spec": spec,
    }


def replica_split(total: int, canary_percent: int) -> tuple[int, int]:
    """Stable and canary replicas behind one Service for `canary_percent` (replica-ratio strategy).

    Each track keeps at least one replica while the canary runs; at 100 % the stable track is 0.
    """
    if canary_percent >= 100:
        return 0, total
    if canary_percent <= 0:
        return total, 0
    canary = min(total - 1, max(1, round(total * canary_percent / 100)))
    return total - canary, canary


def render_all(deployment: Deployment, profile: GpuProfile, *, stable: VersionRef | None, canary: VersionRef | None,
               canary_percent: int, stable_replicas: int | None = None, canary_replicas: int = 1,
               rollout_run: str | None = None, fetch_image: str = "llmops-worker:0.1.0",
               model_cache_pvc: str = "") -> list[dict[str, Any]]:
    """Every object of the deployment for one moment of a rollout (what `kubectl apply` would get).
    `model_cache_pvc`: the claim serving pods mount at /models (LLMOPS_MODEL_CACHE_PVC; empty: an emptyDir)."""
    stable_replicas = stable_replicas or deployment.replicas
    if deployment.traffic.strategy == "replica-ratio" and canary is not None:
        stable_replicas, canary_replicas = replica_split(stable_replicas + canary_replicas, canary_percent)
    objects: list[dict[str, Any]] = []
    if stable is not None:
        objects.append(render_deployment(deployment, profile, "stable", stable, replicas=stable_replicas,
                                         fetch_image=fetch_image, model_cache_pvc=model_cache_pvc))
    if canary is not None:
        objects.append(render_deployment(deployment, profile, "canary", canary, replicas=canary_replicas,
                                         previous_version=stable.manifest_uri if stable else None,
                                         rollout_run=rollout_run, fetch_image=fetch_image,
                                         model_cache_pvc=model_cache_pvc))
    objects += [render_service(deployment), render_service(deployment, "stable"), render_service(deployment, "canary"),
                render_hpa(deployment, frozen_at=stable_replicas if canary is not None else None),
                render_pdb(deployment), render_service_monitor(deployment)]
    if deployment.traffic.strategy == "gateway-httproute":
        objects.append(render_httproute(deployment, canary_percent if canary is not None else 0))
    return objects
