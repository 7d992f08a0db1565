"""deploy/ack/: the ACK kit renders from one values file into manifests a cluster accepts.

Native objects validate with kubernetes-validate against the Kubernetes version values.yaml names (the one
ACK runs); custom resources against the schemas vendored in tests/unit/data/crds/ (each file's SOURCE note
says where it comes from: the Milvus operator's CRD at the release values.yaml names; a documentation-derived
minimal schema for ClusterAliyunPipelineConfig, whose CRD is not public). RBAC is checked against what the
pipelines really create: the kinds rollout renders, plus job pods and the rollout lock.
Spot node pools carry the label and taint the pods select and tolerate; the metrics adapter's rules give the
HPA the metric names the rendered HPAs ask for. Files named *-values.yaml are Helm values, not objects: Airflow's
validates against the values.schema.json of the chart release values.yaml pins (tests/unit/data/schemas/).
That the kit applies to a Kubernetes API is tested against kmock in tests/integration/deploy_kit/.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "deploy" / "ack"
CRDS = Path(__file__).parent / "data" / "crds"
VALUES = yaml.safe_load((KIT / "values.yaml").read_text())
CUSTOM = {("milvus.io/v1beta1", "Milvus"),
          ("telemetry.alibabacloud.com/v1alpha1", "ClusterAliyunPipelineConfig")}
# API group and resource of each kind the pipelines create (plural names as RBAC writes them).
RESOURCES = {"Deployment": ("apps", "deployments"), "Service": ("", "services"), "ConfigMap": ("", "configmaps"),
             "Pod": ("", "pods"), "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
             "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
             "HTTPRoute": ("gateway.networking.k8s.io", "httproutes"),
             "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors")}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    from support.ack import render_kit

    out = tmp_path_factory.mktemp("ack") / "out"
    render_kit(out)
    return out


def manifests(out: Path) -> list[dict]:
    docs = []
    for path in sorted(out.glob("*.yaml")):
        if not path.name.endswith("-values.yaml"):  # Helm values, not objects
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_everything_renders_from_the_values_file(rendered):
    names = sorted(p.name for p in rendered.iterdir())
    assert names == sorted([p.name for p in (KIT / "templates").glob("*.yaml")] + ["60-node-pools.tf"])
    for path in rendered.iterdir():
        text = path.read_text()
        assert "${" not in text, f"{path.name} has an unrendered value"
    assert VALUES["pipelines"]["namespace"] in (rendered / "10-rbac.yaml").read_text()


def _filled_values() -> dict:
    from support.ack import filled_values_text

    return yaml.safe_load(filled_values_text())


def test_a_missing_value_stops_the_render_naming_it(tmp_path):
    values = _filled_values()
    del values["sls"]["logstore"]
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run([sys.executable, str(KIT / "render.py"), "--values", str(tmp_path / "values.yaml"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "sls.logstore" in result.stderr and "50-logs.yaml" in result.stderr


def test_native_manifests_validate_against_the_cluster_version(rendered):
    docs = manifests(rendered)
    native = [d for d in docs if (d["apiVersion"], d["kind"]) not in CUSTOM]
    assert {d["kind"] for d in native} >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                                          "ClusterRoleBinding", "ConfigMap", "PersistentVolumeClaim", "Job",
                                          "NetworkPolicy"}
    for doc in native:
        kubernetes_validate.validate(doc, VALUES["kubernetes_version"], strict=True)


def test_custom_resources_validate_against_their_bundled_schemas(rendered):
    custom = [d for d in manifests(rendered) if (d["apiVersion"], d["kind"]) in CUSTOM]
    assert {d["kind"] for d in custom} == {"Milvus", "ClusterAliyunPipelineConfig"}
    from support.crds import validate_custom

    for doc in custom:
        validate_custom(doc)
    bad = next(d for d in custom if d["kind"] == "Milvus")
    bad = {**bad, "spec": {**bad["spec"], "mode": "clustered"}}
    with pytest.raises(jsonschema.ValidationError):  # the schemas can fail
        validate_custom(bad)
    logs = next(d for d in custom if d["kind"] == "ClusterAliyunPipelineConfig")
    with pytest.raises(jsonschema.ValidationError):
        validate_custom({**logs, "spec": {**logs["spec"], "logstore": "x"}})  # AliyunLogConfig's spelling


def test_milvus_is_a_cluster_on_oss_matching_the_connection(rendered):
    milvus = next(d for d in manifests(rendered) if d["kind"] == "Milvus")
    spec = milvus["spec"]
    assert spec["mode"] == "cluster"
    assert spec["components"]["proxy"]["replicas"] >= 2 and spec["components"]["queryNode"]["replicas"] >= 2
    storage, minio = spec["dependencies"]["storage"], spec["config"]["minio"]
    assert storage["external"] and storage["endpoint"].startswith("oss-")
    assert (minio["cloudProvider"], minio["useIAM"], minio["useVirtualHost"]) == ("aliyun", True, True)
    assert spec["components"]["serviceAccountName"] == VALUES["service_accounts"]["milvus"]
    # The operator's proxy Service is <name>-milvus on 19530: the Connection in the file's header says so.
    host = f"http://{milvus['metadata']['name']}-milvus.{milvus['metadata']['namespace']}.svc.cluster.local:19530"
    assert host in (rendered / "40-milvus.yaml").read_text()


def _rules(doc: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in doc["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def test_rbac_writes_only_what_the_pipelines_create_and_nothing_wider(rendered):
    """Which kinds may be written; the exact verbs are compared with the calls the code makes in
    tests/integration/deploy_kit/test_rbac_calls.py."""
    from llmops.config import load_registry
    from llmops.serving import manifests as m

    registry = load_registry(ROOT / "include" / "config")
    deployment = next(iter(registry.deployments.values()))
    rendered_kinds = {o["kind"] for o in m.render_all(
        deployment, registry.gpu_profile(deployment.gpu_profile), stable=m.VersionRef("oss://b/v1/manifest.json", "x"),
        canary=m.VersionRef("oss://b/v2/manifest.json", "x"), canary_percent=10)}
    created = {RESOURCES[kind] for kind in rendered_kinds | {"Pod", "ConfigMap"}}
    docs = manifests(rendered)
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == VALUES["pipelines"]["namespace"] == deployment.namespace
    rules = _rules(role)
    writes = {key for key, verbs in rules.items() if {"create", "delete", "patch"} & verbs and "/" not in key[1]}
    assert writes == created, f"granted {writes ^ created} beyond or short of what the pipelines create"
    assert all("*" not in verbs and "*" not in key[1] and not {"watch", "update", "deletecollection"} & verbs
               for key, verbs in rules.items())
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": VALUES["service_accounts"]["airflow_worker"],
                                    "namespace": VALUES["airflow"]["namespace"]}]
    cluster = next(d for d in docs if d["kind"] == "ClusterRole")
    assert _rules(cluster) == {("", "nodes"): {"list"}, ("", "pods"): {"list"}}


def test_pipelines_namespace_enforces_restricted_and_milvus_lives_apart(rendered):
    namespaces = {d["metadata"]["name"]: d["metadata"]["labels"] for d in manifests(rendered) if d["kind"] == "Namespace"}
    pipelines = namespaces[VALUES["pipelines"]["namespace"]]
    assert pipelines["pod-security.kubernetes.io/enforce"] == "restricted"
    milvus_ns = VALUES["milvus"]["namespace"]
    assert milvus_ns != VALUES["pipelines"]["namespace"]
    assert namespaces[milvus_ns]["pod-security.kubernetes.io/enforce"] == "baseline"
    milvus = next(d for d in manifests(rendered) if d["kind"] == "Milvus")
    assert milvus["metadata"]["namespace"] == milvus_ns


def test_a_network_policy_per_component(rendered):
    """Job pods take no ingress; serving pods take it on `http` from the named namespaces only; Milvus from itself
    and on 19530 from the pipelines' and Airflow's namespaces; everything else in the pipelines' namespace none."""
    from llmops.config import load_registry
    from llmops.serving import manifests as m
    from support.kube_selectors import selects

    policies = {d["metadata"]["name"]: d for d in manifests(rendered) if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"llmops-jobs", "llmops-serving", "llmops-default-deny-ingress", "llmops-milvus"}
    registry = load_registry(ROOT / "include" / "config")
    d = registry.deployment("tiny-llama-chat")
    (pod,) = [o["spec"]["template"] for o in m.render_all(d, registry.gpu_profile(d.gpu_profile),
                                                          stable=m.VersionRef("oss://b/v1/manifest.json", "x"),
                                                          canary=None, canary_percent=0) if o["kind"] == "Deployment"]
    serving = policies["llmops-serving"]["spec"]
    assert selects(serving["podSelector"], pod["metadata"]["labels"])
    assert not selects(policies["llmops-jobs"]["spec"]["podSelector"], pod["metadata"]["labels"])
    assert selects(policies["llmops-jobs"]["spec"]["podSelector"], {"llmops/step": "download"})
    assert policies["llmops-jobs"]["spec"]["ingress"] == []
    (rule,) = serving["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]  # the serving containers' named port
    assert pod["spec"]["containers"][0]["ports"][0]["name"] == "http"
    allowed = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert set(allowed) == {VALUES["pipelines"]["namespace"], VALUES["airflow"]["namespace"],
                            VALUES["network"]["gateway_namespace"], VALUES["network"]["prometheus_namespace"]}
    assert policies["llmops-milvus"]["metadata"]["namespace"] == VALUES["milvus"]["namespace"]


def test_an_image_without_a_digest_stops_the_render(tmp_path):
    from support.ack import VALUES_TEXT, render_kit

    with pytest.raises(subprocess.CalledProcessError) as refused:  # the shipped placeholders
        render_kit(tmp_path / "out", VALUES_TEXT)
    assert "pinned by digest" in refused.value.stderr.decode() and "pipelines.worker_image" in refused.value.stderr.decode()
    values = _filled_values()
    values["pipelines"]["serving_image"] = "registry.example/llmops-vllm:0.1.0"  # a tag only
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run([sys.executable, str(KIT / "render.py"), "--values", str(tmp_path / "values.yaml"),
                             "--out", str(tmp_path / "out2")], capture_output=True, text=True)
    assert result.returncode != 0 and "pipelines.serving_image" in result.stderr and "fix:" in result.stderr
    assert "pipelines.worker_image" not in result.stderr


def test_rendered_images_are_pinned_by_digest(rendered):
    from support.ack import filled_values_text

    values = yaml.safe_load(filled_values_text())
    settings = next(d for d in manifests(rendered) if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "llmops-settings")
    for key in ("LLMOPS_WORKER_IMAGE", "LLMOPS_SERVING_IMAGE", "LLMOPS_TRTLLM_IMAGE"):
        assert re.search(r"@sha256:[0-9a-f]{64}$", settings["data"][key]), key
    airflow = yaml.safe_load((rendered / "30-airflow-values.yaml").read_text())
    assert airflow["images"]["airflow"]["digest"] == values["airflow"]["image_digest"]
    milvus = next(d for d in manifests(rendered) if d["kind"] == "Milvus")
    assert "@sha256:" in milvus["spec"]["components"]["image"]


def test_job_and_serving_pods_get_oss_through_rrsa(rendered):
    from llmops.config import load_registry

    docs = manifests(rendered)
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    for who in ("jobs", "serving", "milvus"):
        sa = accounts[VALUES["service_accounts"][who]]
        assert sa["metadata"]["annotations"] == {"pod-identity.alibabacloud.com/role-name": VALUES["ram_roles"][who]}
        namespace = next(d for d in docs if d["kind"] == "Namespace"
                         and d["metadata"]["name"] == sa["metadata"]["namespace"])
        assert namespace["metadata"]["labels"]["pod-identity.alibabacloud.com/injection"] == "on"
    settings = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "llmops-settings")
    assert settings["data"]["LLMOPS_SERVICE_ACCOUNT"] == VALUES["service_accounts"]["jobs"]
    assert settings["data"]["LLMOPS_RUNTIME"] == "kubernetes"
    for deployment in load_registry(ROOT / "include" / "config").deployments.values():
        assert deployment.service_account == VALUES["service_accounts"]["serving"], deployment.name


