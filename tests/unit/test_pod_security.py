"""Every pod the project renders passes the Pod Security Standards "restricted" profile (tests/support/pod_security).

Checked: every serving object (both tracks' Deployments with their fetch init container, Services, HPA,
ServiceMonitor, HTTPRoute) for every GPU profile and traffic strategy, and the step pod of every heavy step of
the DAGs as the DAGs build it on runtime `kubernetes` (each planned item's GPU profile and image for
model_refresh, each knowledge base for kb_reindex). The checker itself is shown to fail on the pods as they
were rendered before this profile was applied, and on each single control removed.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import kubernetes_validate
import pytest
from airflow.sdk import DAG, task_group
from kubernetes.client import ApiClient

from llmops.config import load_registry
from llmops.serving.manifests import ANNOTATION_POD_SECURITY, VersionRef, render_all
from support.ack import KUBERNETES_VERSION
from support.pod_security import pod_of, violations

STABLE = VersionRef("oss://b/models/tiny-llama/aaa/vllm-llmcompressor-w8a8/manifest.json", "tiny-llama", 1, 512)
CANARY = VersionRef("oss://b/models/tiny-llama/bbb/vllm-llmcompressor-w8a8/manifest.json", "tiny-llama", 1, 512)


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def serving_objects(registry) -> list[dict]:
    objects = []
    for deployment in registry.deployments.values():
        for profile in registry.gpu_profiles.values():
            for strategy in ("gateway-httproute", "replica-ratio"):
                d = deployment.model_copy(update={"traffic": deployment.traffic.model_copy(
                    update={"strategy": strategy})})
                objects += render_all(d, profile, stable=STABLE, canary=CANARY, canary_percent=10,
                                      rollout_run="manual__1")
    return objects


def test_every_serving_object_passes_restricted(registry):
    objects = serving_objects(registry)
    pods = [o for o in objects if pod_of(o)]
    assert len(pods) == 2 * 2 * len(registry.gpu_profiles) * len(registry.deployments)
    assert {o["kind"] for o in objects} - {"Deployment"} == {"Service", "HorizontalPodAutoscaler", "ServiceMonitor",
                                                             "HTTPRoute", "PodDisruptionBudget"}  # no pod in them
    problems = [p for o in objects for p in violations(o)]
    assert problems == []
    for obj in pods:
        template = obj["spec"]["template"]
        assert template["metadata"]["annotations"][ANNOTATION_POD_SECURITY] == "restricted"
        assert template["spec"]["initContainers"], "the fetch init container is checked too"


def _step_pods(monkeypatch) -> dict[str, list[dict]]:
    """Pod specs of every heavy step, built by the DAGs' own operators on runtime `kubernetes`."""
    from airflow.models import DagBag
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from llmops.kb.runs import job_arguments
    from llmops.refresh.plan import expand_targets
    from llmops.settings import PROJECT_ROOT, get_settings
    from llmops_airflow.kb import job_kwargs
    from llmops_airflow.refresh_tasks import item_chain, item_entry

    monkeypatch.setenv("LLMOPS_RUNTIME", "kubernetes")
    get_settings.cache_clear()
    try:
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
        assert not bag.import_errors
        registry = load_registry()
        plan = expand_targets(list(registry.models.values()), {m: "a" * 40 for m in registry.models},
                              registry.gpu_profiles, runtime="kubernetes", work_root="/models/work")
        assert plan.items
        kbs = registry.knowledge_bases
        expansions = {"reindex": [job_kwargs(kbs[args[1]], args, runtime="kubernetes")
                                  for args in job_arguments(kbs)]}
        pods: dict[str, list[dict]] = {}
        # model_refresh: each item's steps as its mapped group renders them (the group maps over the plan's XCom,
        # so here a group over the literal entries of every planned item)
        entries = [item_entry(item, hf_connection_id="huggingface_default", run=["--run-id", "r"],
                              runtime="kubernetes", profiles=registry.gpu_profiles) for item in plan.items]
        with DAG("model_refresh", schedule=None) as refresh:
            @task_group(group_id="item")
            def item(key, download, quantize, validate, publish, hf_token, quantize_image, validate_image,
                     node_selector, gpu_resources, download_pod, gpu_pod):
                item_chain(**locals(), runtime="kubernetes")

            item.expand_kwargs(json.loads(json.dumps(entries)))
        for index in range(len(entries)):
            for task in refresh.tasks:
                op = copy.deepcopy(task)
                op.render_template_fields({"ti": SimpleNamespace(map_index=index)})
                pod = op.build_pod_request_obj(context=None, dry_run=True)
                pods.setdefault(f"model_refresh.{task.task_id.split('.')[-1]}", []).append(
                    ApiClient().sanitize_for_serialization(pod))
        for dag in bag.dags.values():
            for task in dag.tasks:
                cls = getattr(task, "operator_class", type(task))
                if dag.dag_id == "model_refresh" or not (
                        isinstance(cls, type) and issubclass(cls, KubernetesPodOperator)):
                    continue
                kwargs = {k: v for k, v in task.partial_kwargs.items() if k != "map_index_template"}
                for expansion in expansions[task.task_id]:
                    op = cls(task_id=task.task_id, **{**kwargs, **expansion})
                    pod = op.build_pod_request_obj(context=None, dry_run=True)
                    pods.setdefault(f"{dag.dag_id}.{task.task_id}", []).append(
                        ApiClient().sanitize_for_serialization(pod))
        return pods
    finally:
        monkeypatch.delenv("LLMOPS_RUNTIME")
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def step_pods() -> dict[str, list[dict]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("LLMOPS_MODEL_CACHE_PVC", "llmops-model-cache")
        return _step_pods(monkeypatch)


def test_every_step_pod_passes_restricted(step_pods):
    pods = step_pods
    assert set(pods) == {"model_refresh.download", "model_refresh.quantize", "model_refresh.validate",
                         "model_refresh.publish", "kb_reindex.reindex", "kb_reindex__product-docs.reindex"}
    for name, specs in pods.items():
        for pod in specs:
            kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
            names = [c["name"] for c in pod["spec"]["containers"]]
            assert "airflow-xcom-sidecar" in names, "the xcom sidecar is part of the checked pod"
            assert violations(pod) == [], name
            # read-only root filesystem: the job's HOME (/tmp) and the model cache are volumes
            tmp = [v for v in pod["spec"]["volumes"] if v["name"] == "tmp"]
            assert tmp and tmp[0]["emptyDir"].get("sizeLimit"), name
            for container in pod["spec"]["containers"]:
                assert container["securityContext"]["readOnlyRootFilesystem"] is True, (name, container["name"])
            (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
            env = {e["name"]: e.get("value") for e in base["env"]}
            assert env["HOME"] == "/tmp" and {m["mountPath"] for m in base["volumeMounts"]} >= {"/tmp", "/models"}
    for pod in pods["kb_reindex.reindex"]:  # each knowledge base's Connections, from their Secrets (pod template)
        (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
        assert {"name": "MILVUS_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "llmops-milvus-default", "key": "password", "optional": True}}} in base["env"]


def test_refresh_gpu_steps_prefer_the_spot_pool_and_resume_from_the_model_cache(registry, step_pods):
    """Quantize and validate pods (as the DAG builds them) tolerate their profile's spot taint and prefer its
    spot nodes; download and publish stay off spot nodes. Every step mounts the model cache claim, where a retried
    step finds the download and a finished checkpoint again."""
    by_selector = {tuple(sorted(p.node_selector.items())): p for p in registry.gpu_profiles.values()}
    spot_taints = {p.spot.taint.key for p in registry.gpu_profiles.values() if p.spot}
    seen_spot = 0
    for step in ("quantize", "validate", "download", "publish"):
        for pod in step_pods[f"model_refresh.{step}"]:
            spec = pod["spec"]
            claims = [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v]
            assert claims == ["llmops-model-cache"], step
            tolerated = {t["key"] for t in spec.get("tolerations") or []}
            if step in ("download", "publish"):
                assert not tolerated & spot_taints and not spec.get("affinity"), step
                continue
            profile = by_selector[tuple(sorted(spec["nodeSelector"].items()))]
            preferred = (spec.get("affinity") or {}).get("nodeAffinity", {}).get(
                "preferredDuringSchedulingIgnoredDuringExecution", [])
            if profile.spot is None:
                assert not tolerated & spot_taints and not preferred, (step, profile.name)
                continue
            seen_spot += 1
            assert profile.spot.taint.key in tolerated, (step, profile.name)
            ((key, value),) = profile.spot.node_label.items()
            assert preferred[0]["preference"]["matchExpressions"] == [{"key": key, "operator": "In",
                                                                       "values": [value]}]
    assert seen_spot, "the registry's example profiles put some refresh GPU steps on spot pools"


# --- the checker can fail ------------------------------------------------------------------------------------


def _as_rendered_before(obj: dict) -> dict:
    """A vLLM Deployment as it was rendered before the restricted profile: no security settings, no limits."""
    old = copy.deepcopy(obj)
    spec = old["spec"]["template"]["spec"]
    del spec["securityContext"], spec["automountServiceAccountToken"]
    for container in spec["initContainers"] + spec["containers"]:
        del container["securityContext"]
    spec["initContainers"][0]["resources"] = {"requests": {"cpu": "1", "memory": "2Gi"}}
    spec["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
    return old


def test_the_checker_fails_the_pods_rendered_before(registry):
    deployment = registry.deployment("tiny-llama-chat")
    obj = render_all(deployment, registry.gpu_profile("a10"), stable=None, canary=CANARY, canary_percent=100)[0]
    problems = "\n".join(violations(_as_rendered_before(obj)))
    for expected in ("allowPrivilegeEscalation must be false", "capabilities.drop must include ALL",
                     "runAsNonRoot must be true", "seccompProfile.type must be RuntimeDefault",
                     "initContainers[fetch-model].resources.limits lacks ['cpu', 'memory']",
                     "containers[vllm].resources.requests lacks ['cpu', 'memory']",
                     "automountServiceAccountToken must be false"):
        assert expected in problems


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    (lambda s: s["initContainers"][0]["securityContext"]["capabilities"].update(drop=["NET_RAW"]), "drop must"),
    (lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]), "capabilities.add"),
    (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "is privileged"),
    (lambda s: s["securityContext"].update(runAsUser=0), "runAsUser is 0"),
    (lambda s: s["containers"][0]["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda s: s["initContainers"][0]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
     "seccompProfile.type is Unconfined"),
    (lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
    (lambda s: s.update(hostNetwork=True), "hostNetwork"),
    (lambda s: s["containers"][0]["ports"][0].update(hostPort=80), "hostPort"),
    (lambda s: s.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
    (lambda s: s["containers"][0]["resources"]["limits"].pop("memory"), "resources.limits lacks ['memory']"),
    (lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "sysctl"),
])
def test_each_control_is_checked(registry, mutate, expected):
    obj = render_all(registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10"), stable=None, canary=CANARY,
                     canary_percent=100)[0]
    assert violations(obj) == []
    mutate(obj["spec"]["template"]["spec"])
    assert any(expected in p for p in violations(obj)), violations(obj)
