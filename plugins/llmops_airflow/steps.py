"""The step factory: one heavy step (`python -m llmops.jobs.<job>`), two runtimes.

runtime `local`      -> LocalJobOperator: a subprocess in the worker or serving environment
runtime `kubernetes` -> KubernetesPodOperator: the worker image on the GPU profile's node pool

The DAG file does not change between the two; `LLMOPS_RUNTIME` decides (read once, at parse time).
Both return the job's `LLMOPS_RESULT` JSON as the task's XCom value.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import deque
from typing import Any

from airflow.sdk import BaseOperator

from llmops.config import GpuProfile, load_registry
from llmops.jobs._cli import RESULT_PREFIX, parse_result
from llmops.settings import PROJECT_ROOT, get_settings

ENVIRONMENTS = ("worker", "serving")
GPU_POOL = "gpu"
# Multi-GB images and model caches on a cold GPU node take minutes to pull.
POD_STARTUP_TIMEOUT_S = 30 * 60
MODEL_CACHE_MOUNT = "/models"


class JobFailed(RuntimeError):
    pass


def _split_secret_ref(ref: str) -> tuple[str, str]:
    conn_id, _, field = ref.partition(".")
    if not conn_id or not field:
        raise ValueError(f"secret reference {ref!r}; fix: write '<conn_id>.<field>', e.g. 'huggingface_default.password'")
    return conn_id, field


def resolve_secret_env(secret_env: dict[str, str]) -> dict[str, str]:
    """{ENV: "conn_id.field"} -> {ENV: value} from Airflow Connections, at run time, never rendered or logged.

    `field` is a Connection attribute (password, login, host, schema, port) or `extra.<key>`. A missing
    Connection leaves the variable unset: the job then runs anonymously or fails with its own clear error.
    """
    from airflow.sdk import BaseHook

    values: dict[str, str] = {}
    for env_name, ref in secret_env.items():
        conn_id, field = _split_secret_ref(ref)
        try:
            conn = BaseHook.get_connection(conn_id)
        except Exception:  # not configured
            continue
        value = conn.extra_dejson.get(field[6:]) if field.startswith("extra.") else getattr(conn, field, None)
        if value not in (None, ""):
            values[env_name] = str(value)
    return values


class LocalJobOperator(BaseOperator):
    """Run `python -m llmops.jobs.<job> *arguments` in a project environment, streaming its log."""

    template_fields = ("arguments", "env_vars")
    ui_color = "#e8f4ea"

    def __init__(self, *, job: str, arguments: list[Any] | None = None, environment: str = "worker",
                 env_vars: dict[str, str] | None = None, secret_env: dict[str, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        if environment not in ENVIRONMENTS:
            raise ValueError(f"environment={environment!r}; fix: use one of {ENVIRONMENTS}")
        self.job = job
        self.arguments = list(arguments or [])
        self.environment = environment
        self.env_vars = dict(env_vars or {})
        self.secret_env = dict(secret_env or {})
        for ref in self.secret_env.values():
            _split_secret_ref(ref)
        self._process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        settings = get_settings()
        python = settings.worker_python if self.environment == "worker" else settings.serving_python
        return [python, "-m", f"llmops.jobs.{self.job}", *map(str, self.arguments)]

    def execute(self, context):
        env = {**os.environ, **self.env_vars, **resolve_secret_env(self.secret_env)}
        include = str(PROJECT_ROOT / "include")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [include, env.get("PYTHONPATH", "")]))
        command = self.command()
        self.log.info("running %s step: %s", self.environment, " ".join(command))
        tail: deque[str] = deque(maxlen=30)
        stdout: list[str] = []
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=env, start_new_session=True,
        )
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT_PREFIX):
                stdout.append(line)
                continue
            tail.append(line)
            self.log.info("%s", line)
        code = self._process.wait()
        if code != 0:
            raise JobFailed(f"step llmops.jobs.{self.job} exited with {code}; last lines:\n" + "\n".join(tail))
        return parse_result("\n".join(stdout))

    def on_kill(self) -> None:
        if self._process and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)


def pod_settings(profile: GpuProfile | None) -> dict[str, Any]:
    """KubernetesPodOperator arguments for a GPU profile: resources, node selector, tolerations, pool, and the
    Pod Security Standards "restricted" settings (the same ones the vLLM pods get, see llmops.serving.manifests).

    Step pods run as uid 10001, drop every capability, forbid privilege escalation, use the RuntimeDefault
    seccomp profile, set CPU and memory requests and limits on every container (the xcom sidecar too) and
    mount no service-account token: no step calls the Kubernetes API (the Airflow worker reads the xcom
    sidecar, and RRSA's OIDC token is a projected volume of its own). Exceptions: none.
    """
    from kubernetes.client import models as k8s

    from llmops.serving.manifests import restricted_container_security_context, restricted_pod_security_context

    settings = get_settings()
    if settings.model_cache_pvc:
        cache = k8s.V1Volume(name="model-cache", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=settings.model_cache_pvc))
    else:
        cache = k8s.V1Volume(name="model-cache", empty_dir=k8s.V1EmptyDirVolumeSource())
    result: dict[str, Any] = {
        "volumes": [cache],
        "volume_mounts": [k8s.V1VolumeMount(name="model-cache", mount_path=MODEL_CACHE_MOUNT)],
        "container_resources": k8s.V1ResourceRequirements(
            requests={"cpu": "2", "memory": "8Gi"}, limits={"cpu": "4", "memory": "32Gi"}),
        "security_context": restricted_pod_security_context(),
        "container_security_context": restricted_container_security_context(),
        "xcom_sidecar_container_security_context": restricted_container_security_context(),
        "automount_service_account_token": False,
    }
    if profile is not None:
        gpu = {profile.resource_name: str(profile.resource_per_replica)}
        result.update(
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": "4", "memory": "32Gi", **gpu}, limits={"cpu": "8", "memory": "64Gi", **gpu}),
            node_selector=dict(profile.node_selector),
            tolerations=[k8s.V1Toleration(**t.model_dump(exclude_none=True)) for t in profile.tolerations],
            pool=GPU_POOL,
        )
    return result


def _kubernetes_kwargs(job: str, environment: str, gpu_profile: str | None, image: str | None,
                       env_vars: dict[str, str] | None, secret_env: dict[str, str] | None) -> dict[str, Any]:
    from airflow.providers.cncf.kubernetes.secret import Secret

    settings = get_settings()
    profile = load_registry().gpu_profile(gpu_profile) if gpu_profile else None
    pod_env = {"LLMOPS_RUNTIME": "kubernetes", "LLMOPS_STORE_URI": settings.store_uri,
               "HF_HOME": f"{MODEL_CACHE_MOUNT}/hf",
               # Pods run as uid 10001 (pod_settings); the vLLM/TensorRT-LLM images' HOME (/root) is not theirs.
               "HOME": "/tmp", **(env_vars or {})}
    return {
        "kubernetes_conn_id": settings.kubernetes_connection_id,
        "namespace": settings.namespace,
        "image": image or (settings.serving_image if environment == "serving" else settings.worker_image),
        "name": f"llmops-{job.replace('_', '-')}",
        "cmds": ["python", "-m", f"llmops.jobs.{job}"],
        "env_vars": pod_env,
        # In pods, secrets come from Kubernetes Secrets named after the Connection (never from the pod
        # spec): {"HF_TOKEN": "huggingface_default.password"} reads key `password` of `llmops-huggingface-default`.
        "secrets": [Secret("env", env_name, kubernetes_secret_name(ref), _split_secret_ref(ref)[1])
                    for env_name, ref in (secret_env or {}).items()],
        "service_account_name": settings.service_account,
        "labels": {"app.kubernetes.io/part-of": "llmops", "llmops/step": job.replace("_", "-"),
                   "llmops/environment": environment},
        "deferrable": True,
        "reattach_on_restart": True,
        "startup_timeout_seconds": POD_STARTUP_TIMEOUT_S,
        "get_logs": True,
        "log_events_on_failure": True,
        "do_xcom_push": True,
        "on_finish_action": "delete_succeeded_pod",
        **pod_settings(profile),
    }


def kubernetes_secret_name(ref: str) -> str:
    return "llmops-" + _split_secret_ref(ref)[0].replace("_", "-")


def _local_kwargs(job: str, environment: str, env_vars: dict[str, str] | None,
                  secret_env: dict[str, str] | None) -> dict[str, Any]:
    return {"job": job, "environment": environment, "env_vars": env_vars or {}, "secret_env": secret_env or {}}


def heavy_step(*, task_id: str, job: str, arguments: list[Any] | None = None, environment: str = "worker",
               gpu_profile: str | None = None, image: str | None = None,
               env_vars: dict[str, str] | None = None, secret_env: dict[str, str] | None = None,
               runtime: str | None = None, **operator_kwargs):
    """Return the operator that runs `llmops.jobs.<job>` on the configured runtime."""
    runtime = runtime or get_settings().runtime
    if runtime == "kubernetes":
        from llmops_airflow.pod_operator import RestrictedPodOperator

        return RestrictedPodOperator(task_id=task_id, arguments=[str(a) for a in arguments or []],
                                     **_kubernetes_kwargs(job, environment, gpu_profile, image, env_vars,
                                                          secret_env),
                                     **operator_kwargs)
    return LocalJobOperator(task_id=task_id, arguments=arguments,
                            **_local_kwargs(job, environment, env_vars, secret_env), **operator_kwargs)


def heavy_step_partial(*, task_id: str, job: str, environment: str = "worker", gpu_profile: str | None = None,
                       image: str | None = None, env_vars: dict[str, str] | None = None,
                       secret_env: dict[str, str] | None = None, runtime: str | None = None, **operator_kwargs):
    """`heavy_step` for dynamic task mapping: returns `Operator.partial(...)`; call `.expand(arguments=...)`."""
    runtime = runtime or get_settings().runtime
    if runtime == "kubernetes":
        from llmops_airflow.pod_operator import RestrictedPodOperator

        return RestrictedPodOperator.partial(
            task_id=task_id, **_kubernetes_kwargs(job, environment, gpu_profile, image, env_vars, secret_env),
            **operator_kwargs)
    return LocalJobOperator.partial(task_id=task_id, **_local_kwargs(job, environment, env_vars, secret_env),
                                    **operator_kwargs)
