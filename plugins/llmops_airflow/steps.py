"""The step factory: one heavy step (`python -m llmops.jobs.<job>`), two runtimes.

runtime `local`      -> LocalJobOperator: a subprocess in the worker or serving environment
runtime `kubernetes` -> JobPodOperator (a KubernetesPodOperator): the worker image on the GPU profile's node pool

The DAG file does not change between the two; `LLMOPS_RUNTIME` decides (read once, at parse time).
Both return the job's `LLMOPS_RESULT` JSON as the task's XCom value, fail at once (no retries) when the
job exits with `EXIT_PERMANENT` (llmops.jobs._cli), retry otherwise, and link to what the job made
(`links.STEP_LINKS`: the publish step's manifest).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections import deque
from typing import Any

from airflow.sdk import BaseOperator

from llmops.artefacts.credentials import KUBERNETES_SECRET
from llmops.config import GpuProfile, load_registry
from llmops.jobs._cli import (
    EXIT_PERMANENT,
    JOB_ENV,
    RESULT_PREFIX,
    clean_line,
    job_env_allowed,
    line_level,
    parse_result,
)
from llmops.serving.processes import start_owned
from llmops.settings import PROJECT_ROOT, get_settings
from llmops_airflow.links import STEP_LINKS

ENVIRONMENTS = ("worker", "serving")
GPU_POOL = "gpu"
# Multi-GB images and model caches on a cold GPU node take minutes to pull.
POD_STARTUP_TIMEOUT_S = 30 * 60
MODEL_CACHE_MOUNT = "/models"
#: size limit of a job pod's /tmp (HOME, torch and Triton caches, temporary files; the model goes to /models)
JOB_TMP_SIZE = "50Gi"
#: Jobs that open the artefact store themselves and so get the `llmops_artefacts` credentials.
STORE_JOBS = frozenset({"publish"})


class JobFailed(RuntimeError):
    """A job failed in a way a retry may fix (transient error, crash): the task is retried."""


def job_environment(declared: dict[str, str], secrets: dict[str, str]) -> dict[str, str]:
    """The environment of a local job: the variables of this process the allow-list names
    (`llmops.jobs._cli.job_env_allowed`: system basics, LLMOPS_* settings, the ML libraries' knobs; never a
    secret-looking name), plus what the step declares (env_vars, secret_env, store_access): a job sees only its
    own secrets, never AIRFLOW_CONN_*, DATABASE_URL or SENTRY_DSN."""
    inherited = {name: value for name, value in os.environ.items() if job_env_allowed(name)}
    env = {**JOB_ENV, **inherited, **declared, **secrets}
    include = str(PROJECT_ROOT / "include")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [include, env.get("PYTHONPATH", "")]))
    return env


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
    from airflow.sdk.exceptions import AirflowNotFoundException

    values: dict[str, str] = {}
    for env_name, ref in secret_env.items():
        if not ref:  # e.g. a model without hf_connection_id
            continue
        conn_id, field = _split_secret_ref(ref)
        try:
            conn = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:  # not configured: optional
            continue
        value = conn.extra_dejson.get(field[6:]) if field.startswith("extra.") else getattr(conn, field, None)
        if value not in (None, ""):
            values[env_name] = str(value)
    return values


def object_store_secret_env(conn_id: str) -> dict[str, str]:
    """secret_env giving a job S3 and OSS credentials (the SDKs' own variable names) from one Connection of
    the `llmops_artefacts` kind: login/password = keys, extra endpoint_url / endpoint, region_name / region."""
    return {"AWS_ACCESS_KEY_ID": f"{conn_id}.login", "AWS_SECRET_ACCESS_KEY": f"{conn_id}.password",
            "AWS_ENDPOINT_URL": f"{conn_id}.extra.endpoint_url", "AWS_DEFAULT_REGION": f"{conn_id}.extra.region_name",
            "OSS_ACCESS_KEY_ID": f"{conn_id}.login", "OSS_ACCESS_KEY_SECRET": f"{conn_id}.password",
            "OSS_ENDPOINT": f"{conn_id}.extra.endpoint", "OSS_REGION": f"{conn_id}.extra.region"}


class LocalJobOperator(BaseOperator):
    """Run `python -m llmops.jobs.<job> *arguments` in a project environment, streaming its log.

    The job's environment holds no inherited secret: only `secret_env` (resolved from Connections at run
    time) and, with `store_access`, the `llmops_artefacts` credentials. Its lines reach the task log at
    their own level (errors as ERROR), cleaned of their own timestamps and of third-party noise. Exit
    status `EXIT_PERMANENT` fails the task without retries; any other failure is retried.
    """

    # secret_env holds references ("conn.field"), never values: templated so a mapped task group can pick
    # each item's Connection.
    template_fields = ("arguments", "env_vars", "secret_env")
    ui_color = "#e8f4ea"
    operator_extra_links = STEP_LINKS

    def __init__(self, *, job: str, arguments: list[Any] | None = None, environment: str = "worker",
                 env_vars: dict[str, str] | None = None, secret_env: dict[str, str] | None = None,
                 store_access: bool = False, **kwargs):
        super().__init__(**kwargs)
        if environment not in ENVIRONMENTS:
            raise ValueError(f"environment={environment!r}; fix: use one of {ENVIRONMENTS}")
        self.job = job
        # a list, or a mapped task group's argument resolved at run time
        self.arguments = arguments if arguments is not None else []
        self.environment = environment
        self.env_vars = dict(env_vars or {})
        self.secret_env = dict(secret_env or {})
        self.store_access = store_access
        for ref in self.secret_env.values():
            if isinstance(ref, str):
                _split_secret_ref(ref)
        self._process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        settings = get_settings()
        python = settings.worker_python if self.environment == "worker" else settings.serving_python
        return [python, "-m", f"llmops.jobs.{self.job}", *map(str, self.arguments)]

    def secrets(self) -> dict[str, str]:
        secrets = resolve_secret_env(self.secret_env)
        if self.store_access:
            from llmops_airflow.hooks.artefacts import ArtefactStoreHook

            secrets.update(ArtefactStoreHook().job_env())
        return secrets

    def execute(self, context):
        env = job_environment(self.env_vars, self.secrets())
        command = self.command()
        self.log.info("running %s step: %s", self.environment, " ".join(command))
        tail: deque[str] = deque(maxlen=30)
        errors: deque[str] = deque(maxlen=30)
        stdout: list[str] = []
        # Owned: the job and whatever it starts (validate's vLLM) die with this task process, also when the
        # task is SIGKILLed; on_kill's SIGTERM to the group stops the whole tree.
        self._process = start_owned(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1, env=env)
        assert self._process.stdout is not None
        level = logging.INFO
        try:
            for raw in self._process.stdout:
                line = clean_line(raw)
                if line is None:
                    continue
                if line.startswith(RESULT_PREFIX):
                    stdout.append(line)
                    continue
                level, text = line_level(line, level)
                tail.append(text)
                if level >= logging.ERROR:
                    errors.append(text)
                self.log.log(level, "%s", text)
            code = self._process.wait()
        except BaseException as exc:  # execution_timeout (AirflowTaskTimeout) or the task being stopped
            self.on_kill()
            if context.get("ti") is not None:
                seen = first_error_line(errors, tail) if (errors or tail) else ""
                context["ti"].xcom_push(key="error", value=f"{type(exc).__name__}: {exc}".rstrip(": ")
                                        + (f"; the job's last error: {seen}" if errors else ""))
            raise
        if code != 0 and context.get("ti") is not None:  # a pipeline's report shows this line of a failed step
            context["ti"].xcom_push(key="error", value=first_error_line(errors, tail))
        if code == EXIT_PERMANENT:
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"step llmops.jobs.{self.job}: permanent error, not retried:\n"
                                       + "\n".join(errors or tail))
        if code != 0:
            raise JobFailed(f"step llmops.jobs.{self.job} exited with {code}; last lines:\n" + "\n".join(tail))
        return parse_result("\n".join(stdout))

    def on_kill(self) -> None:
        if self._process and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)


#: The line a job's `fail()` logs (llmops.jobs._cli): the error with its fix and whether it is retried.
_FAIL_LINE = re.compile(r"\((?:permanent error, not retried|transient error, will be retried)\)$")
#: The last line of a Python traceback: `package.module.SomeError: message`.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Timeout|Failed)"
                             r"\b(?::|$)")


def first_error_line(errors, tail) -> str:
    """What a report shows of a failed step: the error the job reported (`fail()`'s line), else the exception
    line that ends its first traceback, else its first error line that is not part of a traceback (a frame or
    a source line such as `super().__init__(`), else its last line of output. Without the logger name."""
    lines = [line.strip() for line in errors if line.strip()]
    chosen = next((line for line in lines if _FAIL_LINE.search(line)), None)
    chosen = chosen or next((line for line in lines if _EXCEPTION_LINE.match(line)), None)
    chosen = chosen or next((line for line in lines if not line.startswith(("Traceback", "File \"", "^", "~"))
                             and not _looks_like_code(line)), None)
    chosen = chosen or next((line.strip() for line in reversed(list(tail)) if line.strip()), None)
    # our log lines read "logger.name: message"; an exception's type (ValueError, pkg.SomeError) is kept
    return re.sub(r"^(?:[a-z_]\w*\.)*[a-z_]\w*: ", "", chosen) if chosen else "the job printed nothing"


def _looks_like_code(line: str) -> bool:
    """A source line quoted in a traceback or a warning (`super().__init__(`, `return f(x)`), not a message."""
    return bool(re.search(r"[(\[{,]$", line)) or bool(re.match(r"^(return|raise|self\.|super\(\)|await |"
                                                                 r"[\w.]+\s*=[^=])", line))


def pod_settings(profile: GpuProfile | None, *, interruptible: bool = False) -> dict[str, Any]:
    """KubernetesPodOperator arguments for a GPU profile: resources, node selector, tolerations, pool, and the
    Pod Security Standards "restricted" settings (the same ones the vLLM pods get, see llmops.serving.manifests).

    `interruptible` (model_refresh's GPU steps): the pod may go to the profile's spot pool
    (`llmops.serving.manifests.step_placement`: the spot taint's toleration and a node affinity), since a
    reclaimed pod is retried (JobPodOperator) and the retry resumes from the model cache.

    Step pods run as uid 10001, drop every capability, forbid privilege escalation, use the RuntimeDefault
    seccomp profile, set CPU and memory requests and limits on every container (the xcom sidecar too) and
    mount no service-account token: no step calls the Kubernetes API (the Airflow worker reads the xcom
    sidecar, and RRSA's OIDC token is a projected volume of its own). Exceptions: none.
    """
    from kubernetes.client import models as k8s

    from llmops.serving.manifests import (
        restricted_container_security_context,
        restricted_pod_security_context,
        step_placement,
    )

    settings = get_settings()
    if settings.model_cache_pvc:
        cache = k8s.V1Volume(name="model-cache", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=settings.model_cache_pvc))
    else:
        cache = k8s.V1Volume(name="model-cache", empty_dir=k8s.V1EmptyDirVolumeSource())
    # The root filesystem is read-only (restricted_container_security_context(read_only_root=True)): HOME and
    # every temporary file of a job go to /tmp, a size-limited emptyDir; the model cache is its own volume.
    scratch = k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=JOB_TMP_SIZE))
    result: dict[str, Any] = {
        "volumes": [cache, scratch],
        "volume_mounts": [k8s.V1VolumeMount(name="model-cache", mount_path=MODEL_CACHE_MOUNT),
                          k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        "container_resources": k8s.V1ResourceRequirements(
            requests={"cpu": "2", "memory": "8Gi"}, limits={"cpu": "4", "memory": "32Gi"}),
        "security_context": restricted_pod_security_context(),
        "container_security_context": restricted_container_security_context(read_only_root=True),
        # the sidecar only sleeps until the worker reads /airflow/xcom (a volume) through exec
        "xcom_sidecar_container_security_context": restricted_container_security_context(read_only_root=True),
        "automount_service_account_token": False,
    }
    if profile is not None:
        gpu = {profile.resource_name: str(profile.resource_per_replica)}
        placement = step_placement(profile, interruptible=interruptible)
        result.update(
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": "4", "memory": "32Gi", **gpu}, limits={"cpu": "8", "memory": "64Gi", **gpu}),
            node_selector=placement["nodeSelector"],
            tolerations=[k8s.V1Toleration(**t) for t in placement["tolerations"]],
            pool=GPU_POOL,
        )
        if "affinity" in placement:
            result["affinity"] = placement["affinity"]  # the operator converts the dict itself
    return result


def _kubernetes_kwargs(job: str, environment: str, gpu_profile: str | None, image: str | None,
                       env_vars: dict[str, str] | None, secret_env: dict[str, str] | None,
                       store_access: bool = False) -> dict[str, Any]:
    from kubernetes.client import models as k8s

    settings = get_settings()
    profile = load_registry().gpu_profile(gpu_profile) if gpu_profile else None
    pod_env = {**JOB_ENV, "LLMOPS_RUNTIME": "kubernetes", "LLMOPS_STORE_URI": settings.store_uri,
               "HF_HOME": f"{MODEL_CACHE_MOUNT}/hf",
               # Pods run as uid 10001 (pod_settings); the vLLM/TensorRT-LLM images' HOME (/root) is not theirs.
               "HOME": "/tmp", **(env_vars or {})}
    return {
        "kubernetes_conn_id": settings.kubernetes_connection_id,
        "namespace": settings.namespace,
        "image": image or (settings.serving_image if environment == "serving" else settings.worker_image),
        "name": f"llmops-{job.replace('_', '-')}",
        "cmds": ["python", "-m", f"llmops.jobs.{job}"],
        # In pods, secrets come from Kubernetes Secrets named after the Connection (never from the pod
        # spec): {"HF_TOKEN": "huggingface_default.password"} reads key `password` of `llmops-huggingface-default`.
        # Optional, like a missing Connection locally: the variable is then unset and the job runs
        # anonymously (or with RRSA) or fails with its own clear error.
        "env_vars": [*(k8s.V1EnvVar(name=name, value=value) for name, value in pod_env.items()),
                     *(k8s.V1EnvVar(name=env_name, value_from=k8s.V1EnvVarSource(
                         secret_key_ref=k8s.V1SecretKeySelector(name=kubernetes_secret_name(ref),
                                                                key=_split_secret_ref(ref)[1], optional=True)))
                       for env_name, ref in (secret_env or {}).items())],
        # Store credentials (AWS_* / OSS_* as in llmops.artefacts.credentials) from an optional Secret:
        # without it the SDK's default chain applies (RRSA on ACK).
        "env_from": [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(
            name=ARTEFACTS_SECRET, optional=True))] if store_access else [],
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


def pod_secret_env(secret_env: dict[str, str]) -> list[dict]:
    """secret_env ({ENV: "conn_id.field"}) as a pod container's `env`: each from the optional Kubernetes Secret
    named after the Connection (JSON, for a pod template an item carries through XCom)."""
    return [{"name": env_name, "valueFrom": {"secretKeyRef": {
        "name": kubernetes_secret_name(ref), "key": _split_secret_ref(ref)[1], "optional": True}}}
        for env_name, ref in secret_env.items()]


#: The Kubernetes Secret whose keys (AWS_ACCESS_KEY_ID, ... or OSS_*) become a store-touching pod's env.
ARTEFACTS_SECRET = KUBERNETES_SECRET


def _local_kwargs(job: str, environment: str, env_vars: dict[str, str] | None,
                  secret_env: dict[str, str] | None, store_access: bool = False) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"job": job, "environment": environment, "env_vars": env_vars or {},
                              "store_access": store_access}
    if secret_env is not None:  # else a mapped step's items may each carry their own
        kwargs["secret_env"] = secret_env
    return kwargs


def heavy_step(*, task_id: str, job: str, arguments: list[Any] | None = None, environment: str = "worker",
               gpu_profile: str | None = None, image: str | None = None,
               env_vars: dict[str, str] | None = None, secret_env: dict[str, str] | None = None,
               store_access: bool | None = None, runtime: str | None = None, **operator_kwargs):
    """Return the operator that runs `llmops.jobs.<job>` on the configured runtime.

    secret_env: {ENV: "conn_id.field"}, the only secrets the job sees. store_access: the job opens the
    artefact store and gets the `llmops_artefacts` credentials (locally from the Connection, in pods from
    the optional Secret `llmops-llmops-artefacts`, else RRSA); default: the jobs in STORE_JOBS.
    """
    store_access = job in STORE_JOBS if store_access is None else store_access
    runtime = runtime or get_settings().runtime
    if runtime == "kubernetes":
        from llmops_airflow.pod import JobPodOperator

        if isinstance(arguments, list):  # else a mapped task group's argument, resolved at run time
            arguments = [str(a) for a in arguments]
        # operator_kwargs override the defaults (e.g. an item's own node selector and resources)
        kwargs = {**_kubernetes_kwargs(job, environment, gpu_profile, image, env_vars, secret_env, store_access),
                  **operator_kwargs}
        return JobPodOperator(task_id=task_id, arguments=arguments or [], **kwargs)
    return LocalJobOperator(task_id=task_id, arguments=arguments,
                            **_local_kwargs(job, environment, env_vars, secret_env, store_access), **operator_kwargs)


def heavy_step_partial(*, task_id: str, job: str, environment: str = "worker", gpu_profile: str | None = None,
                       image: str | None = None, env_vars: dict[str, str] | None = None,
                       secret_env: dict[str, str] | None = None, store_access: bool | None = None,
                       runtime: str | None = None, **operator_kwargs):
    """`heavy_step` for dynamic task mapping: returns `Operator.partial(...)`; call `.expand(arguments=...)`."""
    store_access = job in STORE_JOBS if store_access is None else store_access
    runtime = runtime or get_settings().runtime
    if runtime == "kubernetes":
        from llmops_airflow.pod import JobPodOperator

        return JobPodOperator.partial(
            task_id=task_id,
            **_kubernetes_kwargs(job, environment, gpu_profile, image, env_vars, secret_env, store_access),
            **operator_kwargs)
    return LocalJobOperator.partial(
        task_id=task_id, **_local_kwargs(job, environment, env_vars, secret_env, store_access), **operator_kwargs)
