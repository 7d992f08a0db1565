"""The step factory on both runtimes: a real subprocess locally, a valid GPU pod spec on Kubernetes."""

from __future__ import annotations

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from llmops_airflow.steps import GPU_POOL, POD_STARTUP_TIMEOUT_S, JobFailed, LocalJobOperator, heavy_step


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
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    assert isinstance(op, KubernetesPodOperator)
    assert op.deferrable is True and op.pool == GPU_POOL
    assert op.startup_timeout_seconds == POD_STARTUP_TIMEOUT_S
    pod = _pod(op)
    kubernetes_validate.validate(pod, "1.33", strict=True)
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
    kubernetes_validate.validate(pod, "1.33", strict=True)
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
    assert ref == {"name": "llmops-huggingface-default", "key": "password"}


def test_malformed_secret_reference_refused():
    with pytest.raises(ValueError, match="conn_id>.<field>"):
        heavy_step(task_id="x", job="doctor", runtime="local", secret_env={"HF_TOKEN": "huggingface_default"})
