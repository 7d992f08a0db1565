"""Deployment settings, read from the environment once (tier 1 of the config tiers).

Secrets never live here: they come from Airflow Connections (resolved in plugins/) or from the
process environment of a pod (RRSA credentials on ACK).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = ("local", "kubernetes")

# Names Kubernetes accepts: an RFC 1123 label (namespaces, Services) and subdomain (service accounts, PVCs).
DNS1123_LABEL_RE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS1123_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# An image reference: [registry[:port]/]path[:tag][@sha256:digest], no spaces or control characters.
IMAGE_RE = (r"^([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?/)?[a-z0-9]+([._-]{1,2}[a-z0-9]+)*"
            r"(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")


@dataclass(frozen=True)
class Settings:
    home: Path
    """All local state: Airflow home, artefact store, Milvus data, logs ($LLMOPS_HOME)."""
    runtime: str
    """Where heavy steps run: `local` (subprocesses) or `kubernetes` (pods)."""
    config_dir: Path
    """The registry files users edit."""
    store_uri: str
    """Artefact store root: file:///path, s3://bucket/prefix or oss://bucket/prefix."""
    worker_python: str
    """Python of the worker environment (torch) used by the local runtime."""
    serving_python: str
    """Python of the serving environment (vLLM) used by the local runtime."""
    namespace: str
    """Kubernetes namespace for pods and Deployments on runtime `kubernetes`."""
    worker_image: str
    """Image of heavy steps on runtime `kubernetes` (images/worker/Dockerfile)."""
    serving_image: str
    """Image of vLLM steps on runtime `kubernetes` (images/vllm/Dockerfile)."""
    trtllm_image: str
    """Image of TensorRT-LLM steps (images/trtllm/Dockerfile)."""
    service_account: str
    """Service account of job pods; on ACK bind it to a RAM role with RRSA for OSS access."""
    model_cache_pvc: str
    """PersistentVolumeClaim mounted at /models in job pods (empty: an emptyDir)."""
    kubernetes_connection_id: str
    """Airflow Connection of the cluster that runs job pods."""
    kube_service_url_template: str
    """How the rollout reaches a vLLM Service ({service}, {namespace}, {port}); in-cluster DNS by default."""
    kube_pod_url_template: str
    """How the readiness check reaches a vLLM pod ({pod_ip}, {port}, {name})."""
    milvus_uri: str = ""
    """A Milvus server (http://host:port) that replaces every Milvus Lite file named in knowledge_bases.yaml:
    the local runtime's shared Milvus (`milvus-lite server`), so readers and re-index runs share one store."""

    @property
    def venvs(self) -> Path:
        return self.home / "venvs"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    home = Path(_env("LLMOPS_HOME", str(PROJECT_ROOT / ".llmops"))).resolve()
    runtime = _env("LLMOPS_RUNTIME", "local")
    if runtime not in RUNTIMES:
        raise ValueError(
            f"LLMOPS_RUNTIME={runtime!r} is not a runtime; fix: set it to one of {', '.join(RUNTIMES)}"
        )
    venvs = home / "venvs"

    def venv_python(name: str) -> str:
        candidate = venvs / name / "bin" / "python"
        return str(candidate) if candidate.exists() else sys.executable

    settings = Settings(
        home=home,
        runtime=runtime,
        config_dir=Path(_env("LLMOPS_CONFIG_DIR", str(PROJECT_ROOT / "include" / "config"))),
        store_uri=_env("LLMOPS_STORE_URI", (home / "store").as_uri()),
        worker_python=_env("LLMOPS_WORKER_PYTHON", venv_python("worker")),
        serving_python=_env("LLMOPS_SERVING_PYTHON", venv_python("serving")),
        namespace=_env("LLMOPS_NAMESPACE", "llmops"),
        worker_image=_env("LLMOPS_WORKER_IMAGE", "llmops-worker:0.1.0"),
        serving_image=_env("LLMOPS_SERVING_IMAGE", "llmops-vllm:0.1.0"),
        trtllm_image=_env("LLMOPS_TRTLLM_IMAGE", "llmops-trtllm:0.1.0"),
        service_account=_env("LLMOPS_SERVICE_ACCOUNT", "llmops-jobs"),
        model_cache_pvc=_env("LLMOPS_MODEL_CACHE_PVC", ""),
        kubernetes_connection_id=_env("LLMOPS_KUBERNETES_CONN_ID", "kubernetes_default"),
        kube_service_url_template=_env("LLMOPS_KUBE_SERVICE_URL_TEMPLATE",
                                       "http://{service}.{namespace}.svc.cluster.local:{port}"),
        kube_pod_url_template=_env("LLMOPS_KUBE_POD_URL_TEMPLATE", "http://{pod_ip}:{port}"),
        milvus_uri=_env("LLMOPS_MILVUS_URI", ""),
    )
    _check_kubernetes_values(settings)
    return settings


def _check_kubernetes_values(settings: Settings) -> None:
    """Values that end up in pod specs: refuse what Kubernetes would refuse later, or worse, accept."""
    import re

    checks = [("LLMOPS_NAMESPACE", settings.namespace, DNS1123_LABEL_RE, "a lowercase DNS-1123 label, e.g. llmops"),
              ("LLMOPS_SERVICE_ACCOUNT", settings.service_account, DNS1123_SUBDOMAIN_RE, "e.g. llmops-jobs"),
              ("LLMOPS_MODEL_CACHE_PVC", settings.model_cache_pvc or "unset", DNS1123_SUBDOMAIN_RE,
               "the name of a PersistentVolumeClaim, or unset")]
    checks += [(f"LLMOPS_{name.upper()}", getattr(settings, name), IMAGE_RE, "e.g. registry.example/llmops/worker:0.1.0")
               for name in sorted(vars(settings)) if name.endswith("_image")]
    for variable, value, pattern, example in checks:
        if len(value) > 512 or not re.fullmatch(pattern.removesuffix("$"), value):
            shown = value if len(value) <= 80 else value[:80] + f"… ({len(value)} characters)"
            raise ValueError(f"{variable}={shown!r} is not valid in a Kubernetes pod spec; fix: set it to {example}")

