"""The step factory on both runtimes: a real subprocess locally, a valid GPU pod spec on Kubernetes."""

from __future__ import annotations

import kubernetes_validate
import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import ApiClient

from llmops.jobs._cli import clean_line, line_level
from llmops_airflow.pod import JobPodOperator
from llmops_airflow.steps import GPU_POOL, POD_STARTUP_TIMEOUT_S, JobFailed, LocalJobOperator, heavy_step
from support.ack import KUBERNETES_VERSION


def test_local_step_runs_in_the_worker_environment_and_returns_its_result():
    """The worker venv has torch; the Airflow venv running this test does not."""
    op = heavy_step(task_id="doctor", job="doctor", runtime="local")
    assert isinstance(op, LocalJobOperator)
    result = op.execute(context={})
    assert "torch" in result["tools"] and "apache-airflow" not in result["tools"]
    assert result["gpus"] == []  # CPU machine


def test_local_step_failure_shows_the_last_lines():
    op = heavy_step(task_id="nope", job="does_not_exist", runtime="local")
    with pytest.raises(JobFailed, match="No module named llmops.jobs.does_not_exist"):
        op.execute(context={})


def test_unknown_environment_refused():
    with pytest.raises(ValueError, match="fix: use one of"):
        heavy_step(task_id="x", job="doctor", environment="gpu", runtime="local")


