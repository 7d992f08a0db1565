"""Our signatures are the OpenSSF model-signing format: its own verifier (model-signing 1.1.1, the reference
implementation) accepts a fetched version signed by publish, and refuses it after any changed byte."""

from __future__ import annotations

import model_signing
import pytest

from llmops.artefacts import Manifest, open_store
from llmops.artefacts.signing import SigningKey, signature_name


def _verify(directory, signature, public_key):
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key).verify(directory, signature)


def test_a_fetched_version_verifies_with_model_signing(tmp_path):
    key = SigningKey.generate()
    src = tmp_path / "src"
    for path, data in {"config.json": b"{}", "model.safetensors": b"w" * 5000, "a/x.json": b"1",
                       "a-b/x.json": b"2"}.items():  # 'a-b/' sorts before 'a/' as text, after it as paths
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    store = open_store((tmp_path / "store").as_uri())
    manifest = Manifest.for_directory(src, model="m", source_repo="o/m", source_sha="a" * 40, recipe="r",
                                      serving_runtime="vllm", quantization_format="none",
                                      min_compute_capability=0.0, max_model_len=16)
    store.publish(src, manifest.prefix, manifest, signer=key)

    fetched = store.fetch(manifest.prefix, tmp_path / "model")  # what a pod's /models holds ...
    manifest_bytes = store._get_bytes(f"{manifest.prefix}/manifest.json")
    (fetched / "manifest.json").write_bytes(manifest_bytes)  # ... plus the manifest and its signature
    signature = fetched / signature_name(manifest_bytes)
    signature.parent.mkdir()
    signature.write_bytes(store._get_bytes(f"{manifest.prefix}/{signature_name(manifest_bytes)}"))
    public = tmp_path / "key.pub"
    public.write_text(key.public.pem)
    _verify(fetched, signature, public)

    other = tmp_path / "other.pub"
    other.write_text(SigningKey.generate().public.pem)
    with pytest.raises(ValueError, match="Key mismatch"):
        _verify(fetched, signature, other)
    (fetched / "a-b" / "x.json").write_bytes(b"3")
    with pytest.raises(ValueError, match=r"Hash mismatch for .{1,4}a-b/x\.json"):
        _verify(fetched, signature, public)
    (fetched / "a-b" / "x.json").write_bytes(b"2")
    (fetched / "manifest.json").write_bytes(manifest_bytes.replace(b'"o/m"', b'"o/x"'))
    with pytest.raises(ValueError, match=r"Hash mismatch for .{1,4}manifest\.json"):
        _verify(fetched, signature, public)
