"""Where a knowledge base's documents come from: a local directory, an S3 prefix or an OSS prefix.

A source lists `SourceDocument`s (id = path relative to the root, with forward slashes) filtered by
the registry's include globs, and opens each as a binary stream. Nothing is read whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO

from llmops.artefacts.clients import ENDPOINT_KEY, oss_bucket, s3_client
from llmops.artefacts.credentials import credentials_from_env
from llmops.kb.errors import SourceNotFoundError
from llmops.settings import PROJECT_ROOT


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    """Path relative to the source root, '/'-separated: stable across machines, used in primary keys."""
    size: int
    opener: Callable[[], IO[bytes]] = field(repr=False, compare=False)

    @property
    def suffix(self) -> str:
        name = self.doc_id.rsplit("/", 1)[-1]
        return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""

    def open(self) -> IO[bytes]:
        return self.opener()


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a '/'-separated glob (`**` = any number of directories) to a regex on relative paths."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def included(doc_id: str, patterns: list[str]) -> bool:
    return any(glob_to_regex(p).match(doc_id) for p in patterns)


def _open_no_follow(path: Path) -> IO[bytes]:
    """Open a regular file, refusing a symlink swapped in after listing (O_NOFOLLOW)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")


class LocalSource:
    """A directory. Symbolic links (files or directories) and anything resolving outside the root are
    skipped and listed in `excluded`: a link must not pull files from elsewhere into a searchable index."""

    def __init__(self, root: str | Path, include: list[str]):
        root = Path(root)
        self.root = root if root.is_absolute() else PROJECT_ROOT / root
        self.include = include
        self.excluded: list[dict] = []

    def describe(self) -> str:
        return str(self.root)

    def list(self) -> Iterator[SourceDocument]:
        if not self.root.is_dir():
            raise SourceNotFoundError(
                f"knowledge base source {self.root} does not exist or is not a directory; "
                "fix: create it or correct source.uri in knowledge_bases.yaml")
        real_root = self.root.resolve()
        self.excluded = []
        for dirpath, dirnames, filenames in os.walk(real_root):  # followlinks=False: linked dirs are not entered
            here = Path(dirpath)
            for name in sorted(dirnames):
                if not name.startswith(".") and (here / name).is_symlink():
                    self._exclude((here / name).relative_to(real_root).as_posix() + "/",
                                  "is a symbolic link to a directory; links are not followed")
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (here / d).is_symlink())
            for name in sorted(filenames):
                path = here / name
                doc_id = path.relative_to(real_root).as_posix()
                if name.startswith(".") or not included(doc_id, self.include):
                    continue
                if path.is_symlink():
                    self._exclude(doc_id, "is a symbolic link; links are not followed")
                    continue
                if not path.resolve().is_relative_to(real_root):
                    self._exclude(doc_id, "resolves outside the source root")
                    continue
                try:
                    size = path.stat().st_size
                except OSError:
                    size = -1  # vanished meanwhile: listed, then reported as unreadable when opened
                yield SourceDocument(doc_id, size, lambda p=path: _open_no_follow(p))

    def _exclude(self, doc_id: str, why: str) -> None:
        self.excluded.append({"doc": doc_id, "error": f"{why}; fix: copy the file into {self.root} if it belongs "
                                                     "to the knowledge base"})


def _split_bucket(uri: str, scheme: str) -> tuple[str, str]:
    rest = uri[len(scheme) + 3:]
    bucket, _, prefix = rest.partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


class S3Source:
    """An S3 (or S3-compatible) prefix, reached like the artefact store (`llmops.artefacts.clients`)."""

    def __init__(self, uri: str, include: list[str], credentials: Mapping[str, str]):
        self.uri = uri
        self.bucket, self.prefix = _split_bucket(uri, "s3")
        self.include = include
        self.client = s3_client(credentials)

    def describe(self) -> str:
        return self.uri

    def list(self) -> Iterator[SourceDocument]:
        paginator = self.client.get_paginator("list_objects_v2")
        found = False
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    doc_id = obj["Key"][len(self.prefix):]
                    if not doc_id or doc_id.endswith("/") or not included(doc_id, self.include):
                        continue
                    found = True
                    yield SourceDocument(doc_id, obj["Size"],
                                         lambda k=obj["Key"]: self.client.get_object(Bucket=self.bucket, Key=k)["Body"])
        except self.client.exceptions.NoSuchBucket:
            found = False
        if not found:
            raise SourceNotFoundError(
                f"knowledge base source {self.uri} lists no document matching {self.include}; "
                "fix: upload the documents or correct source.uri / source.include in knowledge_bases.yaml")


class OssSource:
    """An Alibaba Cloud OSS prefix, reached like the artefact store (`llmops.artefacts.clients`)."""

    def __init__(self, uri: str, include: list[str], credentials: Mapping[str, str]):
        self.uri = uri
        bucket_name, self.prefix = _split_bucket(uri, "oss")
        self.include = include
        if not credentials.get("endpoint"):
            raise SourceNotFoundError(
                f"knowledge base source {uri} needs an OSS endpoint; "
                "fix: set source.endpoint in knowledge_bases.yaml or OSS_ENDPOINT in the environment")
        self.bucket = oss_bucket(bucket_name, credentials)

    def describe(self) -> str:
        return self.uri

    def list(self) -> Iterator[SourceDocument]:
        import oss2

        found = False
        for obj in oss2.ObjectIterator(self.bucket, prefix=self.prefix):
            doc_id = obj.key[len(self.prefix):]
            if not doc_id or doc_id.endswith("/") or not included(doc_id, self.include):
                continue
            found = True
            yield SourceDocument(doc_id, obj.size, lambda k=obj.key: self.bucket.get_object(k))
        if not found:
            raise SourceNotFoundError(
                f"knowledge base source {self.uri} lists no document matching {self.include}; "
                "fix: upload the documents or correct source.uri / source.include in knowledge_bases.yaml")


def open_source(source, environ: Mapping[str, str] | None = None) -> LocalSource | S3Source | OssSource:
    """Build the source named by a `KbSource` registry entry.

    Bucket credentials follow the artefact store's rule: the SDKs' own environment variables (the names in
    `llmops.artefacts.credentials.ENV_NAMES`), else RRSA / IRSA; `source.endpoint` overrides the endpoint."""
    if source.kind == "local":
        return LocalSource(source.uri, list(source.include))
    credentials = credentials_from_env(source.uri, environ)
    if source.endpoint:
        credentials[ENDPOINT_KEY[source.kind]] = source.endpoint
    if source.kind == "s3":
        return S3Source(source.uri, list(source.include), credentials)
    return OssSource(source.uri, list(source.include), credentials)