def test_airflow_values_use_kubernetes_executor_and_secrets_only(rendered):
    values = yaml.safe_load((rendered / "30-airflow-values.yaml").read_text())
    assert values["executor"] == "KubernetesExecutor" and values["postgresql"]["enabled"] is False
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key].startswith("llmops-airflow-")
    assert values["data"]["metadataSecretName"] == "llmops-airflow-metadata"
    env_from = yaml.safe_load(values["extraEnvFrom"])
    assert {"configMapRef": {"name": "llmops-settings"}} in env_from
    assert {"secretRef": {"name": "llmops-airflow-connections"}} in env_from
    for component in ("workers", "triggerer"):
        assert values[component]["serviceAccount"] == {"create": False,
                                                       "name": VALUES["service_accounts"]["airflow_worker"]}
    assert values["dags"]["gitSync"]["enabled"] is VALUES["airflow"]["git_sync"]["enabled"]
    job = next(d for d in manifests(rendered) if d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:4] == ["airflow", "pools", "set", "gpu"]


def _airflow_values(out: Path) -> dict:
    return yaml.safe_load((out / "30-airflow-values.yaml").read_text())


@pytest.mark.parametrize("git_sync", [False, True], ids=["baked-dags", "git-sync"])
def test_airflow_values_validate_against_the_pinned_charts_schema(rendered, tmp_path, git_sync):
    """Both ways the kit deploys dags/ (baked into the image, or git-sync) render values the pinned chart release
    accepts, and name no key it would ignore."""
    from support.helm_values import chart_schema, problems

    if git_sync:
        values = _filled_values()
        values["airflow"]["git_sync"]["enabled"] = True
        from support.ack import render_kit

        render_kit(tmp_path / "out", yaml.safe_dump(values))
        rendered = tmp_path / "out"
    airflow = _airflow_values(rendered)
    assert airflow["dags"]["gitSync"]["enabled"] is git_sync
    version = VALUES["airflow"]["chart_version"]
    assert problems(airflow, chart_schema("airflow", version)) == []
    assert problems(airflow, chart_schema("airflow", version, strict=True)) == []
    assert f"--version {version}" in (rendered / "30-airflow-values.yaml").read_text()
    assert f"--version {version}" in (ROOT / "README.md").read_text()


