"""Artefact prefixes and manifests: pure functions over local files."""

from __future__ import annotations

import hashlib
import json

import pytest

from llmops.artefacts import Manifest, StoreUriError, artefact_prefix, open_store

SHA = "0123456789abcdef0123456789abcdef01234567"
FIELDS = dict(model="tiny-llama", source_repo="org/tiny", source_sha=SHA, recipe="llmcompressor-w8a8",
              serving_runtime="vllm", quantization_format="W8A8", min_compute_capability=7.5, max_model_len=512)


def test_prefix_layout():
    assert artefact_prefix("tiny-llama", SHA, "vllm", "llmcompressor-w8a8") == (
        f"models/tiny-llama/{SHA}/vllm-llmcompressor-w8a8")


@pytest.mark.parametrize(("args", "fragment"), [
    (("tiny/llama", SHA, "vllm", "r"), "model 'tiny/llama'"),
    (("m", "main", "vllm", "r"), "not a 40-hex commit sha"),
    (("m", SHA, "../x", "r"), "runtime '../x'"),
    (("m", SHA, "vllm", ""), "recipe ''"),
])
def test_prefix_refuses_unsafe_parts(args, fragment):
    with pytest.raises(ValueError, match="fix:") as caught:
        artefact_prefix(*args)
    assert fragment in str(caught.value)


def test_for_directory_hashes_every_file_and_skips_hidden_and_manifest(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.safetensors").write_bytes(b"w" * 10_000)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "manifest.json").write_text("{}")
    (tmp_path / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / ".cache" / "huggingface" / "x.metadata").write_text("x")
    (tmp_path / "part.incomplete").write_text("x")
    manifest = Manifest.for_directory(tmp_path, **FIELDS)
    assert [(f.path, f.size) for f in manifest.files] == [("config.json", 2), ("sub/w.safetensors", 10_000)]
    assert manifest.files[1].sha256 == hashlib.sha256(b"w" * 10_000).hexdigest()
    assert manifest.prefix == artefact_prefix("tiny-llama", SHA, "vllm", "llmcompressor-w8a8")
    assert manifest.total_size == 10_002


def test_content_ignores_bookkeeping_only(tmp_path):
    (tmp_path / "a").write_text("a")
    first = Manifest.for_directory(tmp_path, **FIELDS, built_by={"run_id": "r1"})
    again = Manifest.for_directory(tmp_path, **FIELDS, built_by={"run_id": "r2"}, uri="file:///x")
    assert first.same_content(again)
    assert not first.same_content(first.model_copy(update={"max_model_len": 1024}))


def test_json_round_trip_and_asset_extra(tmp_path):
    (tmp_path / "a").write_text("a")
    manifest = Manifest.for_directory(tmp_path, **FIELDS, built_by={"dag_id": "model_refresh", "run_id": "r",
                                                                     "task_id": "publish"})
    again = Manifest.model_validate_json(manifest.to_json())
    assert again == manifest
    extra = manifest.model_copy(update={"uri": "s3://b/m.json"}).asset_extra()
    assert extra["manifest_uri"] == "s3://b/m.json" and extra["source_sha"] == SHA
    assert extra["built_by"]["run_id"] == "r" and "files" not in extra
    json.dumps(extra)


def test_empty_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no files"):
        Manifest.for_directory(tmp_path, **FIELDS)


@pytest.mark.parametrize(("uri", "fragment"), [
    ("gs://bucket/x", "no supported scheme"),
    ("s3:///x", "names no bucket"),
    ("file://host/x", "absolute path"),
])
def test_open_store_refuses_bad_uris(uri, fragment):
    with pytest.raises(StoreUriError, match=fragment):
        open_store(uri)


def test_oss_needs_an_endpoint():
    with pytest.raises(StoreUriError, match="endpoint"):
        open_store("oss://bucket/root", credentials={})
