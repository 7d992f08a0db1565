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


def test_fetch_verifies_the_signature_before_downloading(tmp_path, capfd, monkeypatch):
    """The init container gets the deployment's public keys (LLMOPS_TRUSTED_PUBLIC_KEYS) and, with
    `--require-signature`, refuses an unsigned version: a refused version is never downloaded."""
    from llmops.artefacts.signing import SigningKey

    key, other = SigningKey.generate(), SigningKey.generate()
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights" * 100)
    store = open_store((tmp_path / "store").as_uri())
    uris = {}
    for sha, signer in (("a" * 40, key), ("b" * 40, None)):
        manifest = Manifest.for_directory(src, model="m", source_repo="o/m", source_sha=sha, recipe="r",
                                          serving_runtime="vllm", quantization_format="none",
                                          min_compute_capability=0.0, max_model_len=16)
        uris[signer is not None] = store.publish(src, manifest.prefix, manifest, signer=signer)

    def fetch(uri, dest, *flags, keys=()):
        monkeypatch.setenv("LLMOPS_TRUSTED_PUBLIC_KEYS", "".join(k.public.pem for k in keys))
        from llmops.settings import get_settings

        get_settings.cache_clear()
        code = main(["--manifest-uri", uri, "--dest", str(tmp_path / dest), *flags])
        return code, capfd.readouterr().err

    code, err = fetch(uris[True], "other-key", keys=[other])
    assert code == 2 and "none of the trusted keys" in err and not (tmp_path / "other-key").exists()
    assert fetch(uris[True], "rotated", keys=[other, key])[0] == 0  # the old key still listed
    assert (tmp_path / "rotated" / "model.safetensors").is_file()
    code, err = fetch(uris[False], "unsigned-required", "--require-signature", keys=[key])
    assert code == 2 and "has no signature" in err and not (tmp_path / "unsigned-required").exists()
    assert fetch(uris[False], "unsigned-optional", keys=[key])[0] == 0
    assert fetch(uris[False], "no-keys")[0] == 0  # a deployment without signing configured: as before
