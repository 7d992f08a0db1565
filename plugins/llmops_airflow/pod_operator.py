"""The step pods' operator: KubernetesPodOperator whose xcom sidecar has limits too.

`pod_settings` (steps.py) gives every step pod the Pod Security Standards "restricted" settings. The one
thing the provider cannot be told per operator is the xcom sidecar's resources (only through the Kubernetes
Connection's extra, with requests alone by default), so a sidecar without limits gets them here.
"""

from __future__ import annotations

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from kubernetes.client import models as k8s

# The sidecar only sleeps until the Airflow worker has read /airflow/xcom/return.json.
XCOM_SIDECAR_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


class RestrictedPodOperator(KubernetesPodOperator):
    """A KubernetesPodOperator whose every container has requests and limits."""

    def build_pod_request_obj(self, *args, **kwargs) -> k8s.V1Pod:
        pod = super().build_pod_request_obj(*args, **kwargs)
        for container in pod.spec.containers:
            if container.name == PodDefaults.SIDECAR_CONTAINER_NAME and not (
                    container.resources and container.resources.limits):
                container.resources = k8s.V1ResourceRequirements(**XCOM_SIDECAR_RESOURCES)
        return pod
