"""Signed lineage on every backend: publish signs the manifest, and any change after publish is caught and named.

Real stores (file, SeaweedFS S3, SeaweedFS behind the OSS adapter); the changes are made behind the store's back
as an attacker with write access to the bucket would make them.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest
from artefact_helpers import BUCKET, make_manifest, overwrite_stored, stored_key

from llmops.artefacts import ImmutableArtefactError
from llmops.artefacts.credentials import credentials_to_env
from llmops.artefacts.signing import SIGNATURES_DIR, SigningKey, signature_name

KEY, OTHER = SigningKey.generate(), SigningKey.generate()


def _small_checkpoint(directory, weights: bytes = b""):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    (directory / "model.safetensors").write_bytes(weights or os.urandom(4096))
    (directory / "sub").mkdir()
    (directory / "sub" / "tokenizer.json").write_text('{"version": "1.0"}')
    return directory


def _publish(store, directory, signer, **fields):
    manifest = make_manifest(directory, **fields)
    store.publish(directory, manifest.prefix, manifest, signer=signer)
    return store.read_manifest(manifest.prefix)


def _signature_keys(store, prefix):
    return sorted(store._list(f"{prefix}/{SIGNATURES_DIR}/"))


def _overwrite_key(store, request, key: str, data: bytes):
    if store.scheme == "file":
        (store.root / key).write_bytes(data)
    else:
        overwrite_stored(store, request, key, data)


def _delete_key(store, request, key: str):
    if store.scheme == "file":
        (store.root / key).unlink()
    else:
        request.getfixturevalue("s3_server").client().delete_object(Bucket=BUCKET, Key=store._key(key))


def test_a_signed_version_verifies_and_its_signature_is_model_signing_v1(store, tmp_path):
    published = _publish(store, _small_checkpoint(tmp_path / "ck"), KEY)
    [key] = _signature_keys(store, published.prefix)
    manifest_bytes = store._get_bytes(f"{published.prefix}/manifest.json")
    assert key == f"{published.prefix}/{signature_name(manifest_bytes)}"

    check = store.verify_signature(published, [OTHER.public, KEY.public])
    assert check.ok and check.key_id == KEY.key_id and check.files == 3
    bundle = json.loads(store._get_bytes(key))
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == KEY.key_id
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    signed = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    assert signed == {**{e.path: e.sha256 for e in published.files}, "manifest.json": check.manifest_sha256}


def test_a_changed_manifest_is_named(store, tmp_path, request):
    published = _publish(store, _small_checkpoint(tmp_path / "ck"), KEY)
    key = f"{published.prefix}/manifest.json"
    data = json.loads(store._get_bytes(key))
    data["source_repo"] = "evil/weights"  # one field, the files as signed
    _overwrite_key(store, request, key, json.dumps(data, indent=2).encode())
    check = store.verify_signature(store.read_manifest(published.prefix), [KEY.public])
    assert check.status == "manifest changed" and not check.ok
    assert [c.split(" ")[0] for c in check.changed] == ["manifest.json"]
    assert "changed after signing" in check.detail and KEY.key_id[:16] in check.detail
    assert check.problem(require_signature=False) == check.detail  # refused even where signatures are optional

    # a file entry swapped for other bytes (sha256 and all): named as the file that changed
    entry = data["files"][0]
    data["files"][0] = {**entry, "sha256": "0" * 64}
    _overwrite_key(store, request, key, json.dumps(data, indent=2).encode())
    check = store.verify_signature(store.read_manifest(published.prefix), [KEY.public])
    assert check.status == "manifest changed"
    assert any(c.startswith(f"{entry['path']} (signed sha256 {entry['sha256'][:16]}, now 0000") for c in check.changed)


def test_a_changed_file_is_caught_by_the_store_check_the_signature_pins(store, tmp_path, request):
    published = _publish(store, _small_checkpoint(tmp_path / "ck"), KEY)
    key = stored_key(store, published.prefix, "model.safetensors")
    _overwrite_key(store, request, key, os.urandom(4096))  # same size, other bytes
    assert store.verify_signature(published, [KEY.public]).ok  # the manifest is as signed ...
    stored = store.verify_stored(published)  # ... and the bytes are not what it (and so the signature) pins
    assert not stored.ok and [m.split(":")[0] for m in stored.mismatches] == ["model.safetensors"]


def test_a_signature_by_another_key_or_a_changed_signature_is_refused(store, tmp_path, request):
    published = _publish(store, _small_checkpoint(tmp_path / "ck"), OTHER)
    check = store.verify_signature(published, [KEY.public])
    assert check.status == "unknown key" and OTHER.key_id[:16] in check.detail and KEY.key_id[:16] in check.detail
    assert check.problem(require_signature=False)  # a key not listed is refused even where signatures are optional

    [key] = _signature_keys(store, published.prefix)
    bundle = json.loads(store._get_bytes(key))
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["llmops"]["source_repo"] = "evil/weights"  # the payload edited, the signature kept
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    _overwrite_key(store, request, key, json.dumps(bundle).encode())
    check = store.verify_signature(published, [OTHER.public])
    assert check.status == "invalid" and "does not verify" in check.detail


def test_a_missing_signature_is_unsigned_and_refused_only_where_required(store, tmp_path, request):
    unsigned = _publish(store, _small_checkpoint(tmp_path / "a"), None, source_sha="a" * 40)
    assert _signature_keys(store, unsigned.prefix) == []
    check = store.verify_signature(unsigned, [KEY.public])
    assert check.status == "unsigned" and "no signatures/" in check.detail
    assert check.problem(require_signature=False) is None and check.problem(require_signature=True)

    signed = _publish(store, _small_checkpoint(tmp_path / "b"), KEY, source_sha="b" * 40)
    [key] = _signature_keys(store, signed.prefix)
    _delete_key(store, request, key)
    assert store.verify_signature(signed, [KEY.public]).status == "unsigned"


def test_a_rotated_key_old_versions_verify_while_the_old_public_key_is_listed(store, tmp_path):
    old, new = SigningKey.generate(), SigningKey.generate()
    before = _publish(store, _small_checkpoint(tmp_path / "a"), old, source_sha="a" * 40)
    after = _publish(store, _small_checkpoint(tmp_path / "b"), new, source_sha="b" * 40)
    both = [new.public, old.public]
    assert store.verify_signature(before, both).key_id == old.key_id
    assert store.verify_signature(after, both).key_id == new.key_id
    assert store.verify_signature(before, [new.public]).status == "unknown key"  # the old key dropped


@pytest.mark.parametrize("kind", ["file", "s3", "oss"])
def test_publish_racing_its_twin_leaves_one_valid_signature(kind, open_test_store, tmp_path):
    """Two publishers of one version (same bytes, each its own key and Airflow run, so each signs other manifest
    bytes) released together: one manifest wins and exactly one signature stays, the winner's, and it verifies."""
    keys = [SigningKey.generate(), SigningKey.generate()]
    trusted = [k.public for k in keys]
    winners = []
    for race in range(6):
        weights = os.urandom(4096)
        dirs = [_small_checkpoint(tmp_path / f"{race}-{name}", weights) for name in ("a", "b")]
        manifests = [make_manifest(d, source_sha=f"{race:040x}", built_by={"run_id": f"run-{i}"})
                     for i, d in enumerate(dirs)]
        stores = [open_test_store(kind), open_test_store(kind)]
        barrier, outcomes = threading.Barrier(2), [None, None]

        def publish(i, barrier, outcomes, store, directory, manifest):
            barrier.wait()
            time.sleep(random.random() * 0.004)
            try:
                outcomes[i] = store.publish(directory, manifest.prefix, manifest, signer=keys[i])
            except Exception as exc:  # noqa: BLE001 - the outcome is what the test asserts on
                outcomes[i] = exc

        threads = [threading.Thread(target=publish, args=(i, barrier, outcomes, stores[i], dirs[i], manifests[i]))
                   for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert all(isinstance(o, str) for o in outcomes), f"race {race}: {outcomes!r}"  # same content: both fine
        store = stores[0]
        published = store.read_manifest(manifests[0].prefix)
        check = store.verify_signature(published, trusted)
        assert check.ok, f"race {race}: {check.detail}"
        assert _signature_keys(store, published.prefix) == [
            f"{published.prefix}/{SIGNATURES_DIR}/{check.manifest_sha256}.sig"], f"race {race}"
        winners.append(published.built_by.run_id)
        assert check.key_id == keys[int(published.built_by.run_id[-1])].key_id
    print(f"{kind}: winners {winners}")


def test_different_content_under_a_signed_version_is_still_refused_and_leaves_no_signature(store, tmp_path):
    published = _publish(store, _small_checkpoint(tmp_path / "a"), KEY)
    other = make_manifest(_small_checkpoint(tmp_path / "b"))
    with pytest.raises(ImmutableArtefactError):
        store.publish(tmp_path / "b", other.prefix, other, signer=OTHER)
    assert len(_signature_keys(store, published.prefix)) == 1
    assert store.verify_signature(published, [KEY.public]).ok


@pytest.mark.parametrize("kind", ["file", "s3", "oss"])
def test_the_verify_command_prints_what_it_verified_and_fails_on_a_mismatch(kind, open_test_store, tmp_path, request):
    """`python -m llmops verify MANIFEST_URI` as users run it (a subprocess; store credentials from AWS_* / OSS_*)."""
    store = open_test_store(kind)
    published = _publish(store, _small_checkpoint(tmp_path / "ck"), KEY)
    public = tmp_path / "signer.pub"
    public.write_text(KEY.public.pem)
    credentials = {"file": lambda: {}, "s3": lambda: request.getfixturevalue("s3_server").credentials,
                   "oss": lambda: request.getfixturevalue("oss_server").credentials}[kind]()
    env = {k: v for k, v in os.environ.items() if not (k.startswith("AWS_") or k.startswith("OSS_"))}
    env.update(credentials_to_env(store.root_uri, credentials))

    def verify(*keys: str):
        args = [a for key in keys for a in ("--public-key", key)]
        done = subprocess.run([sys.executable, "-m", "llmops", "verify", published.uri, *args], env=env,
                              capture_output=True, text=True, timeout=120)
        return done.returncode, done.stdout + done.stderr

    code, out = verify(str(public))
    sha = store.verify_signature(published, [KEY.public]).manifest_sha256
    assert code == 0, out
    assert f"manifest   sha256 {sha}" in out and f"signature  OK: key {KEY.key_id}" in out
    assert "files      OK" in out and all(entry.path in out for entry in published.files)
    assert out.rstrip().endswith(f"verified: {published.uri}")

    other = tmp_path / "other.pub"
    other.write_text(OTHER.public.pem)
    code, out = verify(str(other))
    assert code == 1 and "signature  UNKNOWN KEY" in out and "FAILED (signature)" in out

    _overwrite_key(store, request, stored_key(store, published.prefix, "model.safetensors"), os.urandom(4096))
    code, out = verify(str(public))
    assert code == 1 and "files      MISMATCH" in out and "mismatch: model.safetensors" in out, out
    assert "FAILED (files)" in out

    data = json.loads(store._get_bytes(f"{published.prefix}/manifest.json"))
    data["recipe_params"] = {"scheme": "W4A16"}
    _overwrite_key(store, request, f"{published.prefix}/manifest.json", json.dumps(data, indent=2).encode())
    code, out = verify(str(public))
    assert code == 1 and "signature  MANIFEST CHANGED" in out and f"changed: manifest.json (signed sha256 {sha[:16]}" in out
