"""The weight policy decides from the repo's file list alone: exhaustively testable without a hub."""

from __future__ import annotations

import pytest

from llmops.config.schema import ModelSpec
from llmops.hub import WeightPolicyError, plan_download
from llmops.hub.policy import check_remote_code, weight_format

SHA = "a" * 40


def spec(**fields) -> ModelSpec:
    return ModelSpec(name="m", repo_id="org/m", targets=[{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}],
                     **{"validation": {"golden_prompts": [{"prompt": "Hello"}]}, **fields})


def test_safetensors_repo_downloads_only_allowed_files_and_never_pickle():
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "README.md", "tokenizer.json",
             "training_args.bin", "tokenizer.model"]
    plan = plan_download(spec(), SHA, files)
    assert plan.files == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer.model"]
    assert "*.bin" in plan.ignore_patterns and "*.pt" in plan.ignore_patterns


def test_pickle_only_repo_is_refused_naming_files_and_fix():
    with pytest.raises(WeightPolicyError) as caught:
        plan_download(spec(), SHA, ["config.json", "pytorch_model.bin", "weights.pt"])
    message = str(caught.value)
    assert "pytorch_model.bin" in message and "org/m@" + SHA in message and "allow_pickle: true" in message


def test_pickle_allowed_by_registry_needs_a_matching_pattern():
    with pytest.raises(WeightPolicyError, match="no weight files match allow_patterns"):
        plan_download(spec(allow_pickle=True), SHA, ["config.json", "pytorch_model.bin"])
    plan = plan_download(spec(allow_pickle=True, allow_patterns=["*.json", "*.bin"]), SHA,
                         ["config.json", "pytorch_model.bin"])
    assert plan.files == ["config.json", "pytorch_model.bin"]


def test_ignore_patterns_apply():
    plan = plan_download(spec(ignore_patterns=["original/*"]), SHA,
                         ["config.json", "model.safetensors", "original/model.safetensors"])
    assert plan.files == ["config.json", "model.safetensors"]


def test_python_files_need_trust_remote_code_and_are_then_fetched():
    files = ["config.json", "model.safetensors", "modeling_x.py"]
    with pytest.raises(WeightPolicyError, match="modeling_x.py"):
        plan_download(spec(), SHA, files)
    assert "modeling_x.py" in plan_download(spec(trust_remote_code=True), SHA, files).files


def test_auto_map_needs_trust_remote_code():
    configs = {"config.json": {"auto_map": {"AutoModel": "other/repo--m.M"}}}
    with pytest.raises(WeightPolicyError, match="auto_map"):
        check_remote_code(spec(), SHA, configs)
    check_remote_code(spec(trust_remote_code=True), SHA, configs)
    check_remote_code(spec(), SHA, {"config.json": {"model_type": "llama"}, "tokenizer_config.json": {}})


def test_the_pickle_hints_name_the_pattern_the_repo_needs():
    with pytest.raises(WeightPolicyError) as refused:
        plan_download(spec(), SHA, ["config.json", "pytorch_model.bin"])
    assert "add '*.bin' to allow_patterns" in str(refused.value)
    with pytest.raises(WeightPolicyError) as unmatched:
        plan_download(spec(allow_pickle=True), SHA, ["config.json", "pytorch_model.bin"])
    assert "fix: add '*.bin' to allow_patterns" in str(unmatched.value) and "e.g. '*.safetensors'" not in str(unmatched.value)


def test_the_weight_format_of_a_snapshot():
    assert weight_format(["config.json", "model.safetensors", "pytorch_model.bin"]) == "safetensors"
    assert weight_format(["config.json", "pytorch_model.bin"]) == "pickle"
