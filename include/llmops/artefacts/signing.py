"""Signed lineage: a published manifest signed with a private key, verified against configured public keys.

The format is the OpenSSF model-signing one (`model-signing` 1.1 on PyPI, key-based "elliptic key" mode): a
Sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`) holding a DSSE envelope whose payload is an
in-toto Statement v1 with predicate type `https://model_signing/signature/v1.0`. Its resources are every file
of the version (path, sha256) plus `manifest.json` itself (the sha256 of the published manifest's bytes), so the
signature binds the manifest (source repo and commit, recipe, tool versions, the Airflow run) and, through it and
directly, every file. A directory holding the fetched files and `manifest.json` verifies with model-signing's
own verifier (`model_signing verify key --signature SIG --public_key KEY.pub DIR`; tests prove it).

Why this module writes the format with `cryptography` instead of calling model-signing: its public API only
signs and verifies a directory on local disk, hashing every byte again. Pre-flight reads no bytes from the
object store (the files' sha256 are in the manifest, checked against server-kept checksums), publish has hashed
the checkpoint already, and what must be signed is the *published* manifest, which is not a file of the
checkpoint. Model-signing 1.1.1 also pulls sigstore, tuf, securesystemslib and rfc3161-client for keyless
flows that need a network, and fails to import in a clean environment (it imports pyOpenSSL without declaring
it). ECDSA keys on NIST P-256/P-384/P-521, as model-signing's key mode accepts; the key id is its
`publicKey.hint`: the sha256 of the public key's PEM (SubjectPublicKeyInfo).

Where signatures live: `<version>/signatures/<sha256 of manifest.json>.sig`, written before the manifest with the
store's create-if-absent. Naming it by the manifest's digest is what keeps a publish racing its twin safe: each
twin signs its own manifest bytes under its own name, one manifest wins, the loser removes its signature, and
the winner's sweep removes any left by a crashed attempt. A reader finds the signature by hashing the manifest
it read, so a manifest changed after signing finds none of its own (and is told which signed one it differs
from).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from llmops.artefacts.manifest import MANIFEST_NAME, Manifest
from llmops.errors import InvalidValue
from llmops.settings import SIGNING_KEY_ENV, get_settings

SIGNATURES_DIR = "signatures"
_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
_HASHES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384, "secp521r1": hashes.SHA512}
_KEY_HELP = ("an ECDSA key on NIST P-256 (or P-384, P-521) in PEM, e.g. `python -m llmops keygen DIR`, or "
             "`openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`")


def manifest_digest(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()


def signature_name(manifest_bytes_or_digest: bytes | str) -> str:
    """Where a manifest's signature lives, relative to the version prefix."""
    digest = (manifest_bytes_or_digest if isinstance(manifest_bytes_or_digest, str)
              else manifest_digest(manifest_bytes_or_digest))
    return f"{SIGNATURES_DIR}/{digest}.sig"


def _pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def _spki_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_curve(key: Any, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) or key.curve.name not in _HASHES:
        kind = getattr(getattr(key, "curve", None), "name", None) or type(key).__name__.lstrip("_")
        raise InvalidValue(f"{what} is a {kind} key, which model-signing's key format does not accept",
                           fix=f"use {_KEY_HELP}")


