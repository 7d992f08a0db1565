"""The ACK kit applies, in the README's order, to a Kubernetes API: kmock's emulator over real HTTP.

Every rendered object is created with the official client's REST calls at its API path (namespaced objects
in their namespace, cluster-scoped ones at the top), read back, and applied a second time to show the
order is re-runnable (409 on create is what `kubectl apply` turns into a patch). kmock stores objects but
runs no admission, validation or controllers: schemas are checked in tests/unit/test_deploy_ack.py, and
no Milvus or log controller reconciles the custom resources here. Namespaces are the one kind not sent:
kmock 0.8 parses `/api/v1/namespaces` as the prefix of a namespaced path and answers 500, so the test
checks instead that every namespaced object lands in a namespace the kit's first file declares.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from support.kube_emulator import KubeEmulator

ROOT = Path(__file__).resolve().parents[3]
KIT = ROOT / "deploy" / "ack"
PLURALS = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "Role": "roles",
           "RoleBinding": "rolebindings", "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
           "ConfigMap": "configmaps", "PersistentVolumeClaim": "persistentvolumeclaims", "Job": "jobs",
           "NetworkPolicy": "networkpolicies", "Milvus": "milvuses",
           "ClusterAliyunPipelineConfig": "clusteraliyunpipelineconfigs"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterAliyunPipelineConfig"}


def api_path(obj: dict, name: str | None = None) -> str:
    version = obj["apiVersion"]
    base = f"/api/{version}" if "/" not in version else f"/apis/{version}"
    ns = "" if obj["kind"] in CLUSTER_SCOPED else f"/namespaces/{obj['metadata']['namespace']}"
    return f"{base}{ns}/{PLURALS[obj['kind']]}" + (f"/{name}" if name else "")


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> list[dict]:
    from support.ack import render_kit

    return render_kit(tmp_path_factory.mktemp("ack") / "out")  # the README's order: the file names' numbers


def test_every_namespaced_object_lands_in_a_namespace_the_kit_creates_first(kit):
    declared = [d["metadata"]["name"] for d in kit if d["kind"] == "Namespace"]
    assert kit[:len(declared)] == [d for d in kit if d["kind"] == "Namespace"], "namespaces come first"
    for obj in kit:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] in declared, obj["metadata"]["name"]


def test_the_kit_applies_in_order_and_reapplies(kit):
    kit = [obj for obj in kit if obj["kind"] != "Namespace"]
    with KubeEmulator() as kube:
        for obj in kit:
            kube.emulator.resources[f"{obj['apiVersion']}/{PLURALS[obj['kind']]}"] = {}
        config_obj = client.Configuration()
        config.load_kube_config_from_dict(kube.kubeconfig, client_configuration=config_obj)
        api = client.ApiClient(config_obj)

        def call(method: str, path: str, body: dict | None = None) -> dict:
            response = api.call_api(path, method, body=body, header_params={"Content-Type": "application/json",
                                                                            "Accept": "application/json"},
                                    _preload_content=False, auth_settings=["BearerToken"])
            response = response[0] if isinstance(response, tuple) else response
            return json.loads(response.data or b"{}")

        for obj in kit:
            call("POST", api_path(obj), obj)
        for obj in kit:
            stored = call("GET", api_path(obj, obj["metadata"]["name"]))
            assert stored["kind"] == obj["kind"] and stored["spec" if "spec" in obj else "metadata"]
            if "spec" in obj:
                assert stored["spec"] == obj["spec"], obj["metadata"]["name"]
        for obj in kit:  # a second apply: every create conflicts, nothing is duplicated
            with pytest.raises(ApiException) as conflict:
                call("POST", api_path(obj), obj)
            assert conflict.value.status == 409
        live = kube.live_objects()
        assert len(live) == len(kit)
        namespaced = {(o["metadata"].get("namespace"), o["metadata"]["name"]) for o in kit
                      if o["kind"] not in CLUSTER_SCOPED}
        assert {(ns, name) for _, ns, name in live if ns} == namespaced
