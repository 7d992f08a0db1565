"""Quantization recipes on the trained tiny model, on CPU, through the real job and the real tools
(llm-compressor, NVIDIA ModelOpt). The checkpoints are read back from their files, not from the job's word."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from refresh_helpers import plan_items, run_job

from llmops.artefacts import open_store


def safetensors_dtypes(path: Path) -> dict[str, str]:
    """tensor name -> dtype from a safetensors header (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {name: meta["dtype"] for name, meta in header.items() if name != "__metadata__"}


def test_llmcompressor_w8a8_writes_an_int8_compressed_tensors_checkpoint_vllm_can_read(quantized):
    item, result, _ = quantized["llmcompressor-w8a8"]
    checkpoint = Path(item.checkpoint_dir)
    config = json.loads((checkpoint / "config.json").read_text())
    quant = config["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors"
    group = quant["config_groups"]["group_0"]
    assert (group["weights"]["num_bits"], group["weights"]["type"]) == (8, "int")
    assert group["input_activations"]["dynamic"] is True
    dtypes = safetensors_dtypes(checkpoint / "model.safetensors")
    assert dtypes["model.layers.0.mlp.down_proj.weight"] == "I8"
    assert dtypes["lm_head.weight"] in ("F32", "BF16", "F16")  # kept in full precision
    assert (checkpoint / "tokenizer.json").is_file()
    assert result["scheme"] == "W8A8" and result["recipe"] == "llmcompressor-w8a8"


def test_modelopt_fp8_writes_the_unified_checkpoint_tensorrt_llm_loads(quantized):
    item, result, _ = quantized["modelopt-fp8"]
    checkpoint = Path(item.checkpoint_dir)
    hf_quant = json.loads((checkpoint / "hf_quant_config.json").read_text())
    assert hf_quant["producer"]["name"] == "modelopt"
    assert hf_quant["quantization"]["quant_algo"] == "FP8"
    assert "lm_head" in hf_quant["quantization"]["exclude_modules"]
    dtypes = safetensors_dtypes(checkpoint / "model.safetensors")
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == "F8_E4M3"
    assert "model.layers.0.self_attn.q_proj.weight_scale" in dtypes


def test_the_metadata_records_the_source_and_tools_and_no_reference_of_another_runtime(quantized):
    """The reference is the validating runtime's own (llmops.validate.reference_store), not transformers' answers."""
    for item, result, _ in quantized.values():
        metadata = json.loads((Path(item.checkpoint_dir) / "llmops_quantize.json").read_text())
        assert "reference" not in metadata and "reference" not in result
        assert metadata["source"]["sha"] == item.sha
        assert {"torch", "transformers"} <= set(metadata["tool_versions"])
    tools = {json.loads((Path(i.checkpoint_dir) / "llmops_quantize.json").read_text())["tool"]: i
             for i, _, _ in quantized.values()}
    assert set(tools) == {"llmcompressor", "modelopt"}


def test_a_second_run_reuses_the_finished_checkpoint(quantized, worker_python):
    item, _, first_seconds = quantized["llmcompressor-w8a8"]
    weights = Path(item.checkpoint_dir) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    done, result = run_job(worker_python, "quantize", "--item", item.to_json())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reusing it" in done.stderr
    assert weights.stat().st_mtime_ns == before
    assert result["checkpoint"] == item.checkpoint_dir


def test_gptq_is_refused_on_a_machine_without_a_gpu_before_anything_is_written(tmp_path, worker_python, tiny_model):
    # Plans for runtime local never contain this recipe; the job refuses it too if asked directly.
    items = plan_items(tmp_path, ["llmcompressor-w8a8"])
    item = items["llmcompressor-w8a8"]
    data = json.loads(item.to_json())
    data.update(recipe="optimum-gptq-int4", artefact_recipe="optimum-gptq-int4",
                source_dir=str(tiny_model), work_dir=str(tmp_path / "gptq"))
    done, result = run_job(worker_python, "quantize", "--item", json.dumps(data))
    assert done.returncode == 2 and result is None
    assert "optimum's GPTQ needs a CUDA GPU and the gptqmodel package" in done.stderr
    assert "fix: run model_refresh on runtime kubernetes" in done.stderr
    assert not (tmp_path / "gptq").exists()


CUSTOM_CONFIG = '''from transformers import LlamaConfig


class CustomLlamaConfig(LlamaConfig):
    model_type = "custom_llama"
'''
CUSTOM_MODELING = '''from transformers import LlamaForCausalLM

from .configuration_custom import CustomLlamaConfig


class CustomLlamaForCausalLM(LlamaForCausalLM):
    config_class = CustomLlamaConfig
'''


@pytest.mark.slow
def test_a_model_with_its_own_modeling_code_is_quantized_validated_and_published_with_trust_remote_code(
        tmp_path, worker_python, serving_python, tiny_model):
    """A repo whose config names custom classes (a subclass of Llama), end to end: llm-compressor gets the flag and
    the checkpoint keeps the code its config points at; real vLLM loads it with --trust-remote-code and agrees with
    the reference on token ids; the manifest records that remote code was trusted and the source weight format."""
    source = tmp_path / "custom"
    shutil.copytree(tiny_model, source)
    (source / "configuration_custom.py").write_text(CUSTOM_CONFIG)
    (source / "modeling_custom.py").write_text(CUSTOM_MODELING)
    config = json.loads((source / "config.json").read_text())
    config.update(model_type="custom_llama", auto_map={"AutoConfig": "configuration_custom.CustomLlamaConfig",
                                                       "AutoModelForCausalLM": "modeling_custom.CustomLlamaForCausalLM"})
    (source / "config.json").write_text(json.dumps(config))
    item = plan_items(tmp_path / "work", ["llmcompressor-w8a8"])["llmcompressor-w8a8"]
    data = {**json.loads(item.to_json()), "source_dir": str(source), "trust_remote_code": True}
    done, result = run_job(worker_python, "quantize", "--item", json.dumps(data), timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    checkpoint = Path(item.checkpoint_dir)
    assert {"modeling_custom.py", "configuration_custom.py"} <= {p.name for p in checkpoint.iterdir()}
    assert json.loads((checkpoint / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"].startswith(
        "modeling_custom.")
    metadata = json.loads((checkpoint / "llmops_quantize.json").read_text())
    assert metadata["trust_remote_code"] is True and metadata["source"]["weight_format"] == "safetensors"

    done, result = run_job(serving_python, "validate", "--item", json.dumps(data), timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    record = json.loads(Path(item.validation_file).read_text())
    assert record["status"] == result["status"] == "passed", record
    assert "--trust-remote-code" in done.stderr  # the logged vLLM command line

    store_uri = (tmp_path / "store").as_uri()
    done, result = run_job(worker_python, "publish", "--item", json.dumps(data), "--store-uri", store_uri,
                           "--dag-id", "model_refresh", "--run-id", "custom-code")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = open_store(store_uri).read_manifest(item.prefix)
    recorded = {**manifest.model_extra, **manifest.model_dump()}
    assert recorded["trust_remote_code"] is True
    assert recorded["source_weight_format"] == "safetensors"
    assert {"modeling_custom.py", "configuration_custom.py"} <= {f.path for f in manifest.files}