@dataclass(frozen=True)
class PublicKey:
    """A trusted public key and where it was configured (for messages)."""

    key: ec.EllipticCurvePublicKey
    source: str

    @property
    def key_id(self) -> str:
        return hashlib.sha256(_spki_pem(self.key)).hexdigest()

    @property
    def pem(self) -> str:
        return _spki_pem(self.key).decode()

    @classmethod
    def from_pem(cls, data: str | bytes, source: str) -> PublicKey:
        raw = data.encode() if isinstance(data, str) else data
        try:
            key = serialization.load_pem_public_key(raw)
        except ValueError:
            raise InvalidValue(f"{source} is not a PEM public key", fix=f"give the public half of {_KEY_HELP} "
                               "(-----BEGIN PUBLIC KEY-----)") from None
        _check_curve(key, source)
        return cls(key, source)

    def verify(self, signature: bytes, payload: bytes) -> bool:
        try:
            self.key.verify(signature, _pae(payload), ec.ECDSA(_HASHES[self.key.curve.name]()))
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """The private key publish signs with (from the `llmops_signing` Connection; never logged or repr'd)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey):
        self._key = key
        self.public = PublicKey(key.public_key(), "the signing key")

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id})"

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @classmethod
    def from_pem(cls, data: str | bytes, source: str = "the signing key") -> SigningKey:
        raw = data.encode() if isinstance(data, str) else data
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError):  # the key's bytes are never part of the message
            raise InvalidValue(f"{source} is not an unencrypted PEM private key", fix=f"store {_KEY_HELP} "
                               "(unencrypted PKCS#8, -----BEGIN PRIVATE KEY-----) as the password of Connection "
                               "llmops_signing") from None
        _check_curve(key, source)
        return cls(key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def private_pem(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def sign(self, manifest_bytes: bytes, manifest: Manifest) -> bytes:
        """The signature (a Sigstore bundle, JSON) of the published manifest `manifest_bytes` (= `manifest`)."""
        payload = json.dumps(statement(manifest_bytes, manifest), indent=2, sort_keys=True).encode()
        signature = self._key.sign(_pae(payload), ec.ECDSA(_HASHES[self._key.curve.name]()))
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"publicKey": {"hint": self.key_id}, "tlogEntries": []},
            "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                             "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]},
        }
        return (json.dumps(bundle, indent=2) + "\n").encode()


def _resources(manifest_bytes: bytes, manifest: Manifest) -> list[dict[str, str]]:
    entries = [(entry.path, entry.sha256) for entry in manifest.files] + [(MANIFEST_NAME, manifest_digest(manifest_bytes))]
    # model-signing orders resources as paths (part by part), and hashes their digests in that order
    return [{"name": path, "algorithm": "sha256", "digest": digest}
            for path, digest in sorted(entries, key=lambda item: item[0].split("/"))]


def _root_digest(resources: list[dict[str, str]]) -> str:
    return hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()


def statement(manifest_bytes: bytes, manifest: Manifest) -> dict[str, Any]:
    """The in-toto statement model-signing v1.0 signs, over the version's files and its manifest. The
    `llmops` part of the predicate (ignored by model-signing, as v1.0 says of unknown fields) names the
    manifest and the source for a person reading the signature."""
    resources = _resources(manifest_bytes, manifest)
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": manifest.prefix, "digest": {"sha256": _root_digest(resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": [SIGNATURES_DIR]},
            "resources": resources,
            "llmops": {"manifest": MANIFEST_NAME, "manifest_sha256": manifest_digest(manifest_bytes),
                       "model": manifest.model, "source_repo": manifest.source_repo,
                       "source_sha": manifest.source_sha, "recipe": manifest.recipe},
        },
    }


Status = Literal["verified", "unsigned", "unknown key", "invalid", "manifest changed", "no trusted keys"]


@dataclass(frozen=True)
class SignatureCheck:
    """What signature verification of one published manifest found.

    `status`: verified; unsigned (no signature for these manifest bytes, nor any other); unknown key (signed by
    a key none of `trusted` is); invalid (the signature or its payload does not verify); manifest changed (the
    manifest's bytes, or the files it lists, are not what was signed: `changed` names them); no trusted keys
    (signed, but no public key is configured to check it with)."""

    uri: str
    manifest_sha256: str
    status: Status
    detail: str
    signature_uri: str | None = None
    key_id: str | None = None
    key_source: str | None = None
    files: int = 0
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    def problem(self, *, require_signature: bool) -> str | None:
        """Why a deployment must refuse this version, or None. A signature that does not verify is refused
        whatever `require_signature` says (it is evidence of a change); an unsigned version, or one no key is
        configured for, only when a signature is required."""
        if self.ok:
            return None
        if self.status in ("unsigned", "no trusted keys") and not require_signature:
            return None
        return self.detail

    def summary(self) -> str:
        if self.ok:
            return (f"signature verifies (key {self.key_id[:16]} from {self.key_source}; manifest sha256 "
                    f"{self.manifest_sha256[:16]}, {self.files} files)")
        return f"signature {self.status}: {self.detail}"


def _parse_bundle(data: bytes) -> tuple[str | None, bytes, bytes]:
    """(key hint, payload, signature) of a bundle; ValueError when it is not one."""
    bundle = json.loads(data)
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise ValueError(f"mediaType {bundle.get('mediaType')!r}, expected {BUNDLE_MEDIA_TYPE}")
    envelope = bundle["dsseEnvelope"]
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise ValueError(f"payloadType {envelope.get('payloadType')!r}, expected {PAYLOAD_TYPE}")
    if len(envelope["signatures"]) != 1:
        raise ValueError(f"{len(envelope['signatures'])} signatures in the envelope, expected 1")
    hint = (bundle.get("verificationMaterial", {}).get("publicKey") or {}).get("hint")
    return hint, base64.b64decode(envelope["payload"], validate=True), \
        base64.b64decode(envelope["signatures"][0]["sig"], validate=True)


def _signed_resources(payload: bytes) -> dict[str, str]:
    """{name: sha256} of a verified payload; ValueError when the statement is not model-signing v1.0's."""
    statement_ = json.loads(payload)
    if statement_.get("_type") != STATEMENT_TYPE or statement_.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"statement {statement_.get('_type')!r} / {statement_.get('predicateType')!r}")
    resources = statement_["predicate"]["resources"]
    if any(r.get("algorithm") != "sha256" for r in resources):
        raise ValueError("a resource digest is not sha256")
    subject = statement_["subject"]
    if len(subject) != 1 or subject[0]["digest"]["sha256"] != _root_digest(resources):
        raise ValueError("the subject digest does not cover the listed resources")
    return {r["name"]: r["digest"] for r in resources}


