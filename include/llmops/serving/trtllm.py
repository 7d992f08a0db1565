"""The TensorRT-LLM server container of a deployment with `serving_runtime: tensorrt-llm`. Pure dicts.

`trtllm-serve` (TensorRT-LLM's OpenAI-compatible server, PyTorch backend) loads the ModelOpt unified
checkpoint model_refresh publishes for a `modelopt-*` recipe directly; there is no engine build. It answers
`/v1/completions`, `/v1/chat/completions` and `/v1/models` like vLLM, so the rollout's readiness check,
golden prompts and probes are the same code for both runtimes. What differs, from TensorRT-LLM's
`tensorrt_llm/commands/serve.py` and `tensorrt_llm/serve/openai_server.py`:

- flags use underscores: `trtllm-serve MODEL --host --port --backend pytorch --tp_size --max_seq_len
  --extra_llm_api_options FILE` (newer releases also spell the last `--config`; both name the same option);
- the served model name is the model directory's base name (`--served_model_name` exists only in some
  releases), so pods fetch the version into `/models/<version-id>/<model>` and the name is the deployment's
  `model`, which the probes send;
- `/health` is 200 while the executor is healthy (503 otherwise): startup, readiness and liveness probes
  use it; the rollout's readiness check additionally generates through `/v1/completions` on every pod before
  counting it ready. (`/health_generate` generates too, but through the chat template, which base models
  lack.)
- `/metrics` is JSON iteration statistics, drained on every read; Prometheus text is `/prometheus/metrics`,
  mounted only with the LLM API option `return_perf_metrics: true`. The pods turn it on together with
  `enable_iter_perf_stats` (queue and KV-cache gauges) in the YAML file given by `--extra_llm_api_options`,
  written at start from the environment so that the pod needs no ConfigMap; a deployment's
  `llm_api_options` are merged over these defaults.

The pod around this container (init container fetching and verifying the version, volumes, restricted
Pod Security settings, GPU resources) is the one vLLM pods get (serving/manifests.py).

Untested against a real trtllm-serve: it needs an NVIDIA GPU, and this project's machines have none
(TensorRT-LLM has no CPU build). Tests render, validate and apply these objects to the Kubernetes
emulator; the flags and endpoints above come from TensorRT-LLM's sources and documentation.
"""

from __future__ import annotations

import json
from typing import Any

from llmops.config.schema import Deployment

RUNTIME = "tensorrt-llm"
CONTAINER_NAME = "trtllm-serve"
HEALTH_PATH = "/health"
#: What the stable track's HPA scales on (serving.manifests.HPA_METRICS's shape: the metric the HPA asks the
#: adapter for, the Prometheus series, the default target). TensorRT-LLM's names need no renaming (no `:`); its
#: queue and KV-cache gauges come with `enable_iter_perf_stats` (on by default here), in releases that have them.
HPA_METRICS: dict[str, tuple[str, str, float]] = {
    "queue": ("trtllm_num_requests_waiting", "trtllm_num_requests_waiting", 5.0),
    "kv-cache": ("trtllm_kv_cache_utilization", "trtllm_kv_cache_utilization", 0.8),
    "gpu-utilization": ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_UTIL", 80.0),
}
#: LLM API options every TensorRT-LLM pod starts with; a deployment's `llm_api_options` override them.
DEFAULT_LLM_API_OPTIONS: dict[str, Any] = {"return_perf_metrics": True, "enable_iter_perf_stats": True}
CONFIG_ENV = "LLMOPS_TRTLLM_LLM_API_OPTIONS"


def model_dir(deployment: Deployment, version_id: str, mount: str) -> str:
    """Where the pod's init container puts the version: its base name is the name trtllm-serve serves."""
    return f"{mount}/{version_id}/{deployment.model}"


def llm_api_options(deployment: Deployment) -> dict[str, Any]:
    return {**DEFAULT_LLM_API_OPTIONS, **deployment.llm_api_options}


def container(deployment: Deployment, *, model_path: str, tensor_parallel_size: int, max_model_len: int | None,
              home: str, resources: dict[str, Any], security_context: dict[str, Any],
              volume_mounts: list[dict[str, Any]]) -> dict[str, Any]:
    config_path = f"{home}/trtllm-llm-api-options.yaml"
    args = [model_path, "--host", "0.0.0.0", "--port", str(deployment.port), "--backend", "pytorch",
            "--tp_size", str(tensor_parallel_size)]
    if max_model_len:
        args += ["--max_seq_len", str(max_model_len)]
    args += ["--extra_llm_api_options", config_path, *deployment.extra_args]
    health = {"httpGet": {"path": HEALTH_PATH, "port": deployment.port}}
    return {
        "name": CONTAINER_NAME,
        "image": deployment.image,
        # write the options file, then become trtllm-serve with the container's args ("$@": never re-quoted)
        "command": ["/bin/sh", "-c", f'printf "%s\\n" "${CONFIG_ENV}" > "{config_path}" && exec trtllm-serve "$@"',
                    "trtllm-serve"],
        "args": args,
        # JSON is YAML: the file trtllm-serve reads. HF_HUB_OFFLINE: the checkpoint is local, nothing is fetched.
        # USER: uid 10001 has no passwd entry in NVIDIA's image, and getpass.getuser() (torch's compile caches)
        # raises without it.
        "env": [{"name": "HOME", "value": home}, {"name": "USER", "value": "llmops"},
                {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": CONFIG_ENV, "value": json.dumps(llm_api_options(deployment), sort_keys=True)}],
        "ports": [{"name": "http", "containerPort": deployment.port}],
        "resources": resources,
        "securityContext": security_context,
        "volumeMounts": volume_mounts,
        # loading, autotuning and CUDA graph capture take minutes on a large model: 30 min to start
        "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6},
    }
