"""Rendered vLLM objects pass kubernetes-validate (built-in kinds) against the Kubernetes version ACK runs
(deploy/ack/values.yaml) and carry what the rollout relies on: zone and node spread, the stable track's
PodDisruptionBudget, an HPA on vLLM's queue that a canary freezes, on-demand placement unless spot is opted in."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from pydantic import ValidationError

from llmops.config import load_registry
from llmops.config.schema import Autoscaling, Availability, TopologySpread
from llmops.serving.manifests import (
    ANNOTATION_PREVIOUS_VERSION,
    ANNOTATION_VERSION,
    HPA_METRICS,
    VersionRef,
    render_all,
    render_hpa,
    render_httproute,
    render_pdb,
    replica_split,
    step_placement,
)
from support.ack import KUBERNETES_VERSION

K8S_VERSION = KUBERNETES_VERSION
# kubernetes-validate bundles only built-in kinds; ServiceMonitor and HTTPRoute are checked against the CRDs
# vendored in tests/unit/data/crds/ (prometheus-operator v0.93.0, Gateway API v1.6.1: support/crds.py).

STABLE = VersionRef("oss://models/tiny-llama/aaa/vllm-llmcompressor-w8a8/manifest.json", "tiny-llama", 1, 512)
CANARY = VersionRef("oss://models/tiny-llama/bbb/vllm-llmcompressor-w8a8/manifest.json", "tiny-llama", 1, 512)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def validate(obj):
    from support.crds import is_custom, validate_custom

    if is_custom(obj):
        validate_custom(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("profile", ["a10", "a10-shared", "h20"])
@pytest.mark.parametrize("strategy", ["gateway-httproute", "replica-ratio"])
@pytest.mark.parametrize("name", ["tiny-llama-chat", "tiny-llama-trtllm"])  # vLLM and TensorRT-LLM
def test_every_rendered_object_validates(registry, profile, strategy, name):
    deployment = registry.deployment(name).model_copy(
        update={"traffic": registry.deployment(name).traffic.model_copy(update={"strategy": strategy})})
    objects = render_all(deployment, registry.gpu_profile(profile), stable=STABLE, canary=CANARY, canary_percent=10,
                         rollout_run="manual__1")
    kinds = sorted(o["kind"] for o in objects)
    expected = ["Deployment", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Service",
                "Service", "ServiceMonitor"] + (["HTTPRoute"] if strategy == "gateway-httproute" else [])
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
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "15s"  # a misspelt field (interval) is refused
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


def test_pods_fetch_and_verify_then_generate_before_they_count_as_started(registry):
    deployment, profile = registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10")
    stable, canary = render_all(deployment, profile, stable=STABLE, canary=CANARY, canary_percent=10)[:2]
    pod = canary["spec"]["template"]["spec"]
    assert "llmops.jobs.fetch" in pod["initContainers"][0]["command"]
    assert CANARY.manifest_uri in pod["initContainers"][0]["command"]
    server = pod["containers"][0]
    # a real generation once, at startup, with a generous budget; then readiness and liveness on /health only
    startup = server["startupProbe"]
    assert "/v1/completions" in " ".join(startup["exec"]["command"]) and "max_tokens" in " ".join(
        startup["exec"]["command"])
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", probe
        assert server[probe]["timeoutSeconds"] < server[probe]["periodSeconds"], probe
    resources = server["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "1", "cpu": deployment.resources.cpu_limit,
                                   "memory": deployment.resources.memory_limit}
    assert resources["requests"] == {"nvidia.com/gpu": "1", "cpu": deployment.resources.cpu,
                                     "memory": deployment.resources.memory, "ephemeral-storage": "220Gi"}
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
    frozen, thawed = during["HorizontalPodAutoscaler"]["spec"], after["HorizontalPodAutoscaler"]["spec"]
    assert [frozen["behavior"][d]["selectPolicy"] for d in ("scaleUp", "scaleDown")] == ["Disabled", "Disabled"]
    assert [thawed["behavior"][d]["selectPolicy"] for d in ("scaleUp", "scaleDown")] == ["Max", "Max"]
    assert (thawed["minReplicas"], thawed["maxReplicas"]) == (deployment.replicas, deployment.max_replicas)
    # same keys frozen and thawed: the merge patch that thaws it leaves nothing of the freeze behind
    assert _keys(frozen) == _keys(thawed)
    weights = [b["weight"] for b in during["HTTPRoute"]["spec"]["rules"][0]["backendRefs"]]
    assert weights == [50, 50]
    assert [b["weight"] for b in after["HTTPRoute"]["spec"]["rules"][0]["backendRefs"]] == [100, 0]


def _keys(obj, prefix=""):
    if isinstance(obj, dict):
        return {k for key, value in obj.items() for k in _keys(value, f"{prefix}.{key}")} | {prefix}
    if isinstance(obj, list):
        return {k for item in obj for k in _keys(item, prefix + "[]")}
    return {prefix}


def hpa_moves(spec: dict, current: int) -> bool:
    """Whether the HPA controller would change `current` replicas whatever the metric says (its rules in
    pkg/controller/podautoscaler: a target at 0 replicas is left alone, then min/max clamp, then the behaviour)."""
    if current == 0:
        return False
    if not spec["minReplicas"] <= current <= spec["maxReplicas"]:
        return True
    return any(spec["behavior"][d]["selectPolicy"] != "Disabled" for d in ("scaleUp", "scaleDown"))


@pytest.mark.parametrize("strategy", ["gateway-httproute", "replica-ratio"])
@pytest.mark.parametrize("stable_replicas", [1, 2, 6])
def test_a_frozen_hpa_never_moves_the_stable_track_the_rollout_sizes(registry, strategy, stable_replicas):
    """The canary is not the HPA's target and its pods are not the HPA's (the target's selector excludes them);
    the stable track keeps every size the rollout gives it, down to 0 at 100 % with replica-ratio."""
    base = registry.deployment("tiny-llama-chat")
    deployment = base.model_copy(update={"traffic": base.traffic.model_copy(update={"strategy": strategy})})
    profile = registry.gpu_profile("a10")
    for percent in (*deployment.rollout.steps, 1, 99):
        objects = {o["metadata"]["name"] + o["kind"]: o for o in render_all(
            deployment, profile, stable=STABLE, canary=CANARY, canary_percent=percent,
            stable_replicas=stable_replicas)}
        hpa = objects["tiny-llama-chat-stableHorizontalPodAutoscaler"]
        stable = objects["tiny-llama-chat-stableDeployment"]
        canary = objects["tiny-llama-chat-canaryDeployment"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == stable["metadata"]["name"]
        assert not hpa_moves(hpa["spec"], stable["spec"]["replicas"]), (percent, stable["spec"]["replicas"])
        selector = stable["spec"]["selector"]["matchLabels"]
        canary_labels = canary["spec"]["template"]["metadata"]["labels"]
        assert any(canary_labels.get(k) != v for k, v in selector.items()), "canary pods would feed the HPA"
    thawed = render_hpa(deployment)
    assert hpa_moves(thawed["spec"], deployment.replicas)


@pytest.mark.parametrize(("metric", "target", "name", "value"), [
    ("queue", None, "vllm_num_requests_waiting", "5"), ("queue", 3, "vllm_num_requests_waiting", "3"),
    ("kv-cache", None, "vllm_kv_cache_usage_perc", "800m"), ("kv-cache", 0.65, "vllm_kv_cache_usage_perc", "650m"),
    ("gpu-utilization", None, "DCGM_FI_DEV_GPU_UTIL", "80")])
def test_the_hpa_scales_on_the_configured_per_pod_metric(registry, metric, target, name, value):
    base = registry.deployment("tiny-llama-chat")
    deployment = base.model_copy(update={"autoscaling": Autoscaling(metric=metric, target=target)})
    hpa = render_hpa(deployment)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": value}}}]
    assert HPA_METRICS[metric][0] == name
    validate(hpa)


def test_the_default_hpa_scales_on_the_servers_queue(registry):
    queue = {"vllm": "vllm_num_requests_waiting", "tensorrt-llm": "trtllm_num_requests_waiting"}
    for deployment in registry.deployments.values():
        assert deployment.autoscaling.metric == "queue"
        assert render_hpa(deployment)["spec"]["metrics"][0]["pods"]["metric"]["name"] == \
            queue[deployment.serving_runtime]


@pytest.mark.parametrize(("metric", "target"), [("kv-cache", 80), ("gpu-utilization", 800)])
def test_an_out_of_range_target_is_refused_naming_the_fix(metric, target):
    with pytest.raises(ValidationError, match="fix: write e.g."):
        Autoscaling(metric=metric, target=target)


def test_each_track_spreads_over_zones_then_nodes(registry):
    deployment, profile = registry.deployment("tiny-llama-chat"), registry.gpu_profile("h20")
    for obj in render_all(deployment, profile, stable=STABLE, canary=CANARY, canary_percent=10):
        if obj["kind"] != "Deployment":
            continue
        template = obj["spec"]["template"]
        spread = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
        assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        zone, node = spread["topology.kubernetes.io/zone"], spread["kubernetes.io/hostname"]
        assert (zone["maxSkew"], zone["whenUnsatisfiable"]) == (1, "DoNotSchedule")  # survives a zone
        assert (node["maxSkew"], node["whenUnsatisfiable"]) == (1, "ScheduleAnyway")
        for constraint in spread.values():  # counts this track's pods, not the other track's
            assert constraint["labelSelector"]["matchLabels"] == obj["spec"]["selector"]["matchLabels"]
            assert constraint["matchLabelKeys"] == ["pod-template-hash"]
            assert all(template["metadata"]["labels"][k] == v
                       for k, v in constraint["labelSelector"]["matchLabels"].items())
    relaxed = deployment.model_copy(update={"availability": Availability(
        zone_spread=TopologySpread(max_skew=2, when_unsatisfiable="ScheduleAnyway"), max_unavailable=2)})
    (stable,) = [o for o in render_all(relaxed, profile, stable=STABLE, canary=None, canary_percent=0)
                 if o["kind"] == "Deployment"]
    zone = stable["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert (zone["maxSkew"], zone["whenUnsatisfiable"]) == (2, "ScheduleAnyway")
    assert render_pdb(relaxed)["spec"]["maxUnavailable"] == 2


def test_the_stable_track_alone_has_a_disruption_budget(registry):
    deployment, profile = registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10")
    objects = render_all(deployment, profile, stable=STABLE, canary=CANARY, canary_percent=10)
    (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    stable, canary = (o for o in objects if o["kind"] == "Deployment")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector == stable["spec"]["selector"]["matchLabels"]
    assert any(canary["spec"]["template"]["metadata"]["labels"].get(k) != v for k, v in selector.items())
    assert pdb["spec"]["maxUnavailable"] == deployment.availability.max_unavailable == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # a broken replica never blocks a drain
    validate(pdb)


def _placement(obj: dict) -> tuple[list[dict], list[dict]]:
    spec = obj["spec"]["template"]["spec"]
    preferred = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    return spec["tolerations"], preferred


def test_serving_stays_on_demand_unless_the_deployment_opts_into_spot(registry):
    base, profile = registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10")
    taint = profile.spot.taint
    on_demand = render_all(base, profile, stable=STABLE, canary=CANARY, canary_percent=10)[0]
    tolerations, preferred = _placement(on_demand)
    assert base.spot is False
    assert all(t["key"] != taint.key for t in tolerations) and preferred == []
    spot = render_all(base.model_copy(update={"spot": True}), profile, stable=STABLE, canary=CANARY,
                      canary_percent=10)
    for obj in spot[:2]:
        tolerations, preferred = _placement(obj)
        assert {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect} in tolerations
        ((key, value),) = profile.spot.node_label.items()
        assert preferred == [{"weight": 100, "preference": {"matchExpressions": [
            {"key": key, "operator": "In", "values": [value]}]}}]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in obj["spec"]["template"]["spec"]["affinity"][
            "nodeAffinity"], "falls back to on-demand nodes"
        validate(obj)
    # a profile without a spot pool: nothing to opt into
    shared = registry.gpu_profile("a10-shared")
    assert shared.spot is None
    assert _placement(render_all(base.model_copy(update={"spot": True}), shared, stable=STABLE, canary=None,
                                 canary_percent=0)[0]) == ([t.model_dump(exclude_none=True)
                                                             for t in shared.tolerations], [])


@pytest.mark.parametrize("mode", ["never", "prefer", "require"])
def test_refresh_steps_go_where_the_profile_spot_pool_says(registry, mode):
    profile = registry.gpu_profile("h20")
    profile = profile.model_copy(update={"spot": profile.spot.model_copy(update={"refresh_steps": mode})})
    placement = step_placement(profile, interruptible=True)
    spot_toleration = profile.spot.taint.toleration().model_dump(exclude_none=True)
    assert (spot_toleration in placement["tolerations"]) is (mode != "never")
    node_affinity = placement.get("affinity", {}).get("nodeAffinity", {})
    assert bool(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution")) is (mode == "prefer")
    assert ("requiredDuringSchedulingIgnoredDuringExecution" in node_affinity) is (mode == "require")
    assert placement["nodeSelector"] == profile.node_selector
    assert step_placement(profile, interruptible=False) == {"nodeSelector": profile.node_selector,
                                                            "tolerations": [t.model_dump(exclude_none=True)
                                                                            for t in profile.tolerations]}


def test_a_deployment_opting_into_spot_needs_a_profile_with_a_spot_pool(tmp_path):
    import shutil

    from llmops.errors import ConfigError

    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "include" / "config", config)
    text = (config / "deployments.yaml").read_text()
    assert "\n    spot: false\n" in text
    (config / "deployments.yaml").write_text(text.replace("gpu_profile: a10\n", "gpu_profile: a10-shared\n")
                                             .replace("\n    spot: false\n", "\n    spot: true\n"))
    with pytest.raises(ConfigError, match=r"deployments\[tiny-llama-chat\]\.spot.*a10-shared has no spot pool"):
        load_registry(config)


@pytest.mark.parametrize(("total", "percent", "expected"), [
    (3, 10, (2, 1)), (3, 50, (1, 2)), (3, 100, (0, 3)), (3, 0, (3, 0)), (2, 90, (1, 1)), (10, 30, (7, 3))])
def test_replica_split_keeps_both_tracks_alive_until_100(total, percent, expected):
    assert replica_split(total, percent) == expected


def _pod(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def _mounts(container: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in container["volumeMounts"]}


@pytest.mark.parametrize("name", ["tiny-llama-chat", "tiny-llama-trtllm"])
def test_serving_pods_mount_the_model_cache_claim_read_only_when_one_is_configured(registry, name):
    deployment = registry.deployment(name)
    profile = registry.gpu_profile(deployment.gpu_profile)
    for obj in render_all(deployment, profile, stable=STABLE, canary=CANARY, canary_percent=10,
                          model_cache_pvc="llmops-model-cache")[:2]:
        spec = _pod(obj)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["models"] == {"name": "models", "persistentVolumeClaim": {"claimName": "llmops-model-cache"}}
        (fetch,), (server,) = spec["initContainers"], spec["containers"]
        assert _mounts(fetch)["/models"].get("readOnly") is not True, "the init container fills the cache"
        assert _mounts(server)["/models"]["readOnly"] is True, "replicas only read the shared cache"
        # the model is not on the node's disk: only scratch space is requested
        assert server["resources"]["requests"]["ephemeral-storage"] == deployment.resources.ephemeral_storage
        validate(obj)


def test_without_a_claim_the_model_volume_is_a_size_limited_empty_dir_that_is_requested(registry):
    resources = registry.deployment("tiny-llama-chat").resources.model_copy(
        update={"model_volume": "64Gi", "ephemeral_storage": "10Gi", "shm": "16Gi"})
    deployment = registry.deployment("tiny-llama-chat").model_copy(update={"resources": resources})
    (obj,) = [o for o in render_all(deployment, registry.gpu_profile("a10"), stable=STABLE, canary=None,
                                    canary_percent=0) if o["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in _pod(obj)["volumes"]}
    assert volumes["models"]["emptyDir"] == {"sizeLimit": "64Gi"}
    assert volumes["scratch"]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert all("sizeLimit" in v["emptyDir"] for v in volumes.values() if "emptyDir" in v)
    (server,) = _pod(obj)["containers"]
    assert server["resources"]["requests"]["ephemeral-storage"] == "74Gi"
    assert _mounts(server)["/models"]["readOnly"] is True


@pytest.mark.parametrize("name", ["tiny-llama-chat", "tiny-llama-trtllm"])
def test_the_root_filesystem_is_read_only_and_every_written_path_is_a_volume(registry, name):
    deployment = registry.deployment(name)
    (obj,) = [o for o in render_all(deployment, registry.gpu_profile(deployment.gpu_profile), stable=STABLE,
                                    canary=None, canary_percent=0) if o["kind"] == "Deployment"]
    spec = _pod(obj)
    for container in spec["initContainers"] + spec["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, container["name"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        writable = {path for path, mount in _mounts(container).items() if not mount.get("readOnly")}
        assert {env["HOME"], "/tmp"} <= writable, container["name"]
    assert "/dev/shm" in _mounts(spec["containers"][0])


def test_shared_memory_and_runtime_class_are_settings(registry):
    base = registry.deployment("tiny-llama-chat")
    (default,) = [o for o in render_all(base, registry.gpu_profile("a10"), stable=STABLE, canary=None,
                                        canary_percent=0) if o["kind"] == "Deployment"]
    assert {v["name"]: v for v in _pod(default)["volumes"]}["shm"]["emptyDir"]["sizeLimit"] == "20Gi"
    assert "runtimeClassName" not in _pod(default)
    nvidia = base.model_copy(update={"runtime_class_name": "nvidia"})
    (obj,) = [o for o in render_all(nvidia, registry.gpu_profile("a10"), stable=STABLE, canary=None,
                                    canary_percent=0) if o["kind"] == "Deployment"]
    assert _pod(obj)["runtimeClassName"] == "nvidia"
    validate(obj)


@pytest.mark.parametrize("name", ["tiny-llama-chat", "tiny-llama-trtllm"])
def test_prometheus_scrapes_each_pod_once_through_the_track_services(registry, name):
    """The monitor selects the track Services and not the combined one, which holds the same pods (two targets per
    pod doubled the adapter's `sum by (pod)`: the HPA scaled at half its target); no pod asks for an
    annotation-driven scrape on top."""
    from support.kube_selectors import selects

    deployment = registry.deployment(name)
    objects = render_all(deployment, registry.gpu_profile(deployment.gpu_profile), stable=STABLE, canary=CANARY,
                         canary_percent=10)
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    services = [o for o in objects if o["kind"] == "Service"]
    scraped = [s for s in services if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert sorted(s["metadata"]["name"] for s in scraped) == [f"{deployment.name}-canary", f"{deployment.name}-stable"]
    for pod_template in (o["spec"]["template"] for o in objects if o["kind"] == "Deployment"):
        targets = [s for s in scraped if selects({"matchLabels": s["spec"]["selector"]},
                                                 pod_template["metadata"]["labels"])]
        assert len(targets) == 1, pod_template["metadata"]["labels"]
        assert not any(k.startswith("prometheus.io/") for k in pod_template["metadata"]["annotations"])


def test_every_rendered_name_is_valid_for_its_kind_up_to_the_longest_name_config_allows(registry):
    """Services are DNS-1035 labels (the API server refused `7b-chat`'s Services); labels and port names have their
    own rules. Checked for the registry's deployments and for the longest name the registry accepts."""
    from support.kube_names import name_problems

    longest = registry.deployment("tiny-llama-chat").model_copy(update={"name": "a" + "-b" * 25 + "c"})
    assert len(longest.name) == 52
    rendered = []
    for deployment in [*registry.deployments.values(), longest]:
        for strategy in ("gateway-httproute", "replica-ratio"):
            d = deployment.model_copy(update={"traffic": deployment.traffic.model_copy(update={"strategy": strategy})})
            rendered += render_all(d, registry.gpu_profile(d.gpu_profile), stable=STABLE, canary=CANARY,
                                   canary_percent=10, rollout_run="manual__2026-12-04T00:00:00+00:00",
                                   model_cache_pvc="llmops-model-cache")
    assert [p for obj in rendered for p in name_problems(obj)] == []
    # and the checker fails on the name that used to pass config validation
    service = next(o for o in rendered if o["kind"] == "Service")
    assert name_problems({**service, "metadata": {**service["metadata"], "name": "7b-chat-canary"}})
