"""One contract, three backends: file, s3 (boto3 -> SeaweedFS), oss (oss2 -> OSS adapter -> SeaweedFS)."""

from __future__ import annotations

import os
import time

import pytest
from artefact_helpers import BUCKET, SHA, make_manifest, overwrite_stored, stored_key

from llmops.artefacts import (
    ArtefactError,
    ArtefactIntegrityError,
    ArtefactNotFoundError,
    ImmutableArtefactError,
    StoreUriError,
    artefact_prefix,
)
from llmops.rollout.preflight import check_checksums


class Interrupted(Exception):
    """Stands for a crash between two parts of an upload."""


def test_publish_read_fetch_list_resolve(store, checkpoint, tmp_path):
    manifest = make_manifest(checkpoint)
    prefix = artefact_prefix("tiny-llama", SHA, "vllm", "llmcompressor-w8a8")
    uri = store.publish(checkpoint, prefix, manifest)
    assert uri == f"{store.root_uri}/models/tiny-llama/{SHA}/vllm-llmcompressor-w8a8/manifest.json"

    read = store.read_manifest(prefix)
    assert read.uri == uri and read.same_content(manifest) and read.created_at == manifest.created_at
    assert read.built_by.run_id == "manual__1" and read.min_compute_capability == 7.5
    assert store.exists(prefix)

    out = store.fetch(prefix, tmp_path / "fetched")
    for entry in manifest.files:
        assert (out / entry.path).read_bytes() == (checkpoint / entry.path).read_bytes()
    assert [m.uri for m in store.list_versions("tiny-llama")] == [uri]
    assert store.resolve("latest", "tiny-llama").uri == uri
    assert store.resolve(uri, "tiny-llama").uri == uri
    assert store.resolve(prefix, "tiny-llama").uri == uri
    assert store.list_versions("other-model") == []


def test_same_content_again_is_a_no_op(store, checkpoint):
    first = make_manifest(checkpoint)
    uri = store.publish(checkpoint, first.prefix, first)
    sent = store.stats.bytes_uploaded
    time.sleep(0.01)
    retry = make_manifest(checkpoint, built_by={"dag_id": "model_refresh", "run_id": "manual__2", "task_id": "p"})
    assert store.publish(checkpoint, retry.prefix, retry) == uri
    assert store.stats.bytes_uploaded == sent  # nothing re-sent
    assert store.read_manifest(first.prefix).built_by.run_id == "manual__1"  # the published one stands


def test_different_content_under_a_published_prefix_is_refused(store, checkpoint):
    manifest = make_manifest(checkpoint)
    store.publish(checkpoint, manifest.prefix, manifest)
    (checkpoint / "config.json").write_text('{"changed": true}')
    changed = make_manifest(checkpoint)
    sent = store.stats.bytes_uploaded
    with pytest.raises(ImmutableArtefactError, match="immutable"):
        store.publish(checkpoint, changed.prefix, changed)
    assert store.stats.bytes_uploaded == sent
    assert store.read_manifest(manifest.prefix).same_content(manifest)


def test_interrupted_publish_is_invisible_and_the_retry_resumes(store, checkpoint, open_test_store, tmp_path):
    manifest = make_manifest(checkpoint)
    big = next(e for e in manifest.files if e.path == "model.safetensors")

    def crash_midway(path: str, done: int, size: int) -> None:
        if path.endswith("model.safetensors") and done >= 10 * 1024 * 1024:
            raise Interrupted(path)

    with pytest.raises(Interrupted):
        store.publish(checkpoint, manifest.prefix, manifest, progress=crash_midway)
    assert store.read_manifest(manifest.prefix) is None
    assert not store.exists(manifest.prefix)
    assert store.list_versions("tiny-llama") == []
    with pytest.raises(ArtefactNotFoundError):
        store.resolve("latest", "tiny-llama")
    with pytest.raises(ArtefactNotFoundError):
        store.fetch(manifest.prefix, tmp_path / "nothing")

    retry = open_test_store(store.scheme)  # a fresh store object on the same root: counters start at zero
    uri = retry.publish(checkpoint, manifest.prefix, manifest)
    assert uri.endswith("manifest.json")
    stats = retry.stats.snapshot()
    assert stats["files_skipped"] >= 1  # config.json went up before the crash
    assert stats["bytes_uploaded"] < manifest.total_size
    if store.scheme != "file":  # object stores resume inside the big file too
        assert stats["parts_skipped"] >= 2 and stats["bytes_uploaded"] <= manifest.total_size - 10 * 1024 * 1024
    assert retry.fetch(manifest.prefix, tmp_path / "fetched").joinpath("model.safetensors").stat().st_size == big.size


