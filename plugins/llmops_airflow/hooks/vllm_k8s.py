"""VllmKubernetesHook: apply / patch / delete the rendered vLLM objects and read GPU capacity.

Built over cncf-kubernetes' `KubernetesHook` (credentials from its Connection: kubeconfig, in-cluster
or the ACK cluster's kubeconfig in the Connection's extra). It implements `llmops.serving.kubernetes.
KubeClient`, so every decision stays in include/ and this module only moves dicts over the API:

- create, and on 409 a JSON merge patch (kubectl-apply-like for the fields we own; no
  strategic-merge patch is needed because we always send whole lists),
- reads with `_preload_content=False`, so callers get plain dicts,
- deletes that treat 404 as done (idempotent).
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

MERGE_PATCH = "application/merge-patch+json"
CUSTOM = {
    "HTTPRoute": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors"),
}


class VllmKubernetesHook(BaseHook):
    conn_name_attr = "kubernetes_conn_id"
    default_conn_name = "kubernetes_default"
    conn_type = "kubernetes"
    hook_name = "vLLM on Kubernetes (llmops)"

    def __init__(self, kubernetes_conn_id: str = default_conn_name, *, config_dict: dict | None = None, **kwargs):
        super().__init__()
        self.kubernetes_conn_id = kubernetes_conn_id
        self._config_dict = config_dict
        self._kwargs = kwargs

    @cached_property
    def kube(self):
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook(conn_id=self.kubernetes_conn_id, config_dict=self._config_dict, **self._kwargs)

    @cached_property
    def _api(self):
        return self.kube.api_client

    @cached_property
    def _clients(self) -> dict[str, Any]:
        from kubernetes import client

        return {"core": client.CoreV1Api(self._api), "apps": client.AppsV1Api(self._api),
                "autoscaling": client.AutoscalingV2Api(self._api), "policy": client.PolicyV1Api(self._api),
                "custom": client.CustomObjectsApi(self._api)}

    def test_connection(self) -> tuple[bool, str]:
        # /version, as KubernetesHook.test_connection (cncf-kubernetes 10.25): every authenticated client may read
        # it, so the kit's RBAC needs no cluster-wide namespace list for the UI's Test button.
        from kubernetes import client

        try:
            version = client.VersionApi(self._api).get_code()
            return True, f"connected to Kubernetes {version.git_version}"
        except Exception as exc:  # report any failure to the UI instead of raising
            return False, str(exc)

    # --- KubeClient ----------------------------------------------------------------------------
    def _ops(self, kind: str):
        """(create, patch, read, delete, list_namespaced, list_all) callables for `kind`."""
        c = self._clients
        if kind in CUSTOM:
            group, version, plural = CUSTOM[kind]
            co = c["custom"]
            return (lambda ns, body, **kw: co.create_namespaced_custom_object(group, version, ns, plural, body, **kw),
                    lambda name, ns, body, **kw: co.patch_namespaced_custom_object(group, version, ns, plural, name,
                                                                                   body, **kw),
                    lambda name, ns, **kw: co.get_namespaced_custom_object(group, version, ns, plural, name, **kw),
                    lambda name, ns, **kw: co.delete_namespaced_custom_object(group, version, ns, plural, name, **kw),
                    lambda ns, **kw: co.list_namespaced_custom_object(group, version, ns, plural, **kw),
                    None)
        table = {
            "Deployment": (c["apps"], "namespaced_deployment", "deployment_for_all_namespaces"),
            "Service": (c["core"], "namespaced_service", "service_for_all_namespaces"),
            "ConfigMap": (c["core"], "namespaced_config_map", "config_map_for_all_namespaces"),
            "Pod": (c["core"], "namespaced_pod", "pod_for_all_namespaces"),
            "HorizontalPodAutoscaler": (c["autoscaling"], "namespaced_horizontal_pod_autoscaler",
                                        "horizontal_pod_autoscaler_for_all_namespaces"),
            "PodDisruptionBudget": (c["policy"], "namespaced_pod_disruption_budget",
                                    "pod_disruption_budget_for_all_namespaces"),
        }
        if kind == "Node":
            core = c["core"]
            return None, None, None, None, None, core.list_node
        if kind not in table:
            raise ValueError(f"kind {kind!r} is not handled; fix: add it to VllmKubernetesHook._ops")
        api, suffix, all_suffix = table[kind]
        return (getattr(api, f"create_{suffix}"), getattr(api, f"patch_{suffix}"), getattr(api, f"read_{suffix}"),
                getattr(api, f"delete_{suffix}"), getattr(api, f"list_{suffix}"), getattr(api, f"list_{all_suffix}"))

    @staticmethod
    def _json(response) -> dict:
        return json.loads(response.data or b"{}")

    def create(self, obj: dict) -> dict | None:
        from kubernetes.client.rest import ApiException

        create = self._ops(obj["kind"])[0]
        try:
            return self._json(create(obj["metadata"]["namespace"], obj, _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def apply(self, obj: dict) -> dict:
        created = self.create(obj)
        if created is not None:
            self.log.info("created %s %s/%s", obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
            return created
        patch = self._ops(obj["kind"])[1]
        self.log.info("patched %s %s/%s", obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        return self._json(patch(obj["metadata"]["name"], obj["metadata"]["namespace"], obj,
                                _content_type=MERGE_PATCH, _preload_content=False))

    def patch_if_unchanged(self, obj: dict) -> dict | None:
        """A JSON merge patch carrying metadata.resourceVersion: the API server applies it only while that is
        still the stored version, else answers 409 (None here): a compare-and-swap with the `patch` verb."""
        from kubernetes.client.rest import ApiException

        if not obj["metadata"].get("resourceVersion"):
            raise ValueError("patch_if_unchanged needs metadata.resourceVersion (the version it was read at)")
        patch = self._ops(obj["kind"])[1]
        try:
            return self._json(patch(obj["metadata"]["name"], obj["metadata"]["namespace"], obj,
                                    _content_type=MERGE_PATCH, _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def get(self, kind: str, name: str, namespace: str) -> dict | None:
        from kubernetes.client.rest import ApiException

        try:
            return self._json(self._ops(kind)[2](name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, kind: str, name: str, namespace: str) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self._ops(kind)[3](name, namespace, _preload_content=False)
            self.log.info("deleted %s %s/%s", kind, namespace, name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        ops = self._ops(kind)
        if namespace is not None and ops[4] is not None:
            return self._json(ops[4](namespace, _preload_content=False)).get("items", [])
        return self._json(ops[5](_preload_content=False)).get("items", [])
