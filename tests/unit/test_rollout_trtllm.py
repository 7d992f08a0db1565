"""TensorRT-LLM as a rollout target: the registry entry, the rendered trtllm-serve pods, pre-flight and metrics.

No test here (or anywhere in the suite) runs trtllm-serve: it needs an NVIDIA GPU and TensorRT-LLM has no
CPU build, and these machines have no GPU. What is checked is what the rollout decides and renders: the
container's command line against TensorRT-LLM's documented flags, probes on its health endpoint, Prometheus
scraping of /prometheus/metrics, pre-flight refusals of a runtime or GPU mismatch, and the mapping of
trtllm-serve's Prometheus names (a sample exposition in the format TensorRT-LLM's MetricsCollector writes),
and one analysis window's requests against a stand-in for trtllm-serve's HTTP contract (its CompletionRequest
fields, which it enforces, its /metrics and /prometheus/metrics): the only mock here, where nothing real can run.
tests/integration/rollout/test_rollout_trtllm_kubernetes.py applies the objects to the Kubernetes emulator.
"""

from __future__ import annotations

import json

import pytest

from llmops.canary.metrics import metrics_path, parse, promql_window_queries, window_summary
from llmops.config import load_registry
from llmops.config.schema import Deployment
from llmops.rollout.preflight import (
    ArtefactFacts,
    PreflightError,
    check_backend_runtime,
    check_compatibility,
    raise_if_problems,
)
from llmops.serving.manifests import VersionRef, hpa_metrics, render_all
from llmops.settings import get_settings

TRT_URI = "oss://b/models/tiny-llama/" + "e" * 40 + "/tensorrt-llm-modelopt-fp8/manifest.json"
VLLM_URI = "oss://b/models/tiny-llama/" + "a" * 40 + "/vllm-llmcompressor-w8a8/manifest.json"


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def trt_facts(**overrides) -> ArtefactFacts:
    base = dict(uri=TRT_URI, model="tiny-llama", serving_runtime="tensorrt-llm", quantization_format="FP8",
                min_compute_capability=8.9, tensor_parallel_size=1, max_model_len=512, weights_bytes=2 * 1024**2,
                recipe="modelopt-fp8", built_for=("l20", "h20", "h100"))
    base.update(overrides)
    return ArtefactFacts(**base)


def by_kind(objects):
    out = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


# --- registry --------------------------------------------------------------------------------------

def test_a_trtllm_deployment_defaults_to_the_image_that_validated_its_checkpoints(registry):
    deployment = registry.deployment("tiny-llama-trtllm")
    assert deployment.serving_runtime == "tensorrt-llm"
    assert deployment.image == get_settings().trtllm_image  # LLMOPS_TRTLLM_IMAGE, images/trtllm
    assert registry.deployment("tiny-llama-chat").image.startswith("vllm/vllm-openai:")


def _trt(**changes) -> dict:
    base = load_registry().deployment("tiny-llama-trtllm").model_dump()
    base.pop("image")
    return {**base, **changes}


@pytest.mark.parametrize(("changes", "expected"), [
    ({"image": "vllm/vllm-openai:v0.11.0"}, "is a vLLM image but serving_runtime is tensorrt-llm"),
    ({"extra_args": ["--config", "my.yaml"]}, "move those options into llm_api_options"),
    ({"extra_args": ["--extra_llm_api_options=my.yaml"]}, "move those options into llm_api_options"),
    ({"serving_runtime": "vllm", "llm_api_options": {"a": 1}}, "llm_api_options apply to serving_runtime tensorrt-llm"),
    ({"serving_runtime": "vllm", "llm_api_options": {}, "image": "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"},
     "is a TensorRT-LLM image but serving_runtime is vllm"),
    ({"serving_runtime": "triton"}, "serving_runtime"),
])
def test_inconsistent_runtime_settings_are_refused_with_a_fix(changes, expected):
    with pytest.raises(ValueError, match=expected):
        Deployment.model_validate(_trt(**changes))
    assert Deployment.model_validate(_trt()).serving_runtime == "tensorrt-llm"  # the unchanged entry is valid


# --- rendering -------------------------------------------------------------------------------------

