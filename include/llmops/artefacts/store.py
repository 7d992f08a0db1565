"""The artefact store: publish a directory under an immutable prefix, manifest last; read it back.

`open_store(uri)` picks the backend from the URI scheme:

| URI                      | backend                                   |
|--------------------------|-------------------------------------------|
| `file:///abs/dir`        | local filesystem (the embedded default)   |
| `s3://bucket[/root]`     | boto3: AWS S3, OSS's S3 endpoint, MinIO, SeaweedFS |
| `oss://bucket[/root]`    | oss2: Alibaba Cloud OSS, CRC64-checked     |

The rules every backend keeps (tests/integration/artefacts runs one contract suite over all three):
- a version is a prefix with a `manifest.json`; without one it does not exist (`read_manifest` -> None);
- `publish` uploads every file to a content-addressed key below the version (`data/<sha256>/<path>`: a
  key only ever holds one content, so racing publishers never overwrite each other's bytes), verifies
  what the server holds (size, sha256 and the checksum the server keeps), and creates the manifest last
  with the backend's atomic create-if-absent (S3 `If-None-Match: *`, OSS `x-oss-forbid-overwrite`, a
  hard link on the file store): whatever the interleaving, one manifest wins. Publishing the same
  content again (or losing a race to it) returns the existing URI; different content is refused with
  `ImmutableArtefactError`. Nobody deletes anything before a manifest exists; after it exists no other
  manifest can be written, so only then are objects it does not list removed;
- every key comes from a checked relative path: a version, a manifest entry or a fetch target can
  never leave the store root or the fetch destination;
- uploads stream with flat memory, and a retried publish skips files and parts already uploaded and
  verified instead of starting over;
- `verify_stored` (rollout pre-flight) compares each file's size and the server-kept checksum recorded
  in the manifest with what the store reports now, reading no bytes on object stores.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from llmops.artefacts.errors import (
    ArtefactError,
    ArtefactIntegrityError,
    ArtefactNotFoundError,
    ImmutableArtefactError,
    StoreUriError,
)
from llmops.artefacts.manifest import MANIFEST_NAME, FileEntry, Manifest, check_relative_path, stored_key
from llmops.artefacts.signing import (
    SIGNATURES_DIR,
    PublicKey,
    SignatureCheck,
    SigningKey,
    manifest_digest,
    signature_name,
    verify_manifest_signature,
)
from llmops.errors import InvalidValue
from llmops.hashing import RunningSha256, sha256_file

log = logging.getLogger(__name__)

#: progress(path, bytes_done_of_this_file, file_size), called after each part or whole file
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class TransferStats:
    """What this store object has sent and skipped; tests use it to prove a retry resumed."""

    files_uploaded: int = 0
    files_skipped: int = 0
    parts_uploaded: int = 0
    parts_skipped: int = 0
    bytes_uploaded: int = 0
    bytes_skipped: int = 0
    bytes_downloaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


class _ProgressLog:
    """Logs each file's upload every 10% (long uploads show progress), then calls the caller's callback."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback
        self.logged: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, path: str, done: int, size: int) -> None:
        tenth = done * 10 // size if size else 10
        with self.lock:
            if size >= 64 * 2**20 and tenth > self.logged.get(path, 0):
                self.logged[path] = tenth
                log.info("  %s: %d%% (%.0f of %.0f MiB)", path.rsplit("/", 1)[-1], tenth * 10, done / 2**20,
                         size / 2**20)
        if self.callback:
            self.callback(path, done, size)


@dataclass(frozen=True)
class StoredObject:
    """What a store reports about one object: its size, the sha256 recorded with it at upload (object stores'
    metadata; None on the file store) and the checksums the server keeps (see FileEntry.checksums)."""

    size: int
    sha256: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)