def test_the_chart_schema_refuses_values_the_chart_would_not_take(rendered):
    from support.helm_values import chart_schema, problems

    version = VALUES["airflow"]["chart_version"]
    schema, strict = chart_schema("airflow", version), chart_schema("airflow", version, strict=True)
    good = _airflow_values(rendered)
    workers, git_sync = good["workers"], good["dags"]["gitSync"]
    refused_by_helm = [  # (values, what the schema says), each one mistake away from the rendered values
        ({**good, "executor": "Kubernetes"}, "executor: 'Kubernetes' does not match '^(("),  # not an executor class
        ({**good, "workers": {**workers, "serviceAccount": {**workers["serviceAccount"], "create": "false"}}},
         "workers.serviceAccount.create: 'false' is not of type 'boolean'"),
        ({**good, "dags": {**good["dags"], "gitSync": {**git_sync, "revision": "main"}}},  # the key is `rev`
         "dags.gitSync: Additional properties are not allowed ('revision' was unexpected)"),
    ]
    for values, expected in refused_by_helm:
        found = problems(values, schema)
        assert len(found) == 1 and found[0].startswith(expected), (expected, found)
    # a misspelt top-level key: Helm installs it and the chart ignores it (the Secret name falls back to a
    # generated key); only the strict schema refuses it
    misspelt = {**{k: v for k, v in good.items() if k != "jwtSecretName"}, "jwtSecretname": good["jwtSecretName"]}
    assert problems(misspelt, schema) == []
    assert problems(misspelt, strict) == ["<top>: Additional properties are not allowed ('jwtSecretname' was unexpected)"]
    with pytest.raises(FileNotFoundError, match="vendor that release"):
        chart_schema("airflow", "0.0.0")