def test_trtllm_pods_serve_the_fetched_checkpoint_with_trtllm_serve(registry):
    deployment, profile = registry.deployment("tiny-llama-trtllm"), registry.gpu_profile("l20")
    canary_ref = VersionRef(TRT_URI, "tiny-llama", 2, 512)
    objects = by_kind(render_all(deployment, profile, stable=None, canary=canary_ref, canary_percent=10))
    pod = objects["Deployment"][0]["spec"]["template"]
    spec = pod["spec"]
    init, server = spec["initContainers"][0], spec["containers"][0]
    model_dir = f"/models/{canary_ref.version_id}/tiny-llama"  # base name = the name trtllm-serve serves
    assert init["command"][-2:] == ["--dest", model_dir] and TRT_URI in init["command"]
    assert server["name"] == "trtllm-serve" and server["image"] == deployment.image
    assert server["command"][:2] == ["/bin/sh", "-c"] and 'exec trtllm-serve "$@"' in server["command"][2]
    args = server["args"]
    assert args[0] == model_dir
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["--backend"] == "pytorch" and flags["--tp_size"] == "2" and flags["--max_seq_len"] == "512"
    assert flags["--port"] == str(deployment.port) and flags["--host"] == "0.0.0.0"
    options_file = flags["--extra_llm_api_options"]
    assert options_file in server["command"][2]  # the file the shell writes is the one trtllm-serve reads
    env = {e["name"]: e["value"] for e in server["env"]}
    options = json.loads(env["LLMOPS_TRTLLM_LLM_API_OPTIONS"])
    assert options == {"return_perf_metrics": True, "enable_iter_perf_stats": True,
                       **deployment.llm_api_options}  # Prometheus on, the registry's options merged over it
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": deployment.port}
    # GPUs from the profile: TP 2 takes two whole GPUs; nodes of the profile only
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert spec["nodeSelector"] == profile.node_selector
    assert objects["ServiceMonitor"][0]["spec"]["endpoints"][0]["path"] == "/prometheus/metrics"
    hpa = objects["HorizontalPodAutoscaler"][0]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert hpa == "trtllm_num_requests_waiting"


