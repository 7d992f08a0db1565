"""Store URIs: the store a URI names (`open_store`) and a manifest URI split into store root and version prefix.

It sits above the store backends (`local`, `s3`, `oss`), which build on `llmops.artefacts.store`, so that the
base class never imports its own implementations.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from llmops.artefacts.errors import StoreUriError
from llmops.artefacts.local import FileStore
from llmops.artefacts.manifest import MANIFEST_NAME
from llmops.artefacts.oss import OssStore
from llmops.artefacts.s3 import S3Store
from llmops.artefacts.store import ArtefactStore


def open_store(uri: str, *, credentials: dict | None = None, **options) -> ArtefactStore:
    """The store for `uri` (file://, s3://bucket/prefix, oss://bucket/prefix).

    credentials: s3 -> endpoint_url, access_key_id, secret_access_key, session_token, region;
    oss -> endpoint, access_key_id, access_key_secret, security_token, region. Missing keys fall back to
    the SDK's default chain (environment, RRSA/IRSA), never to anything in code.
    options: part_size, threads, multipart_threshold (tuning; defaults suit model checkpoints).
    """
    parsed = urlparse(uri)
    credentials = dict(credentials or {})
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StoreUriError(f"{uri}: file URIs need an absolute path; fix: write file:///abs/path")
        return FileStore(Path(parsed.path))
    if parsed.scheme in ("s3", "oss"):
        if not parsed.netloc:
            raise StoreUriError(f"{uri} names no bucket; fix: write {parsed.scheme}://<bucket>/<prefix>")
        root = parsed.path.strip("/")
        if parsed.scheme == "s3":
            return S3Store(parsed.netloc, root, credentials, **options)
        return OssStore(parsed.netloc, root, credentials, **options)
    raise StoreUriError(f"{uri!r} has no supported scheme; fix: use file:///path, s3://bucket/prefix or "
                        "oss://bucket/prefix (LLMOPS_STORE_URI)")


def split_manifest_uri(uri: str) -> tuple[str, str]:
    """`<store root>/models/<model>/<sha>/<runtime>-<recipe>/manifest.json` -> (store root, prefix)."""
    head, sep, tail = uri.partition("/models/")
    if not sep or not tail.rstrip("/").endswith(MANIFEST_NAME) or "://" not in head:
        raise StoreUriError(f"{uri!r} is not a manifest URI; fix: pass <store>/models/<model>/<sha>/"
                            f"<runtime>-<recipe>/{MANIFEST_NAME}")
    return head, "models/" + tail.rstrip("/").removesuffix(MANIFEST_NAME).strip("/")