def _pool_blocks(tf: str) -> dict[str, str]:
    return {b.split('"')[0]: b for b in tf.split('resource "alicloud_cs_kubernetes_node_pool" "gpu_')[1:]}


def _taints(block: str) -> list[dict]:
    return [dict(zip(("key", "value", "effect"), t, strict=True)) for t in re.findall(
        r'taints \{\n    key    = "([^"]+)"\n    value  = "([^"]*)"\n    effect = "([^"]+)"', block)]


def _labels(block: str) -> dict[str, str]:
    return dict(re.findall(r'labels \{\n    key   = "([^"]+)"\n    value = "([^"]*)"', block))


def _tolerated(taint: dict, tolerations: list[dict]) -> bool:
    return any(t["key"] == taint["key"] and t.get("effect") in (None, taint["effect"])
               and (t.get("operator") == "Exists" or t.get("value") == taint["value"]) for t in tolerations)


def test_node_pools_carry_what_the_gpu_profiles_select_and_tolerate(rendered):
    profiles = yaml.safe_load((ROOT / "include" / "config" / "gpu_profiles.yaml").read_text())["gpu_profiles"]
    tf = (rendered / "60-node-pools.tf").read_text()
    blocks = _pool_blocks(tf)
    pools = VALUES["node_pools"]
    spot_pools = {p["name"] for p in profiles if p.get("spot") and pools.get(p["name"], {}).get("spot")}
    assert spot_pools, "the example values give some profiles a spot pool"
    assert set(blocks) == ({p["name"].replace("-", "_") for p in profiles if p["name"] in pools}
                           | {f"{p.replace('-', '_')}_spot" for p in spot_pools})
    for profile in profiles:
        block = blocks[profile["name"].replace("-", "_")]
        instance = pools[profile["name"]]["instance_type"]
        assert f'instance_types = ["{instance}"]' in block
        for key, value in profile["node_selector"].items():
            if key != "aliyun.accelerator/nvidia_name":  # ACK labels GPU nodes with it itself
                assert f'key   = "{key}"\n    value = "{value}"' in block, (profile["name"], key)
        for toleration in profile["tolerations"]:
            assert f'key    = "{toleration["key"]}"' in block and f'effect = "{toleration["effect"]}"' in block
        assert "spot_strategy" not in block