def test_a_damaged_stored_file_fails_fetch(store, checkpoint, tmp_path, request):
    manifest = make_manifest(checkpoint)
    store.publish(checkpoint, manifest.prefix, manifest)
    overwrite_stored(store, request, stored_key(store, manifest.prefix, "tokenizer.json"), b'{"version": "2.0"}')
    with pytest.raises(ArtefactIntegrityError) as caught:
        store.fetch(manifest.prefix, tmp_path / "fetched")
    assert caught.value.path == "tokenizer.json" and "tokenizer.json" in str(caught.value)
    assert not (tmp_path / "fetched" / "tokenizer.json").exists()


def test_bad_input_fails_before_anything_is_sent(store, checkpoint):
    manifest = make_manifest(checkpoint)
    with pytest.raises(ArtefactError, match="does not match"):
        store.publish(checkpoint, artefact_prefix("tiny-llama", SHA, "vllm", "other-recipe"), manifest)
    (checkpoint / "tokenizer.json").unlink()
    with pytest.raises(ArtefactError, match="missing"):
        store.publish(checkpoint, manifest.prefix, manifest)
    assert store.stats.bytes_uploaded == 0 and store.list_versions("tiny-llama") == []


def test_resolve_latest_filters_and_orders(store, checkpoint):
    older = make_manifest(checkpoint)
    store.publish(checkpoint, older.prefix, older)
    newer = make_manifest(checkpoint, source_sha="f" * 40)
    store.publish(checkpoint, newer.prefix, newer)
    trt = make_manifest(checkpoint, serving_runtime="tensorrt-llm", recipe="modelopt-fp8", quantization_format="FP8",
                        min_compute_capability=8.9, source_sha="e" * 40)
    store.publish(checkpoint, trt.prefix, trt)
    assert [m.source_sha for m in store.list_versions("tiny-llama")] == [SHA, "f" * 40, "e" * 40]
    assert store.resolve("latest", "tiny-llama").recipe == "modelopt-fp8"
    assert store.resolve("latest", "tiny-llama", runtime="vllm").source_sha == "f" * 40
    with pytest.raises(ArtefactNotFoundError, match="recipe=nope"):
        store.resolve("latest", "tiny-llama", recipe="nope")
    with pytest.raises(ArtefactError, match="not 'other'"):
        store.resolve(older.prefix, "other")


def test_retry_after_the_bytes_changed_does_not_reuse_stale_parts(store, checkpoint, open_test_store, tmp_path):
    """A rebuilt (non-deterministic) checkpoint after a crash: parts of the old bytes must not be kept."""
    manifest = make_manifest(checkpoint)

    def crash_midway(path: str, done: int, size: int) -> None:
        if path.endswith("model.safetensors") and done >= 10 * 1024 * 1024:
            raise Interrupted(path)

    with pytest.raises(Interrupted):
        store.publish(checkpoint, manifest.prefix, manifest, progress=crash_midway)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(os.urandom(weights.stat().st_size))
    rebuilt = make_manifest(checkpoint)
    retry = open_test_store(store.scheme)
    retry.publish(checkpoint, rebuilt.prefix, rebuilt)
    assert retry.stats.parts_skipped == 0
    fetched = retry.fetch(rebuilt.prefix, tmp_path / "fetched")
    assert (fetched / "model.safetensors").read_bytes() == weights.read_bytes()