#: how each recorded checksum is obtained, for messages that say exactly what was verified
CHECKSUM_SOURCES = {
    "crc32": "CRC32 the S3 server keeps (ChecksumMode=ENABLED; composite of part CRC32s for multipart objects)",
    "crc64ecma": "CRC64-ECMA the OSS server keeps (x-oss-hash-crc64ecma)",
    "sha256": "sha256 re-hashed from the stored file",
}


@dataclass(frozen=True)
class StoredCheck:
    """The result of `verify_stored`: what was compared, and every file that did not match.

    `unverifiable` is set (and nothing else was compared) when the manifest records no server checksums:
    sizes alone cannot catch a same-size change, so such a version is refused rather than half-checked."""

    uri: str
    verified: str
    mismatches: list[str] = field(default_factory=list)
    unverifiable: str | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.unverifiable is None


def check_version_prefix(prefix: str) -> str:
    """A version prefix (or any key below the store root) stripped of outer '/', refused when it could leave
    the root (`models/../../outside/evil`, absolute parts, backslashes)."""
    stripped = prefix.strip("/") if isinstance(prefix, str) else prefix
    try:
        return check_relative_path(stripped, "store path")
    except InvalidValue as exc:
        raise StoreUriError(f"{exc.what}: it would resolve outside the store root", fix="pass a "
                            "version prefix like models/<model>/<sha>/<runtime>-<recipe> (or its manifest URI) "
                            "inside the configured store") from None


