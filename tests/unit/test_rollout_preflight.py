"""Pre-flight checks as pure functions over manifest facts, GPU profiles and capacity numbers."""

from __future__ import annotations

import pytest

from llmops.config import load_registry
from llmops.rollout.preflight import (
    GIB,
    PreflightError,
    RolloutInProgressError,
    check_checksums,
    check_compatibility,
    check_not_in_progress,
    raise_if_problems,
)
from llmops.serving.capacity import NodeCapacity, check_capacity, replica_request
from llmops.serving.port import ArtefactFacts


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def facts(**overrides):
    base = dict(uri="file:///store/models/tiny-llama/abc/vllm-llmcompressor-w8a8/manifest.json", model="tiny-llama",
                serving_runtime="vllm", quantization_format="W8A8", min_compute_capability=7.5,
                tensor_parallel_size=1, max_model_len=512, weights_bytes=2 * 1024**2, recipe="llmcompressor-w8a8")
    base.update(overrides)
    return ArtefactFacts(**base)


def test_w8a8_fits_an_a10(registry):
    assert check_compatibility(facts(), registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10")) == []


def test_fp8_is_refused_on_an_a10_with_a_fix(registry):
    fp8 = facts(quantization_format="FP8_DYNAMIC", min_compute_capability=8.9, recipe="llmcompressor-fp8-dynamic")
    problems = check_compatibility(fp8, registry.deployment("tiny-llama-chat"), registry.gpu_profile("a10"))
    assert [p.check for p in problems] == ["compute capability"]
    with pytest.raises(PreflightError) as err:
        raise_if_problems("tiny-llama-chat", problems)
    message = str(err.value)
    assert "8.9" in message and "8.6" in message and "NVIDIA A10" in message and "fix:" in message
    assert check_compatibility(fp8, registry.deployment("tiny-llama-chat"), registry.gpu_profile("l20")) == []


def test_wrong_runtime_tp_and_memory_are_each_named(registry):
    deployment = registry.deployment("tiny-llama-chat")
    problems = check_compatibility(facts(serving_runtime="tensorrt-llm", tensor_parallel_size=2,
                                         weights_bytes=40 * GIB), deployment, registry.gpu_profile("a10"))
    assert [p.check for p in problems] == ["serving runtime", "tensor parallel", "GPU memory"]
    # the same TP 2 artefact fits an 8-GPU node, and 40 GiB fit two 48 GiB GPUs
    assert check_compatibility(facts(tensor_parallel_size=2, weights_bytes=40 * GIB), deployment,
                               registry.gpu_profile("l20")) == []
    # a cGPU share gets only resource_per_replica GiB
    assert [p.check for p in check_compatibility(facts(weights_bytes=11 * GIB), deployment,
                                                 registry.gpu_profile("a10-shared"))] == ["GPU memory"]


def test_capacity_counts_whole_replicas_per_node(registry):
    a10 = registry.gpu_profile("a10")
    busy = [NodeCapacity("n1", 1, 1), NodeCapacity("n2", 1, 1)]
    assert [p.check for p in check_capacity(busy, profile=a10, per_replica=1, replicas=1)] == ["GPU capacity"]
    one_free = [NodeCapacity("n1", 1, 1), NodeCapacity("n2", 1, 0)]
    assert check_capacity(one_free, profile=a10, per_replica=1, replicas=1) == []
    assert check_capacity(one_free, profile=a10, per_replica=1, replicas=2) != []
    shared = registry.gpu_profile("a10-shared")
    assert replica_request(shared) == 12
    # 8 GiB free on each of two nodes: 16 GiB in total but no single node fits a 12 GiB replica
    assert check_capacity([NodeCapacity("a", 24, 16), NodeCapacity("b", 24, 16)], profile=shared,
                          per_replica=12, replicas=1) != []
    assert replica_request(registry.gpu_profile("l20"), facts(tensor_parallel_size=4)) == 4


def test_a_second_rollout_is_refused_not_queued():
    problems = check_not_in_progress("tiny-llama-chat", "manual__1", "manual__2")
    with pytest.raises(RolloutInProgressError, match="manual__1.*\n.*not queued"):
        raise_if_problems("tiny-llama-chat", problems)
    assert check_not_in_progress("tiny-llama-chat", "manual__1", "manual__1") == []  # a retry of the same run
    assert check_not_in_progress("tiny-llama-chat", None, "manual__2") == []


def test_checksum_mismatch_is_a_problem():
    assert check_checksums("u", []) == []
    assert "model.safetensors" in check_checksums("u", ["model.safetensors"])[0].what


def test_checksums_say_what_was_compared_and_refuse_a_manifest_without_them():
    from llmops.artefacts.store import StoredCheck
    from llmops.rollout.preflight import checksums_checked

    ok = StoredCheck("u", "size and CRC32 of all 2 files")
    assert check_checksums("u", ok) == [] and checksums_checked(ok) == "checksums verify (size and CRC32 of all 2 files)"
    bad = StoredCheck("u", "size and CRC32 of all 2 files", ["w.safetensors: the store reports crc32 A, ..."])
    assert "compared: size and CRC32" in check_checksums("u", bad)[0].what
    refused = check_checksums("u", StoredCheck("u", "nothing (refused)", unverifiable="u records no server-kept"))
    assert refused[0].what == "u records no server-kept" and "model_refresh" in refused[0].fix


def test_facts_from_a_manifest_dict():
    manifest = {"serving_runtime": "vllm", "quantization_format": "W8A8", "min_compute_capability": 7.5,
                "tensor_parallel_size": 1, "max_model_len": 512, "recipe": "llmcompressor-w8a8",
                "files": [{"path": "model.safetensors", "size": 100, "sha256": "x"},
                          {"path": "config.json", "size": 5, "sha256": "y"}]}
    f = ArtefactFacts.from_manifest(manifest, "u", "tiny-llama")
    assert (f.weights_bytes, f.min_compute_capability, f.serving_runtime) == (100, 7.5, "vllm")
