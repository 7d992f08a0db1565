"""The embedded default store: a directory tree (`file:///abs/dir`).

Files are copied into a staging folder of their own attempt (`<root>/.staging/<random>/`, outside every
version's folder), hashed while copied, and linked into place with a hard link, which fails if the name
exists: a twin writing the same (content-addressed) key never sees a half-written file, and nobody else's
staging file is touched. The manifest is created the same way, so two writers cannot both publish. The
checksum the "server" keeps is the file's sha256, re-hashed by `verify_stored`.

An attempt holds an exclusive `flock` on its staging folder's `lock` file for as long as its process lives.
A publish that was killed (SIGKILL, a lost pod) therefore leaves its partial copy in `.staging/` only, never
among a version's files, and the next attempt on this store removes every staging folder whose lock nobody
holds. (On a store folder shared by several machines this needs a filesystem with POSIX locks, NFSv4 or
CPFS, like the model cache.)
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from llmops.artefacts.errors import ArtefactIntegrityError
from llmops.artefacts.manifest import check_relative_path
from llmops.artefacts.store import ArtefactStore, ProgressCallback, StoredObject
from llmops.hashing import CHUNK, RunningSha256, sha256_file

log = logging.getLogger(__name__)

#: Where attempts stage their copies, below the store root (same filesystem, so a hard link publishes them).
STAGING = ".staging"


class FileStore(ArtefactStore):
    scheme = "file"

    def __init__(self, root: Path):
        self.root = Path(root)
        self._attempt: Path | None = None
        self._attempt_lock = None
        super().__init__(self.root.as_uri())

    def _path(self, key: str) -> Path:
        return self.root / check_relative_path(key, "store key")

    def _staging(self) -> Path:
        """This attempt's staging folder (created and locked once per store object); removes first the
        folders of attempts that died."""
        if self._attempt is None:
            staging = self.root / STAGING
            staging.mkdir(parents=True, exist_ok=True)
            self._remove_dead_attempts(staging)
            name = uuid.uuid4().hex
            # locked before it gets a name the clean-up looks at, so no twin ever takes it for a dead one
            new = staging / f".new-{name}"
            new.mkdir()
            handle = open(new / "lock", "w")  # noqa: SIM115 - held (and locked) as long as this store lives
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            attempt = new.rename(staging / name)
            self._attempt, self._attempt_lock = attempt, handle
        return self._attempt

    def publish(self, *args, **kwargs) -> str:
        """`ArtefactStore.publish`, then this attempt's staging folder goes (a killed attempt's stays for the
        next one to remove)."""
        try:
            return super().publish(*args, **kwargs)
        finally:
            self._end_attempt()

    def _end_attempt(self) -> None:
        if self._attempt is not None:
            shutil.rmtree(self._attempt, ignore_errors=True)
            self._attempt_lock.close()
            self._attempt = self._attempt_lock = None

    @staticmethod
    def _remove_dead_attempts(staging: Path) -> None:
        for attempt in staging.iterdir():
            if attempt.name.startswith(".new-"):
                continue
            try:
                with open(attempt / "lock") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a live attempt, skip it
                    removed = sum(p.stat().st_size for p in attempt.rglob("*") if p.is_file())
                    shutil.rmtree(attempt, ignore_errors=True)
                    log.info("removed %s left by an attempt that died (%.1f MiB)", attempt, removed / 2**20)
            except (BlockingIOError, NotADirectoryError, FileNotFoundError):
                continue

    def _staged_name(self, target: Path) -> Path:
        return self._staging() / f"{uuid.uuid4().hex[:12]}-{target.name}"

    def _upload_file(self, key: str, path: Path, size: int, sha256: str,
                     progress: ProgressCallback | None) -> tuple[bool, dict[str, str]]:
        target = self._path(key)
        if target.is_file() and target.stat().st_size == size and sha256_file(target)[0] == sha256:
            self.stats.add(bytes_skipped=size)
            return False, {"sha256": sha256}
        partial = self._staged_name(target)
        try:
            copied = RunningSha256()
            with open(path, "rb") as source, open(partial, "xb") as sink:
                while chunk := source.read(CHUNK):
                    sink.write(chunk)
                    copied.update(chunk)
                    if progress:
                        progress(key, copied.size, size)
                sink.flush()
                os.fsync(sink.fileno())
            if copied.size != size or copied.hexdigest() != sha256:
                raise ArtefactIntegrityError(
                    f"{path}: copied {copied.size} bytes with sha256 {copied.hexdigest()}, the manifest records "
                    f"{size} bytes with sha256 {sha256}: the file changed after the manifest was built", fix="rebuild "
                    "the manifest", path=key, expected=sha256, actual=copied.hexdigest())
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(partial, target)
            except FileExistsError:  # a twin linked the same key first: keep its copy if it holds these bytes
                if not (target.stat().st_size == size and sha256_file(target)[0] == sha256):
                    os.replace(partial, target)  # a damaged copy: the key's name says which bytes belong there
        finally:
            partial.unlink(missing_ok=True)
        self.stats.add(bytes_uploaded=size)
        return True, {"sha256": sha256}

    def _stat(self, key: str, *, checksums: bool = False) -> StoredObject | None:
        target = self._path(key)
        if not target.is_file():
            return None
        return StoredObject(target.stat().st_size, None, {"sha256": sha256_file(target)[0]} if checksums else {})

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        staged = self._staged_name(target)
        with open(staged, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(staged, target)
            return True
        except FileExistsError:
            return False
        finally:
            staged.unlink(missing_ok=True)

    def _get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        with open(self._path(key), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def _list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(".tmp-"):  # staging names of earlier releases, never data
                    continue
                yield (Path(dirpath) / name).relative_to(self.root).as_posix()

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            target = self._path(key)
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
