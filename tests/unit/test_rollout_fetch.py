"""The pods' init container: fetch a version and verify it; a damaged copy fails before vLLM starts."""

from __future__ import annotations

import pytest

from llmops.artefacts import Manifest, open_store, split_manifest_uri
from llmops.errors import LlmopsError
from llmops.jobs.fetch import main


def test_split_manifest_uri():
    assert split_manifest_uri("oss://bucket/root/models/m/" + "a" * 40 + "/vllm-x/manifest.json") == (
        "oss://bucket/root", "models/m/" + "a" * 40 + "/vllm-x")
    with pytest.raises(LlmopsError, match="fix:"):
        split_manifest_uri("models/m/x/manifest.json")


def test_fetch_verifies_and_refuses_a_damaged_copy(tmp_path, capfd):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights" * 1000)
    (src / "config.json").write_text("{}")
    store = open_store((tmp_path / "store").as_uri())
    manifest = Manifest.for_directory(src, model="m", source_repo="o/m", source_sha="a" * 40, recipe="r",
                                      serving_runtime="vllm", quantization_format="none",
                                      min_compute_capability=0.0, max_model_len=16)
    uri = store.publish(src, manifest.prefix, manifest)
    assert main(["--manifest-uri", uri, "--dest", str(tmp_path / "pod")]) == 0
    assert (tmp_path / "pod" / "model.safetensors").read_bytes() == b"weights" * 1000
    entry = next(e for e in store.read_manifest(manifest.prefix).files if e.path == "model.safetensors")
    stored = tmp_path / "store" / manifest.prefix / entry.key
    stored.write_bytes(b"Weights" * 1000)  # same size, different bytes
    assert main(["--manifest-uri", uri, "--dest", str(tmp_path / "pod2")]) == 2  # the pod fails, vLLM never starts
    stderr = capfd.readouterr().err
    assert "model.safetensors" in stderr and "permanent error" in stderr and "Traceback" not in stderr


def test_fetch_refuses_a_manifest_uri_that_leaves_the_store(tmp_path, capfd):
    planted = tmp_path / "outside" / "evil" / "manifest.json"
    planted.parent.mkdir(parents=True)
    planted.write_text("{}")
    assert main(["--manifest-uri", f"{(tmp_path / 'store').as_uri()}/models/../../outside/evil/manifest.json",
                 "--dest", str(tmp_path / "pod")]) == 2
    assert "outside the store root; fix:" in capfd.readouterr().err
    assert not (tmp_path / "pod").exists()
