"""Resumable, parallel, verified multipart upload shared by the S3 and OSS backends.

A file at or above `multipart_threshold` is cut into fixed parts (`part_size`, grown only past 9000
parts). `threads` workers each read one part into memory, hash it and send it, so memory is about
threads x part_size whatever the file size. Each part carries a checksum the server checks against
the bytes it received (S3: CRC32, which botocore would compute anyway; OSS: CRC64 via oss2), so the
hot path costs no extra hashing. The state of an interrupted upload lives on the server (the open
multipart upload and its parts), so a retry from any machine finds it: listed parts whose size and
MD5 match the local bytes are kept, the rest are sent. The finished object is checked (S3: the
multipart ETag from the parts' MD5s; OSS: CRC64 combined from the parts) before it counts, and the
checksum the server keeps for it (S3: CRC32, composite for multipart; OSS: CRC64) is computed from the
local parts, returned for the manifest and compared with what the server reports.

Keys are content-addressed (see store.py), so two publishers writing one key send the same bytes; if
a twin completes the same multipart upload first, ours ends in an error and the object the twin made
is accepted only when it holds our bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from llmops.artefacts.errors import ArtefactIntegrityError
from llmops.artefacts.store import ArtefactStore, ProgressCallback, StoredObject

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_PARTS = 9000  # S3 and OSS allow 10000


@dataclass(frozen=True)
class RemoteObject:
    size: int
    sha256: str | None  # recorded in object metadata at upload
    etag: str
    crc64: int | None = None
    checksums: dict[str, str] = field(default_factory=dict)  # server-kept, as recorded in manifests


@dataclass(frozen=True)
class PartDone:
    number: int
    etag: str
    size: int
    checksum: int | None = None  # what the server checked the part against (S3: CRC32, OSS: CRC64)


@dataclass(frozen=True)
class LocalChecksums:
    md5: bytes
    part_md5s: list[bytes]
    crc64: int | None
    checksums: dict[str, str] = field(default_factory=dict)  # what the server must report (server_checksums)


def normalise_etag(etag: str) -> str:
    return etag.strip().strip('"').lower()


def multipart_etag(part_md5s: list[bytes]) -> str:
    return hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest() + f"-{len(part_md5s)}"


class ObjectStore(ArtefactStore):
    # Defaults match boto3's TransferConfig (8 MiB parts, 10 threads): as fast on S3-compatible servers.
    def __init__(self, root_uri: str, key_root: str, *, part_size: int = 8 * MiB, threads: int = 10,
                 multipart_threshold: int = 8 * MiB):
        super().__init__(root_uri)
        self.key_root = key_root.strip("/")
        self.part_size = int(part_size)
        self.threads = int(threads)
        self.multipart_threshold = int(multipart_threshold)

    def _key(self, key: str) -> str:
        return f"{self.key_root}/{key}" if self.key_root else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.key_root) + 1:] if self.key_root else full_key

    # --- backend primitives (full keys) ----------------------------------------------------------

    @abstractmethod
    def _head(self, key: str) -> RemoteObject | None: ...

    @abstractmethod
    def _put_object(self, key: str, data: bytes, metadata: dict[str, str], *, if_absent: bool = False,
                    checksum: int | None = None) -> str | None:
        """Write a whole object (with `checksum`, the server checks the body against it); return its ETag, or
        None when `if_absent` and the key exists (an atomic create-if-absent on the server)."""

    @abstractmethod
    def _find_upload(self, key: str) -> str | None: ...

    @abstractmethod
    def _create_upload(self, key: str, metadata: dict[str, str]) -> str: ...

    @abstractmethod
    def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]]: ...

    @abstractmethod
    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes, checksum: int | None) -> str:
        """Send one part with its checksum; the server (or SDK) must reject bytes that do not match it."""

    @abstractmethod
    def _complete(self, key: str, upload_id: str, parts: list[PartDone]) -> None: ...

    @abstractmethod
    def _abort(self, key: str, upload_id: str) -> None: ...

    @abstractmethod
    def _delete_full(self, keys: list[str]) -> None: ...

    def _part_checksum(self, data: bytes) -> int | None:
        """The checksum sent with a part, checked by the server against the bytes it received."""
        return None

    def _crc64(self, data: bytes) -> int | None:
        """CRC64 for backends that report it per object (OSS); None elsewhere."""
        return None

    @abstractmethod
    def _server_checksums(self, parts: list[tuple[int, int]], multipart: bool) -> dict[str, str]:
        """What the server keeps for an object made of parts [(part checksum, size)], as FileEntry.checksums."""

    def _object_matches(self, remote: RemoteObject, local: LocalChecksums) -> bool:
        """Does the server's object hold the local bytes? S3: compare the ETag."""
        etag = normalise_etag(remote.etag)
        if "-" in etag:
            return etag == multipart_etag(local.part_md5s)
        return etag == local.md5.hex()

    def _completed_matches(self, remote: RemoteObject, parts: list[PartDone]) -> bool:
        """Is the completed object made of exactly the parts sent? S3: the multipart ETag of their MD5s."""
        return normalise_etag(remote.etag) == multipart_etag([bytes.fromhex(normalise_etag(p.etag)) for p in parts])

    # --- the engine ------------------------------------------------------------------------------

    def part_size_for(self, size: int) -> int:
        part = self.part_size
        while size > part * MAX_PARTS:
            part *= 2
        return part

    def _local_checksums(self, path: Path, size: int) -> LocalChecksums:
        part_size = self.part_size_for(size) if size >= self.multipart_threshold else max(size, 1)
        whole = hashlib.md5(usedforsecurity=False)
        part_md5s, crc, parts = [], None, []
        with open(path, "rb") as handle:
            while chunk := handle.read(part_size):
                whole.update(chunk)
                part_md5s.append(hashlib.md5(chunk, usedforsecurity=False).digest())
                parts.append((self._part_checksum(chunk), len(chunk)))
                part_crc = self._crc64(chunk)
                if part_crc is not None:
                    crc = part_crc if crc is None else self._crc_combine(crc, part_crc, len(chunk))
        if crc is None and size == 0:
            crc = self._crc64(b"")
        multipart = size >= self.multipart_threshold
        return LocalChecksums(whole.digest(), part_md5s, crc,
                              self._server_checksums(parts or [(self._part_checksum(b""), 0)], multipart))

    def _crc_combine(self, crc1: int, crc2: int, len2: int) -> int:
        raise NotImplementedError

    def _upload_file(self, key: str, path: Path, size: int, sha256: str,
                     progress: ProgressCallback | None) -> tuple[bool, dict[str, str]]:
        full_key = self._key(key)
        remote = self._head(full_key)
        if remote is not None and self._holds(remote, path, size, sha256):
            self.stats.add(bytes_skipped=size)
            return False, remote.checksums
        metadata = {"sha256": sha256}
        if size < self.multipart_threshold:
            data = Path(path).read_bytes()  # below the threshold: bounded
            if hashlib.sha256(data).hexdigest() != sha256:
                raise ArtefactIntegrityError(
                    f"{path} no longer has the sha256 the manifest records ({sha256}); fix: rebuild the manifest",
                    path=key, expected=sha256, actual=hashlib.sha256(data).hexdigest())
            checksum = self._part_checksum(data)
            etag = self._put_object(full_key, data, metadata, checksum=checksum)
            expected = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if etag is not None and normalise_etag(etag) != expected:
                raise ArtefactIntegrityError(f"{self.uri_for(key, '')}: the server stored ETag {etag} for {path}, "
                                             f"expected MD5 {expected}; fix: retry the publish",
                                             path=key, expected=expected, actual=etag)
            self.stats.add(bytes_uploaded=size, parts_uploaded=1)
            if progress:
                progress(key, size, size)
            return True, self._server_checksums([(checksum, size)], multipart=False)
        try:
            parts = self._multipart(full_key, key, Path(path), size, metadata, progress)
        except Exception:
            # a twin sending the same bytes to this (content-addressed) key may have completed the upload we
            # shared: its object is as good as ours if it holds our bytes
            remote = self._head(full_key)
            if remote is None or not self._holds(remote, path, size, sha256):
                raise
            log.info("%s was completed by another publisher with the same bytes", key)
            return True, remote.checksums
        return True, self._server_checksums([(p.checksum, p.size) for p in parts], multipart=True)

    def _holds(self, remote: RemoteObject, path: Path, size: int, sha256: str) -> bool:
        """Does the server's object hold the local file's bytes (size, recorded sha256, ETag, server checksum)?"""
        if remote.size != size or remote.sha256 != sha256:
            return False
        local = self._local_checksums(path, size)
        return self._object_matches(remote, local) and remote.checksums == local.checksums

    def _multipart(self, full_key: str, key: str, path: Path, size: int, metadata: dict[str, str],
                   progress: ProgressCallback | None) -> list[PartDone]:
        part_size = self.part_size_for(size)
        plan = [(number, offset, min(part_size, size - offset))
                for number, offset in enumerate(range(0, size, part_size), 1)]
        upload_id = self._find_upload(full_key)
        listed: dict[int, tuple[str, int]] = {}
        if upload_id is not None:
            listed = self._list_parts(full_key, upload_id)
            if not self._parts_match(path, plan, listed):
                # an earlier attempt uploaded other bytes (and recorded another sha256): start over
                log.info("open upload of %s holds other bytes; starting a new one", key)
                self._abort(full_key, upload_id)
                upload_id, listed = None, {}
            else:
                log.info("resuming upload of %s: %d of %d parts already on the server", key, len(listed), len(plan))
        if upload_id is None:
            upload_id = self._create_upload(full_key, metadata)
        done_bytes = 0

        fd = os.open(path, os.O_RDONLY)
        try:
            def send(item: tuple[int, int, int]) -> PartDone:
                nonlocal done_bytes
                number, offset, length = item
                data = os.pread(fd, length, offset)
                if len(data) != length:
                    raise ArtefactIntegrityError(f"{path} shrank while it was uploaded; fix: rerun the step that "
                                                 "writes it", path=key)
                checksum = self._part_checksum(data)
                existing = listed.get(number)  # checked against the local bytes by _parts_match
                if existing is not None:
                    self.stats.add(parts_skipped=1, bytes_skipped=length)
                    etag = existing[0]
                else:
                    etag = self._upload_part(full_key, upload_id, number, data, checksum)
                    self.stats.add(parts_uploaded=1, bytes_uploaded=length)
                with self.stats._lock:
                    done_bytes += length
                    done = done_bytes
                if progress:
                    progress(key, done, size)
                return PartDone(number, etag, length, checksum)

            pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="upload")
            try:
                futures = [pool.submit(send, item) for item in plan]
                parts = [future.result() for future in futures]
            finally:  # on an error, stop sending: queued parts are cancelled, running ones finish
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            os.close(fd)

        self._complete(full_key, upload_id, parts)
        remote = self._head(full_key)
        if remote is None or remote.size != size or not self._completed_matches(remote, parts):
            raise ArtefactIntegrityError(
                f"{self.root_uri}/{key}: after completing the multipart upload the server reports {remote}, which "
                f"does not match the {len(parts)} parts sent (size {size}); no manifest was written; fix: retry the "
                "publish", path=key, expected=str(size), actual=str(remote))
        return parts

    @staticmethod
    def _parts_match(path: Path, plan: list[tuple[int, int, int]], listed: dict[int, tuple[str, int]]) -> bool:
        """Do the parts already on the server hold the local bytes at their offsets (size and MD5)?"""
        offsets = {number: (offset, length) for number, offset, length in plan}
        with open(path, "rb") as handle:
            for number, (etag, size) in listed.items():
                if number not in offsets or offsets[number][1] != size:
                    return False
                handle.seek(offsets[number][0])
                if hashlib.md5(handle.read(size), usedforsecurity=False).hexdigest() != normalise_etag(etag):
                    return False
        return True

    # --- ArtefactStore primitives on top of the backend ------------------------------------------

    def _stat(self, key: str, *, checksums: bool = False) -> StoredObject | None:
        remote = self._head(self._key(key))
        return None if remote is None else StoredObject(remote.size, remote.sha256, dict(remote.checksums))

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        return self._put_object(self._key(key), data, {"sha256": hashlib.sha256(data).hexdigest()},
                                if_absent=True) is not None

    def _delete(self, keys: list[str]) -> None:
        if keys:
            self._delete_full([self._key(key) for key in keys])
