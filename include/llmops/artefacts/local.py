"""The embedded default store: a directory tree (`file:///abs/dir`).

Files are written as `<name>.incomplete`, hashed while copied and renamed into place; the manifest is
created with a hard link, which fails if the name exists, so two writers cannot both publish.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from llmops.artefacts.errors import ArtefactIntegrityError
from llmops.artefacts.hashing import CHUNK, sha256_file
from llmops.artefacts.store import ArtefactStore, Progress


class FileStore(ArtefactStore):
    scheme = "file"

    def __init__(self, root: Path):
        self.root = Path(root)
        super().__init__(self.root.as_uri())

    def _path(self, key: str) -> Path:
        return self.root / key

    def _upload_file(self, key: str, path: Path, size: int, sha256: str, progress: Progress | None) -> bool:
        target = self._path(key)
        if target.is_file() and target.stat().st_size == size and sha256_file(target)[0] == sha256:
            self.stats.add(bytes_skipped=size)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".incomplete")
        digest, done = hashlib.sha256(), 0
        try:
            with open(path, "rb") as source, open(partial, "wb") as sink:
                while chunk := source.read(CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(key, done, size)
                sink.flush()
                os.fsync(sink.fileno())
        except BaseException:  # a full disk or a kill: no half-written file stays behind
            partial.unlink(missing_ok=True)
            raise
        if done != size or digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            raise ArtefactIntegrityError(
                f"{path}: copied {done} bytes with sha256 {digest.hexdigest()}, the manifest records {size} bytes "
                f"with sha256 {sha256}: the file changed after the manifest was built; fix: rebuild the manifest",
                path=key, expected=sha256, actual=digest.hexdigest())
        partial.replace(target)
        self.stats.add(bytes_uploaded=size)
        return True

    def _stat(self, key: str) -> tuple[int, str | None] | None:
        target = self._path(key)
        return (target.stat().st_size, None) if target.is_file() else None

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tmp-", delete=False) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(handle.name, target)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(handle.name)

    def _get_bytes(self, key: str) -> bytes | None:
        target = self._path(key)
        return target.read_bytes() if target.is_file() else None

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        with open(self._path(key), "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def _list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                yield (Path(dirpath) / name).relative_to(self.root).as_posix()

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            target = self._path(key)
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