def _differences(signed: dict[str, str], manifest_bytes: bytes, manifest: Manifest) -> list[str]:
    now = {r["name"]: r["digest"] for r in _resources(manifest_bytes, manifest)}
    out = []
    for name in sorted(set(signed) | set(now), key=lambda n: n.split("/")):
        if name not in now:
            out.append(f"{name} (signed, no longer listed)")
        elif name not in signed:
            out.append(f"{name} (listed, never signed)")
        elif signed[name] != now[name]:
            out.append(f"{name} (signed sha256 {signed[name][:16]}, now {now[name][:16]})")
    return out


def _open(signature: bytes, trusted: list[PublicKey]) -> tuple[str, Any]:
    """('ok', (key, resources)) or (status, detail) for one signature against the trusted keys."""
    try:
        hint, payload, sig = _parse_bundle(signature)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return "invalid", f"the signature file is not a model-signing bundle ({exc})"
    if not trusted:
        return "no trusted keys", hint
    candidates = [key for key in trusted if key.key_id == hint] if hint else trusted
    if not candidates:
        return "unknown key", hint
    key = next((key for key in candidates if key.verify(sig, payload)), None)
    if key is None:
        return "invalid", f"the signature does not verify with key {candidates[0].key_id[:16]} " \
                          f"({candidates[0].source}): the signature file or its payload was changed"
    try:
        return "ok", (key, _signed_resources(payload))
    except (ValueError, KeyError, TypeError) as exc:
        return "invalid", f"the signed statement is not model-signing v1.0's ({exc})"