def _pod(op) -> dict:
    pod = op.build_pod_request_obj(context=None, dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


@pytest.mark.parametrize(("profile", "resource", "amount"), [("a10", "nvidia.com/gpu", "1"),
                                                              ("a10-shared", "aliyun.com/gpu-mem", "12"),
                                                              ("h100", "nvidia.com/gpu", "1")])
def test_kubernetes_step_is_a_valid_gpu_pod(profile, resource, amount):
    op = heavy_step(task_id="quantize", job="quantize", arguments=["--model", "tiny-llama"],
                    gpu_profile=profile, runtime="kubernetes")
    assert isinstance(op, KubernetesPodOperator) and isinstance(op, JobPodOperator)
    assert op.deferrable is True and op.pool == GPU_POOL
    assert op.startup_timeout_seconds == POD_STARTUP_TIMEOUT_S
    pod = _pod(op)
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["command"] == ["python", "-m", "llmops.jobs.quantize"]
    assert container["args"] == ["--model", "tiny-llama"]
    assert container["resources"]["limits"][resource] == amount
    assert spec["nodeSelector"]["aliyun.accelerator/nvidia_name"].startswith("NVIDIA-A10" if "a10" in profile
                                                                               else "NVIDIA-H100")
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["serviceAccountName"] == "llmops-jobs"
    assert any(m["mountPath"] == "/models" for m in container["volumeMounts"])


def test_kubernetes_step_without_gpu_takes_no_gpu_pool():
    op = heavy_step(task_id="download", job="download", runtime="kubernetes")
    pod = _pod(op)
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert op.pool != GPU_POOL
    assert "nvidia.com/gpu" not in pod["spec"]["containers"][0]["resources"].get("limits", {})


def test_secret_env_comes_from_a_connection_at_run_time(monkeypatch):
    """The Connection is set through AIRFLOW_CONN_* (how compose and Helm provide them), not mocked."""
    monkeypatch.setenv("AIRFLOW_CONN_HUGGINGFACE_TEST", '{"conn_type": "generic", "password": "hf_s3cret"}')
    monkeypatch.delenv("HF_TOKEN", raising=False)
    op = heavy_step(task_id="doctor", job="doctor", runtime="local",
                    secret_env={"HF_TOKEN": "huggingface_test.password", "MILVUS_TOKEN": "absent_conn.password"})
    assert "hf_s3cret" not in repr(op.env_vars) + repr(op.secret_env)
    result = op.execute(context={})
    assert result["credentials"] == ["HF_TOKEN"]


def test_secret_env_in_pods_reads_kubernetes_secrets():
    op = heavy_step(task_id="download", job="download", runtime="kubernetes",
                    secret_env={"HF_TOKEN": "huggingface_default.password"})
    pod = _pod(op)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    ref = env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    # optional, like a missing Connection locally: the variable is then unset
    assert ref == {"name": "llmops-huggingface-default", "key": "password", "optional": True}
    assert not pod["spec"]["containers"][0].get("envFrom")  # download never opens the store


def test_malformed_secret_reference_refused():
    with pytest.raises(ValueError, match="conn_id>.<field>"):
        heavy_step(task_id="x", job="doctor", runtime="local", secret_env={"HF_TOKEN": "huggingface_default"})


def test_publish_pods_read_the_store_credentials_from_an_optional_secret():
    op = heavy_step(task_id="publish", job="publish", runtime="kubernetes")
    pod = _pod(op)
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    assert pod["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "llmops-llmops-artefacts", "optional": True}}]
    assert heavy_step(task_id="publish", job="publish", runtime="local").store_access


def test_job_lines_lose_their_own_timestamp_and_third_party_noise():
    assert clean_line("2026-11-29T11:40:00.1234 | oneshot | INFO - Compressing model") == "oneshot | INFO - Compressing model"
    assert clean_line("2026-11-29 11:40:00,123 INFO llmops.x: hello") == "INFO llmops.x: hello"
    for noise in ["Batches: 100%|##########| 1/1 [00:00<00:00, 12.3it/s]",
                  "INFO faiss.loader: Loading faiss with AVX2 support.",
                  "I0000 00:00:1732000000.123456   12345 chttp2_transport.cc:1178] ipv4:127.0.0.1:19530: "
                  "Got goaway [2] err=UNAVAILABLE:GOAWAY received", ""]:
        assert clean_line(noise) is None, noise
    assert clean_line('LLMOPS_RESULT {"a": 1}') == 'LLMOPS_RESULT {"a": 1}'


def test_job_lines_keep_their_level():
    import logging

    assert line_level("ERROR llmops.jobs.download: bad") == (logging.ERROR, "llmops.jobs.download: bad")
    assert line_level("oneshot | WARNING - careful")[0] == logging.WARNING
    assert line_level("Traceback (most recent call last):")[0] == logging.ERROR
    assert line_level("  - models[0]: what", logging.ERROR)[0] == logging.ERROR  # an error's continuation
    assert line_level("plain print", logging.INFO) == (logging.INFO, "plain print")


def test_a_permanent_job_error_is_logged_as_error_and_fails_without_retry(capsys, tmp_path):
    """The real download job, asked for a model the registry does not have."""
    import re

    op = heavy_step(task_id="download", job="download", runtime="local",
                    arguments=["--model", "no-such-model", "--revision-sha", "f" * 40, "--out", str(tmp_path)])
    with pytest.raises(AirflowFailException, match="has no model named 'no-such-model'"):
        op.execute(context={})
    lines = capsys.readouterr().out.splitlines()  # the task log, as Airflow's logger renders it
    (error,) = [line for line in lines if "has no model named 'no-such-model' (known" in line]
    assert "[error" in error
    stamp = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")
    assert all(len(stamp.findall(line)) <= 1 for line in lines)  # Airflow's timestamp, not the job's too


def test_in_process_tasks_fail_at_once_on_permanent_errors_only():
    from llmops.errors import ConfigError
    from llmops.hub.errors import HubUnavailableError
    from llmops_airflow.failures import permanent_errors_fail_at_once

    with pytest.raises(AirflowFailException, match="has no model"), permanent_errors_fail_at_once():
        raise ConfigError("models.yaml", [("", "has no model named 'x'", "add it")])
    with pytest.raises(HubUnavailableError), permanent_errors_fail_at_once():  # retried
        raise HubUnavailableError("mirror down; fix: rerun")
    with pytest.raises(OSError), permanent_errors_fail_at_once():  # not ours: retried
        raise OSError("disk")


def test_refresh_gpu_steps_get_spare_tries_and_reattach_on_restart():
    """A spot reclaim costs a try: quantize and validate get GPU_STEP_RETRIES (a permanent error still fails at
    once), and a restarted worker re-attaches to the running pod instead of starting it again."""
    from airflow.sdk import DAG

    from llmops_airflow.refresh_tasks import GPU_STEP_RETRIES, item_chain

    with DAG("model_refresh_check", schedule=None) as dag:
        item_chain(download=["--model", "m"], quantize=["--item", "{}"], validate=["--item", "{}"],
                   publish=["--item", "{}"], hf_token=None, quantize_image="w:1", validate_image="v:1",
                   node_selector={}, gpu_resources={}, download_pod={}, gpu_pod={}, runtime="kubernetes")
    tasks = {t.task_id: t for t in dag.tasks}
    assert GPU_STEP_RETRIES > 2
    assert tasks["quantize"].retries == tasks["validate"].retries == GPU_STEP_RETRIES
    assert tasks["download"].retries < GPU_STEP_RETRIES
    assert all(t.reattach_on_restart for t in tasks.values())


def test_a_local_job_inherits_only_allowed_variables(monkeypatch):
    """A real job (doctor, which lists the variable names it sees): ambient variables of the worker stay out,
    settings and library knobs come through, a secret-looking name never does unless the step declares it."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:pw@db/airflow")
    monkeypatch.setenv("SENTRY_DSN", "https://key@sentry.example/1")
    monkeypatch.setenv("SOME_RANDOM_SETTING", "x")
    monkeypatch.setenv("LLMOPS_SOMETHING", "kept")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_ambient_token")
    op = heavy_step(task_id="doctor", job="doctor", runtime="local", env_vars={"DECLARED_SETTING": "y"})
    seen = set(op.execute(context={})["variables"])
    assert not {"DATABASE_URL", "SENTRY_DSN", "SOME_RANDOM_SETTING", "HF_TOKEN"} & seen
    assert {"LLMOPS_SOMETHING", "HF_HUB_OFFLINE", "PATH", "DECLARED_SETTING"} <= seen
    assert not any(name.startswith("AIRFLOW") for name in seen)


def test_the_report_line_of_a_failed_step_is_its_real_error():
    from llmops_airflow.steps import first_error_line

    traceback = ["Traceback (most recent call last):", '  File "/x/transformers/modeling.py", line 9, in __init__',
                 "    super().__init__(", "RuntimeError: CUDA out of memory"]
    assert first_error_line(traceback, []) == "RuntimeError: CUDA out of memory"
    warned = ["/x/torch/nn/modules.py:12: UserWarning: deprecated", "super().__init__(",
              "llmops.jobs.validate: vLLM did not become ready on /w/checkpoint within 600 s; fix: see its log "
              "(transient error, will be retried)"]
    assert first_error_line(warned, []).startswith("vLLM did not become ready on /w/checkpoint within 600 s; fix:")
    assert first_error_line(["super().__init__(", "something broke"], []) == "something broke"
    assert first_error_line([], ["loading", "last words"]) == "last words"


def test_a_step_stopped_by_its_timeout_stops_the_job_and_records_why(tmp_path):
    """Airflow's execution_timeout raises in the task's main thread from a SIGALRM handler; here the same alarm
    raises the same way while the real job runs. `ti` records the pushed XCom (no task instance runs here)."""
    import signal
    import time

    from airflow.sdk.exceptions import AirflowTaskTimeout

    from llmops.serving.processes import process_alive

    class Recorder:
        pushed: dict = {}

        def xcom_push(self, key, value):
            self.pushed[key] = value

    def timeout(signum, frame):
        raise AirflowTaskTimeout("Timeout, PID: 1")

    op = heavy_step(task_id="tiny", job="make_tiny_model", arguments=["--out", str(tmp_path / "m")], runtime="local")
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(3)
    try:
        with pytest.raises(AirflowTaskTimeout):
            op.execute(context={"ti": Recorder()})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert Recorder.pushed["error"].startswith("AirflowTaskTimeout: Timeout")
    deadline = time.monotonic() + 60
    while process_alive(op._process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert op._process.poll() is not None, "the job was stopped with its task"


def test_every_step_links_to_its_runs_report(monkeypatch):
    from types import SimpleNamespace

    from llmops_airflow.links import REPORT_TASK, RunReportLink

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:28080/")
    op = heavy_step(task_id="download", job="download", runtime="local")
    link = next(link for link in op.operator_extra_links if isinstance(link, RunReportLink))
    url = link.get_link(op, ti_key=SimpleNamespace(dag_id="model_refresh", run_id="manual__2026-12-04T17:00:00+00:00",
                                                   task_id="item.download", map_index=0))
    assert url == ("http://127.0.0.1:28080/dags/model_refresh/runs/manual__2026-12-04T17%3A00%3A00%2B00%3A00/tasks/"
                   f"{REPORT_TASK}")