def test_vllm_pods_keep_their_own_server_and_metrics(registry):
    objects = by_kind(render_all(registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10"),
                                 stable=None, canary=VersionRef(VLLM_URI, "tiny-llama", 1, 512), canary_percent=10))
    server = objects["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    assert server["name"] == "vllm" and "vllm.entrypoints.openai.api_server" in server["command"]
    assert objects["ServiceMonitor"][0]["spec"]["endpoints"][0]["path"] == "/metrics"
    assert objects["HorizontalPodAutoscaler"][0]["spec"]["metrics"][0]["pods"]["metric"]["name"] == \
        "vllm_num_requests_waiting"


def test_extra_args_reach_trtllm_serve_after_the_rollouts_own(registry):
    deployment = registry.deployment("tiny-llama-trtllm").model_copy(update={"extra_args": ["--max_batch_size", "64"]})
    objects = render_all(deployment, registry.gpu_profile("l20"), stable=None,
                         canary=VersionRef(TRT_URI, "tiny-llama", 1, 512), canary_percent=10)
    assert objects[0]["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--max_batch_size", "64"]


# --- pre-flight ------------------------------------------------------------------------------------

def test_a_trtllm_build_passes_on_a_profile_it_was_built_for(registry):
    deployment = registry.deployment("tiny-llama-trtllm")
    for profile in ("l20", "h20", "h100"):
        assert check_compatibility(trt_facts(), deployment, registry.gpu_profile(profile),
                                   registry.gpu_profiles) == []


def test_runtime_mismatch_is_refused_both_ways_naming_the_fix(registry):
    trt_deployment, vllm_deployment = registry.deployment("tiny-llama-trtllm"), registry.deployment("tiny-llama-chat")
    vllm_build = trt_facts(uri=VLLM_URI, serving_runtime="vllm", quantization_format="W8A8",
                           min_compute_capability=7.5, recipe="llmcompressor-w8a8", built_for=())
    problems = check_compatibility(vllm_build, trt_deployment, registry.gpu_profile("l20"), registry.gpu_profiles)
    assert [p.check for p in problems] == ["serving runtime"]
    assert "vllm artefact" in problems[0].what and "tensorrt-llm" in problems[0].what
    assert "modelopt-*" in problems[0].fix and "serving_runtime: vllm" in problems[0].fix
    problems = check_compatibility(trt_facts(), vllm_deployment.model_copy(update={"gpu_profile": "l20"}),
                                   registry.gpu_profile("l20"), registry.gpu_profiles)
    assert [p.check for p in problems] == ["serving runtime"]
    assert "llmcompressor-*" in problems[0].fix and "serving_runtime: tensorrt-llm" in problems[0].fix


def test_an_fp8_trtllm_build_is_refused_on_an_a10(registry):
    deployment = registry.deployment("tiny-llama-trtllm").model_copy(update={"gpu_profile": "a10"})
    problems = check_compatibility(trt_facts(), deployment, registry.gpu_profile("a10"), registry.gpu_profiles)
    assert [p.check for p in problems] == ["compute capability"]  # one root cause, one problem
    with pytest.raises(PreflightError, match=r"FP8 \(modelopt-fp8\) needs compute capability 8\.9\+.*a10.*8\.6"):
        raise_if_problems("rollout", problems)


def test_a_gpu_family_the_build_never_ran_on_is_refused(registry):
    """An INT4-AWQ build (runs on 8.0+) made and validated for Hopper profiles only: an A100 (8.0) is another
    GPU family; an H20 of the same family as the H100 it was built for passes."""
    awq = trt_facts(quantization_format="INT4_AWQ", min_compute_capability=8.0, recipe="modelopt-int4-awq",
                    built_for=("h100",))
    deployment = registry.deployment("tiny-llama-trtllm")
    problems = check_compatibility(awq, deployment, registry.gpu_profile("a100"), registry.gpu_profiles)
    assert [p.check for p in problems] == ["GPU family"]
    assert "h100 (9)" in problems[0].what and "8 of profile 'a100'" in problems[0].what
    assert "add a100 to the gpu_profiles" in problems[0].fix and "rerun model_refresh" in problems[0].fix
    assert check_compatibility(awq, deployment, registry.gpu_profile("h20"), registry.gpu_profiles) == []
    # a manifest that records no profiles (or only unknown ones) is judged by the format's minimum alone
    assert check_compatibility(trt_facts(built_for=()), deployment, registry.gpu_profile("a100"),
                               registry.gpu_profiles)[0].check == "compute capability"
    assert check_compatibility(awq.__class__(**{**awq.__dict__, "built_for": ("gone",)}), deployment,
                               registry.gpu_profile("a100"), registry.gpu_profiles) == []


def test_the_local_runtime_refuses_a_trtllm_deployment(registry):
    problems = check_backend_runtime(registry.deployment("tiny-llama-trtllm"), "local")
    assert [p.check for p in problems] == ["serving runtime"] and "LLMOPS_RUNTIME=kubernetes" in problems[0].fix
    assert check_backend_runtime(registry.deployment("tiny-llama-trtllm"), "kubernetes") == []
    assert check_backend_runtime(registry.deployment("tiny-llama-chat"), "local") == []


def test_facts_read_the_profiles_a_manifest_was_built_for():
    manifest = {"serving_runtime": "tensorrt-llm", "quantization_format": "FP8", "min_compute_capability": 8.9,
                "max_model_len": 512, "files": [], "gpu_profiles": ["l20", "h20"], "recipe": "modelopt-fp8"}
    assert ArtefactFacts.from_manifest(manifest, TRT_URI, "tiny-llama").built_for == ("l20", "h20")


# --- metrics ---------------------------------------------------------------------------------------

# What trtllm-serve's /prometheus/metrics answers (names and types of tensorrt_llm/metrics/collector.py).
TRTLLM_EXPOSITION = """\
# HELP trtllm_request_success_total Count of successfully processed requests.
# TYPE trtllm_request_success_total counter
trtllm_request_success_total{{engine_type="undefined",finished_reason="length",model_name="undefined"}} {n}
# HELP trtllm_e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE trtllm_e2e_request_latency_seconds histogram
trtllm_e2e_request_latency_seconds_bucket{{engine_type="undefined",le="0.3",model_name="undefined"}} {fast}
trtllm_e2e_request_latency_seconds_bucket{{engine_type="undefined",le="0.5",model_name="undefined"}} {n}
trtllm_e2e_request_latency_seconds_bucket{{engine_type="undefined",le="+Inf",model_name="undefined"}} {n}
trtllm_e2e_request_latency_seconds_count{{engine_type="undefined",model_name="undefined"}} {n}
trtllm_e2e_request_latency_seconds_sum{{engine_type="undefined",model_name="undefined"}} {total}
# HELP trtllm_time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE trtllm_time_to_first_token_seconds histogram
trtllm_time_to_first_token_seconds_bucket{{engine_type="undefined",le="0.1",model_name="undefined"}} {n}
trtllm_time_to_first_token_seconds_bucket{{engine_type="undefined",le="+Inf",model_name="undefined"}} {n}
trtllm_time_to_first_token_seconds_count{{engine_type="undefined",model_name="undefined"}} {n}
trtllm_time_to_first_token_seconds_sum{{engine_type="undefined",model_name="undefined"}} 0.5
"""


def test_trtllm_metrics_map_onto_the_same_quantities_and_name_what_is_missing():
    before = parse(TRTLLM_EXPOSITION.format(n=10, fast=0, total=4.0))
    after = parse(TRTLLM_EXPOSITION.format(n=30, fast=10, total=12.0))
    assert after.names["e2e_latency"] == "trtllm_e2e_request_latency_seconds"
    assert after.names["requests"] == "trtllm_request_success"
    summary = window_summary(before, after)
    assert summary["requests"] == 20 and summary["e2e_latency_count"] == 20
    assert summary["e2e_latency_mean_s"] == pytest.approx(0.4)
    # a release without the iteration gauges, or a server without enable_iter_perf_stats: said, not hidden
    assert summary["missing"] == ["generation_tokens", "running", "waiting"]


def test_each_runtime_is_scraped_and_queried_by_its_own_names():
    assert metrics_path("vllm") == "/metrics" and metrics_path("tensorrt-llm") == "/prometheus/metrics"
    assert hpa_metrics("tensorrt-llm")["queue"][0] == "trtllm_num_requests_waiting"
    assert hpa_metrics("tensorrt-llm")["kv-cache"][0] == "trtllm_kv_cache_utilization"
    assert hpa_metrics("vllm")["queue"][0] == "vllm_num_requests_waiting"
    trt = promql_window_queries("tiny-llama-trtllm", "canary", 60, "tensorrt-llm")
    assert "trtllm_e2e_request_latency_seconds_bucket" in trt["e2e_latency_p95_s"]
    assert 'service="tiny-llama-trtllm-canary"' in trt["requests"]
    assert "vllm:" in promql_window_queries("d", "stable", 60)["waiting"]
    with pytest.raises(ValueError, match="fix: use one of vllm, tensorrt-llm"):
        metrics_path("triton")


# --- the canary's requests against trtllm-serve's request contract ----------------------------------

# The fields of trtllm-serve's CompletionRequest (tensorrt_llm/serve/openai_protocol.py). Its pydantic model
# forbids extra fields, so a vLLM-only parameter in a probe would turn every canary request into an HTTP 400.
TRTLLM_COMPLETION_FIELDS = {
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
    "lora_request", "prompt_ignore_length", "use_beam_search", "top_k", "top_p_min", "min_p",
    "repetition_penalty", "length_penalty", "early_stopping", "stop_token_ids", "include_stop_str_in_output",
    "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens", "truncate_prompt_tokens",
    "return_context_logits", "detokenize", "thinking_token_budget", "add_special_tokens", "response_format",
    "disaggregated_params", "priority", "conversation_params",
}


@pytest.fixture
def trtllm_api():
    """A stand-in for trtllm-serve's HTTP contract (trtllm-serve itself needs a GPU): /v1/completions refuses
    fields its CompletionRequest does not declare, as trtllm-serve does, and answers every prompt with the
    golden continuations (plain or as server-sent events); /metrics is JSON iteration statistics and
    /prometheus/metrics the Prometheus text. Records every request body."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list[dict] = []
    answers = {"One, two, three,": " four, five", "Kubernetes schedules": " pods on nodes",
               "The capital of France is": " Paris"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/prometheus/metrics":
                self._send(200, TRTLLM_EXPOSITION.format(n=len(bodies), fast=0, total=0.1 * len(bodies)).encode(),
                           "text/plain; version=0.0.4")
            elif self.path == "/metrics":
                self._send(200, b'[{"iter": 1, "numActiveRequests": 0}]', "application/json")
            else:
                self._send(404, b"{}", "application/json")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            extra = sorted(set(body) - TRTLLM_COMPLETION_FIELDS)
            if self.path != "/v1/completions" or extra:
                self._send(400, json.dumps({"error": f"extra fields not permitted: {extra}"}).encode(),
                           "application/json")
                return
            text = answers.get(body["prompt"], " ok")
            if body.get("stream"):
                events = [json.dumps({"choices": [{"index": 0, "text": piece}]}) for piece in text.split(" ")[1:]]
                payload = "".join(f"data: {e}\n\n" for e in events) + "data: [DONE]\n\n"
                self._send(200, payload.encode(), "text/event-stream")
            else:
                self._send(200, json.dumps({"choices": [{"index": 0, "text": text}]}).encode(), "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_the_canary_analysis_speaks_trtllm_serves_api(registry, trtllm_api):
    """Readiness, golden prompts, the streamed load and the metrics scrape of one analysis window, as the driver
    runs them for the TensorRT-LLM deployment: every request is one trtllm-serve accepts."""
    from llmops.canary.analysis import analyse
    from llmops.canary.probes import generation_ok

    url, bodies = trtllm_api
    deployment = registry.deployment("tiny-llama-trtllm")
    assert generation_ok(url, deployment.model) == (True, "generated")
    observed = analyse(canary_url=url, stable_url=None, model=deployment.model,
                       golden_prompts=deployment.rollout.golden_prompts, window_s=1, requests=4, concurrency=2,
                       max_tokens=4, pause_s=0, min_rounds=1, metrics_path=metrics_path(deployment.serving_runtime))
    assert [g.passed for g in observed.golden] == [True, True, True], observed.golden
    assert observed.canary_rounds and all(r.errors == 0 for r in observed.canary_rounds)
    assert any(b.get("stream") and b.get("ignore_eos") for b in bodies)  # the load's streamed requests
    assert all(set(b) <= TRTLLM_COMPLETION_FIELDS for b in bodies)
    canary_metrics = observed.metrics["canary"]
    assert canary_metrics["available"] and canary_metrics["metric_names"]["requests"] == "trtllm_request_success"
    assert canary_metrics["requests"] > 0
    # the vLLM path on trtllm-serve is its JSON iteration statistics: never read as Prometheus text
    from llmops.canary.metrics import scrape
    assert scrape(url, path="/metrics") is None


def test_the_stand_in_refuses_what_trtllm_serve_refuses(trtllm_api):
    """The contract check above can fail: a vLLM-only field (vLLM's `min_p` is shared; `guided_json` is not)
    is an HTTP 400, which the probes count as an error."""
    import httpx

    from llmops.canary.probes import timed_stream

    url, _ = trtllm_api
    response = httpx.post(f"{url}/v1/completions", json={"model": "tiny-llama", "prompt": "x", "guided_json": {}})
    assert response.status_code == 400
    with httpx.Client() as client:
        assert timed_stream(client, url, "tiny-llama", "One, two, three,", 4, 10).ok


def test_canary_extra_args_cannot_replace_trtllm_serves_options_file(registry):
    from llmops.errors import ConfigError
    from llmops.rollout.request import RolloutRequest, resolve_request

    request = RolloutRequest(deployment="tiny-llama-trtllm", canary_extra_args=["--config", "x.yaml"])
    with pytest.raises(ConfigError, match="(?s)canary_extra_args.*fix: set the options in the deployment's "
                                          "llm_api_options"):
        resolve_request(request, registry)
    ok = RolloutRequest(deployment="tiny-llama-trtllm", canary_extra_args=["--max_batch_size", "64"])
    assert resolve_request(ok, registry).request.canary_extra_args == ["--max_batch_size", "64"]
    # vLLM's --config reads every other flag from a file (--trust-remote-code too): not a tuning flag either
    vllm = RolloutRequest(deployment="tiny-llama-chat", canary_extra_args=["--config", "x.yaml"])
    with pytest.raises(ConfigError, match="not a tuning flag"):
        resolve_request(vllm, registry)


def test_sls_collects_the_logs_of_every_serving_container(registry):
    """The kit's ClusterAliyunPipelineConfig for serving pods selects containers by name: trtllm-serve's logs go to SLS
    too."""
    import re

    from llmops.settings import PROJECT_ROOT

    template = (PROJECT_ROOT / "deploy" / "ack" / "templates" / "50-logs.yaml").read_text()
    selector = re.search(r'K8sContainerRegex: "([^"]+)"', template).group(1).replace("$$", "$")
    names = set()
    for deployment in registry.deployments.values():
        for obj in render_all(deployment, registry.gpu_profile(deployment.gpu_profile), stable=None,
                              canary=VersionRef(TRT_URI, "tiny-llama", 1, 512), canary_percent=10):
            if obj["kind"] == "Deployment":
                spec = obj["spec"]["template"]["spec"]
                names |= {c["name"] for c in spec["initContainers"] + spec["containers"]}
    assert names == {"fetch-model", "vllm", "trtllm-serve"}
    assert [n for n in sorted(names) if not re.fullmatch(selector, n)] == []
