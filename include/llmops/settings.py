"""The one place include/llmops reads the process environment (tier 1 of the config tiers), once.

`Settings` holds the deployment settings (LLMOPS_*, HF_ENDPOINT, MILVUS_URI). `Credentials` holds what a
job is handed as declared environment for the systems it talks to: the step factory (plugins/) resolves
Airflow Connections with Airflow's own API and passes exactly these variables to the job (locally as the
subprocess's environment, in pods from Kubernetes Secrets; RRSA/IRSA when none is set). Nothing here parses
an Airflow format, and credential values never appear in a repr or a log line.
Every other module takes these values from `get_settings()` (tests/unit/test_settings.py greps for reads
elsewhere); a child process gets `child_environment()`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from llmops.errors import SettingsError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = ("local", "kubernetes")

# Names Kubernetes accepts: an RFC 1123 label (namespaces, Services) and subdomain (service accounts, PVCs).
DNS1123_LABEL_RE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS1123_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# An image reference: [registry[:port]/]path[:tag][@sha256:digest], no spaces or control characters.
IMAGE_RE = (r"^([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?/)?[a-z0-9]+([._-]{1,2}[a-z0-9]+)*"
            r"(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")


#: Object-store variables a job may be given, under the SDKs' own names (boto3, oss2): keys, session tokens,
#: endpoints and regions. llmops.artefacts.credentials maps them to `open_store` credentials.
OBJECT_STORE_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                          "AWS_DEFAULT_REGION", "AWS_REGION", "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET",
                          "OSS_SESSION_TOKEN", "OSS_ENDPOINT", "OSS_REGION")

#: Signed lineage (llmops.artefacts.signing): the publish step's private key (PEM; from Connection `llmops_signing`,
#: the name matches the jobs' secret pattern so no other step inherits it), and the fetch init container's trusted
#: public keys (PEM blocks, not secret).
SIGNING_KEY_ENV = "LLMOPS_SIGNING_PRIVATE_KEY"
TRUSTED_KEYS_ENV = "LLMOPS_TRUSTED_PUBLIC_KEYS"


@dataclass(frozen=True)
class Credentials:
    """Credentials a job was handed as declared environment; empty strings where none was. Values never
    show in repr (the doctor job lists the names set)."""

    hf_token: str = field(default="", repr=False)
    """HF_TOKEN: the model's Hugging Face Connection's password (download job)."""
    milvus_token: str = field(default="", repr=False)
    """MILVUS_TOKEN: the milvus_default Connection's password (kb_reindex job)."""
    object_store: Mapping[str, str] = field(default_factory=dict, repr=False)
    """OBJECT_STORE_VARIABLES that are set, by name (publish, fetch and kb_reindex with an S3/OSS source)."""
    signing_key: str = field(default="", repr=False)
    """SIGNING_KEY_ENV: the llmops_signing Connection's password, a PEM private key (publish job only)."""

    @staticmethod
    def named(variable: str | None) -> str:
        """The value of a variable a registry file names (`embedder.api_key_env`); "" when unset or unnamed."""
        return os.environ.get(variable, "").strip() if variable else ""


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
    milvus_default_uri: str = ""
    """MILVUS_URI: the Milvus of knowledge bases that name none (the step factory fills it from the
    milvus_default Connection's host)."""
    kb_lease_ttl_s: float = 60.0
    """LLMOPS_KB_LEASE_TTL_S: a kb_reindex run's lease in Milvus lasts this long unless renewed (every ttl/3)."""
    kb_lease_wait_s: float = 0.0
    """LLMOPS_KB_LEASE_WAIT_S: how long a kb_reindex run waits for another run of the same knowledge base before it
    exits "already running" (0: at once)."""
    hf_endpoint: str = ""
    """HF_ENDPOINT: a hub mirror used by models without their own `endpoint` (huggingface_hub's own name)."""
    vllm_ready_timeout_s: float = 900.0
    """LLMOPS_VLLM_READY_TIMEOUT_S: how long a local vLLM server (the validate step's, the local serving runtime's)
    may take to become ready. ~40 s on an idle 2-core machine, 10-15 min under load 20-40. An expired wait is
    transient once: the retry waits twice as long; a second expiry is permanent."""
    trtllm_ready_timeout_s: float = 1800.0
    """LLMOPS_TRTLLM_READY_TIMEOUT_S: how long TensorRT-LLM may take to load a checkpoint in the validate step
    (GPU pods; first loads compile kernels). Expiry is transient once, like vLLM's."""
    credentials: Credentials = field(default_factory=Credentials, repr=False)
    """What this job was handed for the systems it talks to (see `Credentials`)."""
    trusted_public_keys: str = ""
    """TRUSTED_KEYS_ENV: PEM public keys the fetch init container verifies a version's signature with."""
    pause_dir: str = ""
    """LLMOPS_PAUSE_DIR: tests only, where `llmops.seams.pause_point` looks for pause requests (unset: never pauses)."""

    @property
    def venvs(self) -> Path:
        return self.home / "venvs"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _seconds(name: str, default: float, minimum: float = 0.0) -> float:
    raw = _env(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= minimum or value == float("inf"):
        raise SettingsError(f"{name}={raw!r} is not a number of seconds >= {minimum:g}",
                            fix=f"set it to a number like {default:g}, or unset it")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    home = Path(_env("LLMOPS_HOME", str(PROJECT_ROOT / ".llmops"))).resolve()
    runtime = _env("LLMOPS_RUNTIME", "local")
    if runtime not in RUNTIMES:
        raise SettingsError(f"LLMOPS_RUNTIME={runtime!r} is not a runtime", fix=f"set it to one of {', '.join(RUNTIMES)}")
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
        milvus_default_uri=_env("MILVUS_URI", ""),
        kb_lease_ttl_s=_seconds("LLMOPS_KB_LEASE_TTL_S", 60.0, minimum=3.0),
        kb_lease_wait_s=_seconds("LLMOPS_KB_LEASE_WAIT_S", 0.0),
        hf_endpoint=_env("HF_ENDPOINT", ""),
        vllm_ready_timeout_s=_seconds("LLMOPS_VLLM_READY_TIMEOUT_S", 900.0, minimum=1),
        trtllm_ready_timeout_s=_seconds("LLMOPS_TRTLLM_READY_TIMEOUT_S", 1800.0, minimum=1),
        credentials=Credentials(
            hf_token=_env("HF_TOKEN", ""), milvus_token=_env("MILVUS_TOKEN", ""),
            object_store={name: value for name in OBJECT_STORE_VARIABLES if (value := _env(name, ""))},
            signing_key=_env(SIGNING_KEY_ENV, "")),
        trusted_public_keys=_env(TRUSTED_KEYS_ENV, ""),
        pause_dir=_env("LLMOPS_PAUSE_DIR", ""),
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
            raise SettingsError(f"{variable}={shown!r} is not valid in a Kubernetes pod spec", fix=f"set it to {example}")



def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process this one starts (a vLLM server, a job of the demo): this process's,
    plus `extra`."""
    return {**os.environ, **(extra or {})}


def set_process_defaults(values: Mapping[str, str]) -> None:
    """Variables third-party libraries of this process read themselves (log format, progress bars), unless
    the caller set them already."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


def present_variables() -> list[str]:
    """Names (never values) of the variables set in this process: the doctor job lists credential names."""
    return sorted(name for name, value in os.environ.items() if value)