def test_verify_stored_catches_a_same_size_bit_flip_and_says_what_it_compared(store, checkpoint, request):
    """Rollout pre-flight's check: sizes plus the checksum the store keeps, recorded at publish."""
    manifest = make_manifest(checkpoint)
    store.publish(checkpoint, manifest.prefix, manifest)
    published = store.read_manifest(manifest.prefix)
    kind = {"file": "sha256", "s3": "crc32", "oss": "crc64ecma"}[store.scheme]
    assert all(set(entry.checksums) == {kind} for entry in published.files)
    check = store.verify_stored(published)
    assert check.ok and check.mismatches == [] and f"all {len(published.files)} files" in check.verified
    assert {"sha256": "sha256 re-hashed", "crc32": "CRC32", "crc64ecma": "CRC64"}[kind] in check.verified

    key = stored_key(store, manifest.prefix, "tokenizer.json")
    original = (checkpoint / "tokenizer.json").read_bytes()
    flipped = bytes([original[0] ^ 1]) + original[1:]  # same size, one bit different
    overwrite_stored(store, request, key, flipped)
    check = store.verify_stored(published)
    assert not check.ok and len(check.mismatches) == 1 and check.mismatches[0].startswith("tokenizer.json: ")
    assert kind in check.mismatches[0]

    problems = check_checksums(published.uri, check)  # what rollout pre-flight turns it into
    assert len(problems) == 1 and "tokenizer.json" in problems[0].what and check.verified in problems[0].what

    unrecorded = published.model_copy(update={"files": [e.model_copy(update={"checksums": {}})
                                                        for e in published.files]})
    refused = store.verify_stored(unrecorded)
    assert not refused.ok and "no server-kept checksum" in refused.unverifiable
    assert "published before checksums were recorded" in check_checksums(published.uri, refused)[0].what


def test_put_beside_writes_once_next_to_a_version_outside_its_manifest(store, checkpoint, tmp_path):
    manifest = make_manifest(checkpoint)
    store.publish(checkpoint, manifest.prefix, manifest)
    report_prefix = f"{manifest.prefix}/rollouts/chat/run-1"
    uri = store.put_beside(report_prefix, "report.md", b"# first")
    assert uri.endswith("/rollouts/chat/run-1/report.md")
    store.put_beside(report_prefix, "report.md", b"# second")  # write-once: a rerun keeps the first
    assert store._get_bytes(f"{report_prefix}/report.md") == b"# first"
    fetched = store.fetch(manifest.prefix, tmp_path / "fetched")
    assert not (fetched / "rollouts").exists()
    assert store.read_manifest(manifest.prefix).same_content(manifest)


def test_a_version_string_cannot_reach_a_manifest_planted_outside_the_store_root(store, checkpoint, request):
    """A rollout `version` of models/../../outside/evil: on object stores an HTTP path with '..' may be collapsed
    by the server, so the store refuses it before any request."""
    manifest = make_manifest(checkpoint)
    evil = manifest.to_json().encode()
    if store.scheme == "file":  # root is <tmp>/store: models/../../outside/evil is <tmp>/outside/evil
        planted = store.root.parent / "outside" / "evil" / "manifest.json"
        planted.parent.mkdir(parents=True)
        planted.write_bytes(evil)
    else:  # root is <bucket>/<test id>: models/../../outside/evil is <bucket>/outside/evil
        request.getfixturevalue("s3_server").client().put_object(Bucket=BUCKET, Key="outside/evil/manifest.json",
                                                                  Body=evil)
    for version in ("models/../../outside/evil", f"{store.root_uri}/models/../../outside/evil/manifest.json"):
        with pytest.raises(StoreUriError, match="outside the store root; fix:"):
            store.resolve(version, "tiny-llama")
