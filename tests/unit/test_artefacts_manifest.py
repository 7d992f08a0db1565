"""Artefact prefixes and manifests: pure functions over local files."""

from __future__ import annotations

import hashlib
import json

import pytest

from llmops.artefacts import ArtefactError, Manifest, StoreUriError, artefact_prefix, open_store

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


# --- confinement: nothing in a manifest or a version string can reach outside the store or the destination ---

ESCAPES = ["../../../pwned.txt", "/etc/passwd", "sub/../../x", "a\\..\\b", "C:/x", "a//b", "./a", "a/.", "a/",
           "", "a\nb"]


@pytest.mark.parametrize("path", ESCAPES)
def test_manifest_file_paths_that_could_escape_are_refused_when_built_and_when_read(path, tmp_path):
    (tmp_path / "a").write_text("a")
    good = Manifest.for_directory(tmp_path, **FIELDS)
    data = json.loads(good.to_json())
    data["files"][0]["path"] = path
    with pytest.raises(ValueError, match="manifest file path .*fix:"):
        Manifest.model_validate(data)
    data["files"][0]["path"], data["files"][0]["stored_as"] = "a", path
    with pytest.raises(ValueError, match="manifest file stored_as .*fix:"):
        Manifest.model_validate(data)


def test_a_file_name_with_a_backslash_is_refused_when_the_manifest_is_built(tmp_path):
    (tmp_path / "a\\b").write_text("x")
    with pytest.raises(ValueError, match="backslash.*fix:"):
        Manifest.for_directory(tmp_path, **FIELDS)


def _publish(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "w.safetensors").write_bytes(b"w" * 100)
    (src / "config.json").write_text("{}")
    store = open_store((tmp_path / "store").as_uri())
    manifest = Manifest.for_directory(src, **FIELDS)
    store.publish(src, manifest.prefix, manifest)
    return store, manifest


def test_version_strings_resolve_only_inside_the_store_root(tmp_path):
    store, manifest = _publish(tmp_path)
    planted = tmp_path / "outside" / "evil"  # store root is tmp_path/store: models/../../outside/evil is here
    planted.mkdir(parents=True)
    evil = manifest.model_copy(update={"model": "tiny-llama"})
    (planted / "manifest.json").write_text(evil.to_json())
    escape = "models/../../outside/evil"
    for call in (lambda: store.resolve(escape, "tiny-llama"),
                 lambda: store.resolve(f"{store.root_uri}/{escape}/manifest.json", "tiny-llama"),
                 lambda: store.read_manifest(escape), lambda: store.exists(escape),
                 lambda: store.fetch(escape, tmp_path / "dest"), lambda: store.list_versions("../../outside"),
                 lambda: store.put_beside(manifest.prefix, "../../../../../outside/report.md", b"x"),
                 lambda: store.put_beside(escape, "report.md", b"x")):
        with pytest.raises(StoreUriError, match="outside the store root; fix:"):
            call()
    assert sorted(p.name for p in (tmp_path / "outside").rglob("*")) == ["evil", "manifest.json"]
    assert not (tmp_path / "dest").exists()


def test_a_stored_manifest_with_an_escaping_path_is_refused_and_nothing_is_written(tmp_path):
    store, manifest = _publish(tmp_path)
    stored = tmp_path / "store" / manifest.prefix / "manifest.json"
    data = json.loads(stored.read_text())
    data["files"][0]["path"] = "../../../pwned.txt"
    stored.write_text(json.dumps(data))
    with pytest.raises(ArtefactError, match="not a valid manifest .files.0.path: manifest file path '../../../pwned.txt' contains a '..' part"):
        store.fetch(manifest.prefix, tmp_path / "pod" / "a" / "b")
    assert not list(tmp_path.rglob("pwned.txt"))


def test_fetch_refuses_a_target_that_a_symlink_leads_outside_the_destination(tmp_path):
    store, manifest = _publish(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    with pytest.raises(ArtefactError, match="outside the destination.*fix:"):
        store.fetch(manifest.prefix, dest)
    assert list(outside.iterdir()) == [] and not (dest / "config.json").exists()
    (dest / "sub").unlink()
    fetched = store.fetch(manifest.prefix, dest)
    assert (fetched / "sub" / "w.safetensors").read_bytes() == b"w" * 100