class ArtefactStore(ABC):
    """Base class: the publication protocol. Backends supply object primitives on keys below the root."""

    scheme: str = ""

    def __init__(self, root_uri: str):
        self.root_uri = root_uri.rstrip("/")
        self.stats = TransferStats()

    # --- primitives every backend provides (keys are relative to the root) -----------------------

    @abstractmethod
    def _upload_file(self, key: str, path: Path, size: int, sha256: str,
                     progress: ProgressCallback | None) -> tuple[bool, dict[str, str]]:
        """Upload and verify one file; skip it when the server already holds it verified. Returns (sent, the
        checksums the server must now report for it, computed from the local bytes)."""

    @abstractmethod
    def _stat(self, key: str, *, checksums: bool = False) -> StoredObject | None:
        """An object's size, recorded sha256 and server-kept checksums (on the file store only when
        `checksums`: it has to read the bytes); None when absent."""

    @abstractmethod
    def _put_if_absent(self, key: str, data: bytes) -> bool:
        """Write a small object only if the key is free; False when it already existed."""

    @abstractmethod
    def _get_bytes(self, key: str) -> bytes | None:
        """A small object's bytes, None when absent."""

    @abstractmethod
    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        """Stream an object's bytes."""

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix` (which ends with '/')."""

    @abstractmethod
    def _delete(self, keys: list[str]) -> None:
        """Delete objects (missing ones are fine)."""

    # --- the protocol ----------------------------------------------------------------------------

    def uri_for(self, prefix: str, name: str = MANIFEST_NAME) -> str:
        return f"{self.root_uri}/{prefix.strip('/')}/{name}"

    def publish(self, local_dir: Path, prefix: str, manifest: Manifest, *,
                progress: ProgressCallback | None = None, signer: SigningKey | None = None) -> str:
        """Upload `local_dir` under `prefix`, verify, then create manifest.json if absent; return the manifest URI.

        With `signer`, the manifest's signature (`llmops.artefacts.signing`) is created just before it, under a name
        that carries the manifest's sha256. Safe against a twin publishing the same version at the same moment:
        see the module docstring."""
        local_dir = Path(local_dir)
        prefix = check_version_prefix(prefix)
        if prefix != manifest.prefix:
            raise ArtefactError(
                f"prefix {prefix!r} does not match the manifest's (model, source_sha, serving_runtime, recipe) "
                f"-> {manifest.prefix!r}", fix="publish under artefact_prefix(model, sha, runtime, recipe)"
            )
        manifest_key = f"{prefix}/{MANIFEST_NAME}"
        uri = self.uri_for(prefix)
        existing = self.read_manifest(prefix)
        if existing is not None:
            return self._settle_existing(existing, manifest, uri)

        for entry in manifest.files:  # bad input fails before anything is sent
            path = local_dir / entry.path
            if not path.is_file():
                raise ArtefactError(f"{path} is listed in the manifest but missing", fix="publish the directory "
                                    "the manifest was built from (Manifest.for_directory)")
            if path.stat().st_size != entry.size:
                raise ArtefactIntegrityError(
                    f"{path} has {path.stat().st_size} bytes but the manifest records {entry.size}: the file "
                    "changed after the manifest was built", fix="rebuild the manifest with Manifest.for_directory",
                    path=entry.path, expected=str(entry.size), actual=str(path.stat().st_size))

        started = time.monotonic()
        total = manifest.total_size
        log.info("publishing %d files (%.1f MiB) to %s", len(manifest.files), total / 2**20, self.uri_for(prefix, ""))
        report = _ProgressLog(progress)
        entries: list[FileEntry] = []
        try:
            for index, entry in enumerate(manifest.files, 1):
                key = stored_key(entry.sha256, entry.path)
                sent, checksums = self._upload_file(f"{prefix}/{key}", local_dir / entry.path, entry.size,
                                                    entry.sha256, report)
                entries.append(entry.model_copy(update={"stored_as": key, "checksums": checksums}))
                self.stats.add(**({"files_uploaded": 1} if sent else {"files_skipped": 1}))
                log.info("[%d/%d] %s %s (%.1f MiB)", index, len(manifest.files),
                         "uploaded" if sent else "already there", entry.path, entry.size / 2**20)
            final = manifest.model_copy(update={"files": entries, "uri": uri})
            self._verify_uploaded(prefix, final)
        except Exception:
            # A twin may have published meanwhile (and swept our half-sent objects): its manifest decides.
            existing = self.read_manifest(prefix)
            if existing is None:
                raise
            return self._settle_existing(existing, manifest, uri, ours=entries)
        manifest_bytes = final.to_json().encode()
        signature_key = None
        if signer is not None:  # before the manifest: a reader never sees a signed-to-be version unsigned
            signature_key = f"{prefix}/{signature_name(manifest_bytes)}"
            self._put_if_absent(signature_key, signer.sign(manifest_bytes, final))
            log.info("signed %s with key %s (manifest sha256 %s)", uri, signer.key_id, manifest_digest(manifest_bytes))
        if not self._put_if_absent(manifest_key, manifest_bytes):
            # someone published this version between our check and our write: theirs stands, our signature goes
            if signature_key and self._get_bytes(manifest_key) != manifest_bytes:
                self._delete([signature_key])
            return self._settle_existing(self.read_manifest(prefix), manifest, uri, ours=entries)
        self._sweep(prefix, final, signature_key)
        elapsed = time.monotonic() - started
        log.info("published %s in %.1f s (%.1f MiB/s)", uri, elapsed, total / 2**20 / max(elapsed, 1e-6))
        return uri

    def _settle_existing(self, existing: Manifest | None, manifest: Manifest, uri: str,
                         ours: list[FileEntry] = ()) -> str:
        """A manifest already exists: ours lost (or came late). Remove what we sent that it does not list (no
        manifest can list it any more), then report "already published" or refuse."""
        if existing is not None and ours:
            listed = {entry.key for entry in existing.files}
            prefix = existing.prefix
            self._delete([f"{prefix}/{entry.key}" for entry in ours if entry.key not in listed])
        if existing is not None and existing.same_content(manifest):
            log.info("%s is already published with the same content; nothing to do", uri)
            return uri
        raise ImmutableArtefactError(
            f"{uri} is already published with different content (published files or fields differ); versions are "
            "immutable", fix="keep the published one, or build from a new source sha or under another recipe"
        )

    def _sweep(self, prefix: str, manifest: Manifest, signature_key: str | None = None) -> None:
        """After OUR manifest exists (so no other can ever be written here): remove data objects it does not
        list and signatures of other manifests, left by crashed or losing attempts. Objects beside the version
        (reports) are not touched."""
        wanted = {f"{prefix}/{entry.key}" for entry in manifest.files}
        strays = [key for key in self._list(f"{prefix}/data/") if key not in wanted]
        strays += [key for key in self._list(f"{prefix}/{SIGNATURES_DIR}/") if key != signature_key]
        if strays:
            log.info("removing %d objects under %s left by other attempts", len(strays), prefix)
            self._delete(strays)

    @staticmethod
    def _compare(entry: FileEntry, stat: StoredObject | None, *, require_checksums: bool) -> str | None:
        """Why the stored object does not match `entry`, or None when it does."""
        if stat is None:
            return "missing"
        if stat.size != entry.size:
            return f"{stat.size} bytes, the manifest records {entry.size}"
        if stat.sha256 not in (None, entry.sha256):
            return f"recorded sha256 {stat.sha256}, the manifest records {entry.sha256}"
        for name, recorded in sorted(entry.checksums.items()):
            reported = stat.checksums.get(name)
            if reported is None and not require_checksums:
                continue
            if reported != recorded:
                return (f"the store reports {name} {reported or 'none'}, the manifest records {recorded}" if reported
                        else f"the store reports no {name} (the manifest records {recorded})")
        return None

    def verify_stored(self, manifest: Manifest) -> StoredCheck:
        """Rollout pre-flight: each file's size and the server-kept checksum recorded in the manifest at publish,
        compared with what the store reports now. Reads no bytes on object stores (the file store re-hashes)."""
        prefix = check_version_prefix(manifest.prefix)
        uri = manifest.uri or self.uri_for(prefix)
        missing = [entry.path for entry in manifest.files if not entry.checksums]
        if missing:
            return StoredCheck(uri, "nothing (refused)", unverifiable=(
                f"{uri} records no server-kept checksum for {len(missing)} file(s) ({', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}): it was published before checksums were recorded, and sizes "
                "alone cannot catch a same-size change"))
        mismatches = []
        for entry in manifest.files:
            why = self._compare(entry, self._stat(f"{prefix}/{entry.key}", checksums=True), require_checksums=True)
            if why:
                mismatches.append(f"{entry.path}: {why}")
        kinds = sorted({name for entry in manifest.files for name in entry.checksums})
        verified = (f"size and {' and '.join(CHECKSUM_SOURCES.get(k, k) for k in kinds)} of all "
                    f"{len(manifest.files)} files ({manifest.total_size / 2**20:.1f} MiB) against the manifest")
        log.info("verified %s: %s; %d mismatch(es)", uri, verified, len(mismatches))
        return StoredCheck(uri, verified, mismatches)

    def put_beside(self, prefix: str, name: str, data: bytes) -> str:
        """Write a small write-once object beside the version at `prefix` (a rollout report, say); it is not
        part of the version's manifest and never fetched with it. Returns its URI."""
        prefix = check_version_prefix(prefix)
        name = check_version_prefix(name)
        self._put_if_absent(f"{prefix}/{name}", data)
        return self.uri_for(prefix, name)

    def _verify_uploaded(self, prefix: str, manifest: Manifest) -> None:
        for entry in manifest.files:
            why = self._compare(entry, self._stat(f"{prefix}/{entry.key}"), require_checksums=self.scheme != "file")
            if why:
                raise ArtefactIntegrityError(
                    f"{self.uri_for(prefix, entry.key)} does not hold what was uploaded for {entry.path} ({why}); no "
                    "manifest was written", fix="retry the publish", path=entry.path, expected=entry.sha256, actual=why)

    def verify_signature(self, manifest: Manifest, trusted: list[PublicKey]) -> SignatureCheck:
        """The signature of the published manifest (found by the sha256 of the bytes stored now) against the
        `trusted` public keys. The bytes are read again and must be the manifest the caller holds."""
        prefix = check_version_prefix(manifest.prefix)
        uri = self.uri_for(prefix)
        data = self._get_bytes(f"{prefix}/{MANIFEST_NAME}")
        if data is None:
            raise ArtefactNotFoundError(f"{uri} does not exist (no manifest)", fix="pick a published version")
        stored = self._parse_manifest(prefix, data)
        if stored.model_dump(exclude={"uri"}) != manifest.model_dump(exclude={"uri"}):
            raise ArtefactIntegrityError(f"{uri} changed while it was being verified (its bytes are not the manifest "
                                         "read a moment ago)", fix="verify again; if it changes again, have an "
                                         "operator check who writes to the store")
        name = signature_name(data)
        signature = self._get_bytes(f"{prefix}/{name}")
        others = {}
        if signature is None:  # tell a changed manifest from an unsigned one
            others = {self.uri_for(prefix, key[len(prefix) + 1:]): self._get_bytes(key) or b""
                      for key in self._list(f"{prefix}/{SIGNATURES_DIR}/")}
        check = verify_manifest_signature(data, stored, signature, trusted, uri=uri,
                                          signature_uri=self.uri_for(prefix, name) if signature else None,
                                          other_signatures=others)
        log.info("signature of %s: %s", uri, check.summary())
        return check

    def read_manifest(self, prefix: str) -> Manifest | None:
        """The manifest of the version at `prefix`, or None: a version without a manifest does not exist."""
        prefix = check_version_prefix(prefix)
        data = self._get_bytes(f"{prefix}/{MANIFEST_NAME}")
        if data is None:
            return None
        return self._parse_manifest(prefix, data)

    def _parse_manifest(self, prefix: str, data: bytes) -> Manifest:
        try:
            manifest = Manifest.model_validate(json.loads(data))
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                                for e in exc.errors()[:3])
            raise ArtefactError(f"{self.uri_for(prefix)} is not a valid manifest ({details}); nothing was read "
                                "from it", fix="have an operator remove this manifest.json and republish the "
                                "version (model_refresh)") from None
        except ValueError as exc:
            raise ArtefactError(f"{self.uri_for(prefix)} is not valid JSON ({exc})", fix="have an operator remove "
                                "this manifest.json and republish the version (model_refresh)") from None
        return manifest.model_copy(update={"uri": self.uri_for(prefix)})

    def exists(self, prefix: str) -> bool:
        return self._stat(f"{check_version_prefix(prefix)}/{MANIFEST_NAME}") is not None

    def fetch(self, prefix: str, dest: Path, verify: bool = True, manifest: Manifest | None = None) -> Path:
        """Download a version into `dest`, each file checked against the manifest's size and sha256 (`manifest`:
        one the caller read and checked already, e.g. its signature, so a manifest swapped in between is not used).

        Every target must resolve inside `dest` (symlinks included); each file is written under a name of its
        own (`.<name>.<random>.incomplete`) and renamed into place, so two fetchers of one cache are safe."""
        prefix = check_version_prefix(prefix)
        if manifest is not None and check_version_prefix(manifest.prefix) != prefix:
            raise ArtefactError(f"the manifest given is of {manifest.prefix}, not {prefix}", fix="pass the manifest "
                                "read from this prefix")
        manifest = manifest or self.read_manifest(prefix)
        if manifest is None:
            raise ArtefactNotFoundError(f"{self.uri_for(prefix)} does not exist (no manifest: not a published "
                                        "version)", fix="check the prefix or publish it first")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        root = os.path.realpath(dest)
        for entry in manifest.files:  # every target checked before anything is written
            resolved = os.path.realpath(dest / entry.path)
            if os.path.commonpath([root, resolved]) != root or resolved == root:
                raise ArtefactError(
                    f"{manifest.uri}: file {entry.path!r} would be written to {resolved}, outside the destination "
                    f"{root}; nothing was written", fix=f"remove the symlink that leads out of {dest} or fetch into "
                    "an empty directory")
        for entry in manifest.files:
            target = dest / entry.path
            if target.is_file() and target.stat().st_size == entry.size and (
                    not verify or sha256_file(target)[0] == entry.sha256):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.incomplete")
            received = RunningSha256()
            try:
                with open(partial, "xb") as handle:
                    for chunk in self._iter_chunks(f"{prefix}/{entry.key}"):
                        handle.write(chunk)
                        received.update(chunk)
            except ArtefactIntegrityError as exc:  # the transport's own check (OSS CRC64) failed
                partial.unlink(missing_ok=True)
                raise ArtefactIntegrityError(f"{exc}; the stored copy of {entry.path} is damaged", path=entry.path,
                                             expected=exc.expected, actual=exc.actual) from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            size = received.size
            self.stats.add(bytes_downloaded=size)
            actual = received.hexdigest() if verify else entry.sha256
            if size != entry.size or actual != entry.sha256:
                partial.unlink(missing_ok=True)
                raise ArtefactIntegrityError(
                    f"{self.uri_for(prefix, entry.path)}: downloaded {size} bytes with sha256 {actual}, the manifest "
                    f"records {entry.size} bytes with sha256 {entry.sha256}; the stored copy is damaged",
                    fix="republish the version from its source",
                    path=entry.path, expected=entry.sha256, actual=actual)
            partial.replace(target)
        return dest

    def list_versions(self, model: str) -> list[Manifest]:
        """Every published version of `model`, oldest first (prefixes without a manifest are skipped)."""
        manifests = []
        base = check_version_prefix(f"models/{model}")
        for key in self._list(f"{base}/"):
            parts = key.split("/")
            if len(parts) == 5 and parts[-1] == MANIFEST_NAME:
                manifest = self.read_manifest("/".join(parts[:-1]))
                if manifest is not None:
                    manifests.append(manifest)
        return sorted(manifests, key=lambda m: (m.created_at, m.uri or ""))

    def resolve(self, uri_or_latest: str, model: str, *, runtime: str | None = None,
                recipe: str | None = None) -> Manifest:
        """'latest' (newest version of `model`, optionally of one runtime/recipe), a manifest or prefix URI,
        or a prefix relative to the store root -> its Manifest; ArtefactNotFoundError when there is none."""
        if uri_or_latest == "latest":
            versions = [m for m in self.list_versions(model)
                        if (runtime is None or m.serving_runtime == runtime) and (recipe is None or m.recipe == recipe)]
            if not versions:
                wanted = ", ".join(f"{k}={v}" for k, v in (("runtime", runtime), ("recipe", recipe)) if v)
                raise ArtefactNotFoundError(
                    f"no published version of model {model!r}{' with ' + wanted if wanted else ''} in "
                    f"{self.root_uri}", fix="run model_refresh for it first, or pick an existing artefact URI")
            return versions[-1]
        prefix = uri_or_latest
        if "://" in uri_or_latest:
            if not uri_or_latest.startswith(self.root_uri + "/"):
                raise StoreUriError(f"{uri_or_latest} is not inside this store ({self.root_uri})", fix="pass a URI "
                                    "under the configured store or open_store() its own root")
            prefix = uri_or_latest[len(self.root_uri) + 1:]
        prefix = check_version_prefix(check_version_prefix(prefix).removesuffix(MANIFEST_NAME))
        manifest = self.read_manifest(prefix)
        if manifest is None:
            raise ArtefactNotFoundError(f"{self.uri_for(prefix)} does not exist (no manifest)", fix="pick a "
                                        f"published version (list_versions({model!r})) or 'latest'")
        if manifest.model != model:
            raise ArtefactError(f"{manifest.uri} is a version of model {manifest.model!r}, not {model!r}",
                                fix="pick an artefact of the model being rolled out")
        return manifest