def test_spot_pools_take_only_the_pods_that_opt_in(rendered):
    """The pools' taints and labels against the placement the project renders for its pods."""
    from llmops.config import load_registry
    from llmops.serving.manifests import gpu_placement, step_placement

    registry = load_registry(ROOT / "include" / "config")
    blocks = _pool_blocks((rendered / "60-node-pools.tf").read_text())
    checked = 0
    for name, profile in registry.gpu_profiles.items():
        if f"{name.replace('-', '_')}_spot" not in blocks:
            continue
        checked += 1
        spot, on_demand = blocks[f"{name.replace('-', '_')}_spot"], blocks[name.replace("-", "_")]
        assert 'spot_strategy        = "SpotAsPriceGo"' in spot and "spot_instance_remedy = true" in spot
        assert _labels(spot) == {**_labels(on_demand), **profile.spot.node_label}
        refresh = step_placement(profile, interruptible=True)
        serving = gpu_placement(profile, spot="never")
        # model_refresh's GPU steps may go to both pools and prefer the spot one
        assert all(_tolerated(t, refresh["tolerations"]) for t in _taints(spot) + _taints(on_demand))
        (term,) = refresh["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        (expression,) = term["preference"]["matchExpressions"]
        assert _labels(spot)[expression["key"]] in expression["values"]
        assert expression["key"] not in _labels(on_demand)
        # serving (no opt-in) fits the on-demand pool only
        assert all(_tolerated(t, serving["tolerations"]) for t in _taints(on_demand))
        assert not all(_tolerated(t, serving["tolerations"]) for t in _taints(spot))
    assert checked


def test_node_pools_set_a_multi_az_policy(rendered):
    blocks = _pool_blocks((rendered / "60-node-pools.tf").read_text())
    for name, block in blocks.items():
        expected = VALUES["multi_az_policy"]["spot" if name.endswith("_spot") else "on_demand"]
        assert f'multi_az_policy = "{expected}"' in block, name
    assert VALUES["multi_az_policy"]["on_demand"] == "BALANCE"


def test_a_spot_pool_for_a_profile_without_spot_is_refused(tmp_path):
    values = _filled_values()
    values["node_pools"]["a10-shared"]["spot"] = {"min_size": 0, "max_size": 1}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run([sys.executable, str(KIT / "render.py"), "--values", str(tmp_path / "values.yaml"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode != 0 and "node_pools.a10-shared.spot" in result.stderr and "fix:" in result.stderr


def test_the_metrics_adapter_gives_every_hpa_metric_its_name(rendered):
    """Each metric an HPA may ask for (HPA_METRICS, and TensorRT-LLM's) is selected by one adapter rule and renamed to that name,
    with the rule's Go-regex rename applied as prometheus-adapter applies it."""
    from llmops.serving import trtllm
    from llmops.serving.manifests import HPA_METRICS

    values = yaml.safe_load((rendered / "55-metrics-adapter-values.yaml").read_text())
    assert values["prometheus"]["url"] == VALUES["metrics"]["prometheus_url"]
    rules = values["prometheus"]["adapter"]["rules"]["custom"]
    for metric, (hpa_name, series, _) in [*HPA_METRICS.items(), *trtllm.HPA_METRICS.items()]:
        matching = []
        for rule in rules:
            query = rule["seriesQuery"]
            names = re.search(r'__name__=~"([^"]+)"', query)
            selects = re.fullmatch(names.group(1), series) if names else query.split("{")[0] == series
            if selects:
                renamed = re.sub(rule["name"]["matches"], re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule["name"]["as"]),
                                 series)
                matching.append(renamed)
                overrides = rule["resources"]["overrides"]
                assert {o["resource"] for o in overrides.values()} == {"namespace", "pod"}, metric
                assert "<<.GroupBy>>" in rule["metricsQuery"]
        assert matching == [hpa_name], (metric, matching)


def test_an_instance_type_of_the_wrong_family_is_refused(tmp_path):
    values = _filled_values()
    values["node_pools"]["h100"]["instance_type"] = "ecs.gn7i-c8g1.2xlarge"
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run([sys.executable, str(KIT / "render.py"), "--values", str(tmp_path / "values.yaml"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode != 0 and "node_pools.h100.instance_type" in result.stderr


def test_the_kits_own_pod_meets_the_restricted_pod_security_profile(rendered):
    """kubernetes-validate checks schemas, not Pod Security Standards: the restricted profile's rules here."""
    from support.pod_security import pod_of, violations

    pods = [d for d in manifests(rendered) if pod_of(d)]
    assert [d["kind"] for d in pods] == ["Job"]
    assert [p for d in pods for p in violations(d)] == []


def test_every_name_the_kit_renders_is_valid_and_a_bad_one_is_refused(rendered, tmp_path):
    from support.kube_names import name_problems

    assert [p for doc in manifests(rendered) for p in name_problems(doc)] == []
    values = _filled_values()
    values["milvus"]["name"] = "2026-kb"  # its Service 2026-kb-milvus would be refused
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    result = subprocess.run([sys.executable, str(KIT / "render.py"), "--values", str(tmp_path / "values.yaml"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode != 0 and "milvus.name" in result.stderr and "DNS-1035" in result.stderr
