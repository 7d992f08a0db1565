"""A TensorRT-LLM rollout through the driver's Kubernetes backend against kmock over real HTTP (KubernetesHook
and the official client), in-process and once through `airflow dags test model_rollout` (the path users run),
up to the point where a pod would need a GPU.

No GPU here, so no trtllm-serve runs: the emulator has no controllers and no kubelet, and the test plays
neither. The rollout therefore stops where a cluster would schedule the canary pod on an L20 node: the
driver waits for readiness, the readiness check reports 0 replicas ready (nothing generated), and a
not-ready event rolls the canary back. Before that, what the backend applied is read back from the
emulator and checked: strict kubernetes-validate against 1.31, the restricted Pod Security profile, the
trtllm-serve container, and scraping on /prometheus/metrics. Pre-flight refusals (runtime, GPU) are shown to
write nothing. The artefacts are published to a real file store; their weights are random bytes in a
ModelOpt checkpoint's layout (nothing here loads them: pre-flight reads the manifest and the store's
checksums, which is also all a cluster's pre-flight reads).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import kubernetes_validate
import pytest

from llmops.artefacts import Manifest, open_store
from llmops.config import load_registry
from llmops.rollout import driver
from llmops.rollout.errors import PreflightError
from llmops.rollout.record import Execution
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.serving.kubernetes import KubernetesBackend
from llmops.settings import PROJECT_ROOT
from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook
from support.pod_security import violations

from .conftest import dag_env, dags_test

NS = "llmops"
L20 = {"aliyun.accelerator/nvidia_name": "NVIDIA-L20"}
A10 = {"aliyun.accelerator/nvidia_name": "NVIDIA-A10"}
# nothing listens there: a pod URL is only asked once a pod is Ready, which never happens without a GPU
UNREACHABLE = "http://127.0.0.1:9/{pod_ip}"


@pytest.fixture
def hook(kube):
    hook = VllmKubernetesHook("kubernetes_default")
    for name, labels, gpus in (("l20-node-1", L20, "8"), ("a10-node-1", A10, "1")):
        hook.kube.core_v1_client.create_node({"metadata": {"name": name, "labels": labels},
                                              "status": {"allocatable": {"nvidia.com/gpu": gpus}}},
                                             _preload_content=False)
    return hook


def checkpoint(root, name: str, *, modelopt: bool):
    """A checkpoint's files in the layout of its format, with random weights (see the module docstring)."""
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    if modelopt:
        (path / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": "FP8"}}))
    (path / "model.safetensors").write_bytes(os.urandom(4096))
    return path


@pytest.fixture
def store(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    builds = {
        # what model_refresh publishes for the modelopt-fp8 target of models.yaml (l20, h20, h100)
        "trt_fp8": dict(sha="e" * 40, recipe="modelopt-fp8", serving_runtime="tensorrt-llm",
                        quantization_format="FP8", min_compute_capability=8.9, gpu_profiles=["l20", "h20", "h100"]),
        # an INT4-AWQ build (8.0+) made for Hopper only
        "trt_awq_hopper": dict(sha="f" * 40, recipe="modelopt-int4-awq", serving_runtime="tensorrt-llm",
                               quantization_format="INT4_AWQ", min_compute_capability=8.0, gpu_profiles=["h100"]),
        "vllm_w8a8": dict(sha="a" * 40, recipe="llmcompressor-w8a8", serving_runtime="vllm",
                          quantization_format="W8A8", min_compute_capability=7.5,
                          gpu_profiles=["a10", "l20", "h20", "a100", "h100"]),
    }
    uris = {}
    for name, build in builds.items():
        local = checkpoint(tmp_path / "checkpoints", name, modelopt=build["serving_runtime"] == "tensorrt-llm")
        manifest = Manifest.for_directory(local, model="tiny-llama", source_repo="llmops-demo/tiny-llama",
                                          source_sha=build.pop("sha"), max_model_len=512, **build)
        uris[name] = store.publish(local, manifest.prefix, manifest)
    return store, uris


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def backend_for(hook, registry, deployment):
    return KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                             pod_url_template=UNREACHABLE, service_url_template=UNREACHABLE)


def context(backend, registry, store, uri, tmp_path, run_id="manual__trtllm", deployment=None):
    name = deployment or backend.deployment.name
    resolved = resolve_request(RolloutRequest(deployment=name, version=uri), registry)
    return driver.RolloutContext(resolved, store, backend, registry, run_id, tmp_path / "report")


def test_a_trtllm_canary_is_applied_and_rolled_back_when_no_pod_gets_ready(kube, hook, registry, store, tmp_path):
    store, uris = store
    deployment = registry.deployment("tiny-llama-trtllm")
    backend = backend_for(hook, registry, deployment)
    ctx = context(backend, registry, store, uris["trt_fp8"], tmp_path)
    pre = driver.preflight(ctx)
    assert pre.facts.serving_runtime == "tensorrt-llm" and pre.facts.built_for == ("l20", "h20", "h100")
    assert backend.lock_holder() is None  # pre-flight writes nothing; `run` takes the lock

    me = Execution.new(1)
    waiting = driver.run(ctx, me)
    assert backend.lock_holder() == "manual__trtllm"
    assert isinstance(waiting, driver.Waiting) and waiting.target.track == "canary"
    assert waiting.target.identifiers["name"] == "tiny-llama-trtllm-canary"
    applied = {(o[0], o[2]) for o in kube.live_objects() if o[1] == NS}
    assert {("deployments", "tiny-llama-trtllm-canary"), ("services", "tiny-llama-trtllm"),
            ("services", "tiny-llama-trtllm-canary"), ("servicemonitors", "tiny-llama-trtllm"),
            ("httproutes", "tiny-llama-trtllm"), ("configmaps", "tiny-llama-trtllm-rollout-lock")} <= applied

    canary = hook.get("Deployment", "tiny-llama-trtllm-canary", NS)
    kubernetes_validate.validate(canary, "1.31", strict=True)  # as stored by the API server
    assert violations(canary) == []
    pod = canary["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["name"] == "trtllm-serve" and server["image"] == deployment.image
    assert "--extra_llm_api_options" in server["args"] and server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1" and pod["nodeSelector"] == L20
    assert uris["trt_fp8"] in pod["initContainers"][0]["command"]  # fetched and verified before serving
    monitor = hook.get("ServiceMonitor", "tiny-llama-trtllm", NS)
    assert monitor["spec"]["endpoints"][0]["path"] == "/prometheus/metrics"
    route = hook.get("HTTPRoute", "tiny-llama-trtllm", NS)
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]  # no traffic yet

    # Here a cluster schedules the pod on an L20 and trtllm-serve loads the checkpoint: nothing does here.
    ready = backend.check_ready(waiting.target)
    assert not ready.ready and "0/1 replicas ready" in ready.detail
    finished = driver.run(ctx, me, {"status": "not_ready", "detail": ready.detail})
    assert isinstance(finished, driver.Finished) and finished.report.outcome == "rolled_back"
    assert hook.get("Deployment", "tiny-llama-trtllm-canary", NS) is None
    assert backend.lock_holder() is None
    assert "store_markdown" in finished.locations  # stored next to the TensorRT-LLM artefact


@pytest.mark.parametrize(("name", "version", "profile", "expected"), [
    # a vLLM build on the TensorRT-LLM deployment, and the TensorRT-LLM build on the vLLM one
    ("tiny-llama-trtllm", "vllm_w8a8", None, r"serving runtime: .*vllm artefact.*fix: roll out a version built "
                                             r"for tensorrt-llm \(a modelopt-\* target"),
    ("tiny-llama-chat", "trt_fp8", None, r"serving runtime: .*tensorrt-llm artefact.*fix: .*"
                                         r"serving_runtime: tensorrt-llm"),
    # the FP8 build on an A10 (8.6), and a Hopper-only build on the L20s (another GPU family)
    ("tiny-llama-trtllm", "trt_fp8", "a10", r"compute capability: FP8 \(modelopt-fp8\) needs compute capability "
                                            r"8\.9\+.*'a10'.*8\.6\n    fix:"),
    ("tiny-llama-trtllm", "trt_awq_hopper", None, r"GPU family: .*h100 \(9\).*8\.9 of profile 'l20'.*\n"
                                                  r"    fix: add l20 to the gpu_profiles"),
])
def test_a_runtime_or_gpu_mismatch_is_refused_before_anything_is_written(kube, hook, registry, store, tmp_path,
                                                                         name, version, profile, expected):
    store, uris = store
    deployment = registry.deployment(name)
    if profile:  # the deployment as the registry would have it after moving it to another GPU pool
        deployment = deployment.model_copy(update={"gpu_profile": profile})
        registry = dataclasses.replace(registry, deployments={**registry.deployments, name: deployment})
    backend = backend_for(hook, registry, deployment)
    writes = kube.writes()
    with pytest.raises(PreflightError, match="(?s)" + expected):
        driver.preflight(context(backend, registry, store, uris[version], tmp_path))
    assert kube.writes() == writes, "pre-flight must not write anything"
    assert not [o for o in kube.live_objects() if o[1] == NS]


def test_latest_is_the_newest_build_of_the_deployments_runtime(kube, hook, registry, store, tmp_path):
    """`version=latest` on the TensorRT-LLM deployment resolves to the newest TensorRT-LLM build (the Hopper-only
    INT4-AWQ one), never to the vLLM build published after it; that build is then refused for the L20s."""
    store, uris = store
    backend = backend_for(hook, registry, registry.deployment("tiny-llama-trtllm"))
    with pytest.raises(PreflightError, match="GPU family") as err:
        driver.preflight(context(backend, registry, store, "latest", tmp_path))
    assert uris["trt_awq_hopper"] in str(err.value) and uris["vllm_w8a8"] not in str(err.value)


def test_the_model_rollout_dag_rolls_a_trtllm_canary_back_when_it_never_gets_ready(kube, hook, store, tmp_path,
                                                                                   airflow_db, venvs):
    """The path users run: `airflow dags test model_rollout` on runtime kubernetes (operator, deferral to the
    readiness trigger, resume) with the shipped registry, except a 10 s readiness timeout for the TensorRT-LLM
    deployment. No pod ever gets ready (no GPU), so the run ends rolled back, failed, with nothing left."""
    store, uris = store
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "include" / "config", config)
    deployments = config / "deployments.yaml"
    text = deployments.read_text()
    head, trt = text.split("  - name: tiny-llama-trtllm", 1)
    assert "readiness_timeout_s: 1800" in trt
    deployments.write_text(head + "  - name: tiny-llama-trtllm" + trt.replace("readiness_timeout_s: 1800",
                                                                               "readiness_timeout_s: 10"))
    conn = {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kube.kubeconfig)}}
    env = dag_env(tmp_path / "home", tmp_path / "store", venvs, LLMOPS_RUNTIME="kubernetes",
                  LLMOPS_CONFIG_DIR=str(config), AIRFLOW_CONN_KUBERNETES_DEFAULT=json.dumps(conn),
                  LLMOPS_KUBE_POD_URL_TEMPLATE=UNREACHABLE, LLMOPS_KUBE_SERVICE_URL_TEMPLATE=UNREACHABLE)
    rc, log = dags_test(env, {"deployment": "tiny-llama-trtllm", "version": uris["trt_fp8"]}, timeout=600)
    assert rc != 0, log[-6000:]
    assert "waiting for the canary track" in log, log[-6000:]  # deferred to the readiness trigger
    assert "rolled back" in log and "0/1 replicas ready" in log, log[-6000:]
    created = [w for w in kube.writes() if w.startswith("POST /apis/apps/v1/namespaces/llmops/deployments")]
    assert created, "the canary Deployment was applied"
    assert hook.get("Deployment", "tiny-llama-trtllm-canary", NS) is None
    lock = hook.get("ConfigMap", "tiny-llama-trtllm-rollout-lock", NS)  # the run's record stays, finished: no lock
    assert lock["data"]["status"] == "finished" and json.loads(lock["data"]["record"])["outcome"] == "rolled_back"


def test_the_local_runtime_refuses_a_trtllm_deployment_before_starting_anything(registry, store, tmp_path):
    """The local runtime's backend (vLLM processes) as the operator builds it: pre-flight names the runtime to
    use instead, takes no lock and starts no process."""
    from llmops.serving.local import LocalRuntime

    store, uris = store
    deployment = registry.deployment("tiny-llama-trtllm")
    backend = LocalRuntime(tmp_path / "home", deployment.name, deployment.model, serving_python="/nonexistent",
                           model_cache=tmp_path / "home" / "models")
    with pytest.raises(PreflightError, match="(?s)local runtime cannot run.*fix: run model_rollout with "
                                             "LLMOPS_RUNTIME=kubernetes"):
        driver.preflight(context(backend, registry, store, uris["trt_fp8"], tmp_path, deployment=deployment.name))
    assert backend.lock_holder() is None and backend.load().canary is None