def verify_manifest_signature(manifest_bytes: bytes, manifest: Manifest, signature: bytes | None,
                              trusted: Iterable[PublicKey], *, uri: str, signature_uri: str | None = None,
                              other_signatures: dict[str, bytes] | None = None) -> SignatureCheck:
    """Check `signature` (the one stored for these manifest bytes, or None) against `trusted` keys.

    `other_signatures` ({uri: bundle} of signatures stored for *other* manifest bytes of this version) let a
    manifest changed after signing be told apart from one never signed, and name what changed."""
    trusted = list(trusted)
    digest = manifest_digest(manifest_bytes)
    ids = ", ".join(f"{k.key_id[:16]} ({k.source})" for k in trusted) or "none"
    base = dict(uri=uri, manifest_sha256=digest, signature_uri=signature_uri, files=len(manifest.files))
    if signature is None:
        for other_uri, other in (other_signatures or {}).items():
            status, opened = _open(other, trusted)
            if status == "ok":
                key, signed = opened
                changed = _differences(signed, manifest_bytes, manifest)
                return SignatureCheck(**{**base, "signature_uri": other_uri}, status="manifest changed", changed=changed,
                                      key_id=key.key_id, key_source=key.source, detail=(
                    f"{uri} (sha256 {digest[:16]}) is not the manifest key {key.key_id[:16]} signed ({other_uri}): "
                    f"changed after signing: {'; '.join(changed[:5])}"))
        return SignatureCheck(**base, status="unsigned", detail=(
            f"{uri} has no signature (no {signature_name(digest)} beside it): published without a signing key, "
            "before signing existed, or its manifest.json was changed and its signature removed"))
    status, opened = _open(signature, trusted)
    if status == "no trusted keys":
        return SignatureCheck(**base, status=status, key_id=opened, detail=(
            f"{uri} is signed (key {str(opened)[:16]}) but no public key is configured to verify it"))
    if status == "unknown key":
        return SignatureCheck(**base, status=status, key_id=opened, detail=(
            f"{uri} is signed by key {opened[:16]}, which is none of the trusted keys ({ids})"))
    if status != "ok":
        return SignatureCheck(**base, status="invalid", detail=f"{signature_uri or uri}: {opened}")
    key, signed = opened
    changed = _differences(signed, manifest_bytes, manifest)
    if changed:
        return SignatureCheck(**base, status="manifest changed", key_id=key.key_id, key_source=key.source,
                              changed=changed, detail=f"{uri} does not list what key {key.key_id[:16]} signed: "
                              f"{'; '.join(changed[:5])}")
    return SignatureCheck(**base, status="verified", key_id=key.key_id, key_source=key.source,
                          detail=f"signed by key {key.key_id[:16]} ({key.source})")


def load_public_keys(entries: Iterable[str], base_dir: Path | None = None, what: str = "public key") -> list[PublicKey]:
    """Public keys from inline PEM or file paths (`~` expanded; relative to `base_dir`), e.g. `verify
    --public-key`. InvalidValue naming the entry when one cannot be read."""
    keys = []
    for index, entry in enumerate(entries):
        if entry.lstrip().startswith("-----BEGIN"):
            keys.append(PublicKey.from_pem(entry, f"{what} #{index + 1} (inline PEM)"))
            continue
        path = Path(entry).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidValue(f"{what} file {path} cannot be read ({exc.strerror})",
                               fix="give the path of a PEM public key file, or the PEM itself") from None
        keys.append(PublicKey.from_pem(data, str(path)))
    return keys


def signing_key_from_env() -> SigningKey | None:
    """The publish step's signing key (SIGNING_KEY_ENV, through settings), or None when none is configured."""
    pem = get_settings().credentials.signing_key
    return SigningKey.from_pem(pem, f"{SIGNING_KEY_ENV} (Connection llmops_signing)") if pem.strip() else None


def public_keys_from_text(text: str, source: str) -> list[PublicKey]:
    """Every PEM public key in `text` (settings' TRUSTED_KEYS_ENV, or one registry entry), numbered for messages."""
    return [PublicKey.from_pem(block, f"{source} #{i + 1}") for i, block in enumerate(_PEM_BLOCK.findall(text))]


def generate_key_pair(directory: Path, name: str = "llmops-signing") -> tuple[Path, Path, bool]:
    """`<name>.pem` (private, mode 0600) and `<name>.pub` under `directory`, created once: a second call (or a
    twin at the same moment) keeps the key that is there. Returns (private, public, created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    created = False
    if not private.exists():
        staged = directory / f".{name}.{uuid.uuid4().hex[:12]}.incomplete"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(SigningKey.generate().private_pem())
        try:
            os.link(staged, private)  # create-if-absent: a twin's key, if first, stands
            created = True
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    key = SigningKey.from_pem(private.read_bytes(), str(private))
    staged = directory / f".{name}.{uuid.uuid4().hex[:12]}.pub.incomplete"
    staged.write_text(key.public.pem)
    staged.replace(public)  # derived from the private key that stands: twins write the same bytes
    return private, public, created
