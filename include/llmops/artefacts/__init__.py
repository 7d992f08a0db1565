"""Publication: artefact versions under immutable prefixes with a manifest written last.

    store = open_store(get_settings().store_uri, credentials=...)
    prefix = artefact_prefix("tiny-llama", sha, "vllm", "llmcompressor-w8a8")
    if not store.exists(prefix):
        manifest = Manifest.for_directory(out_dir, model=..., source_repo=..., source_sha=sha, ...)
        uri = store.publish(out_dir, prefix, manifest)
"""

from llmops.artefacts.errors import (
    ArtefactError,
    ArtefactIntegrityError,
    ArtefactNotFoundError,
    ImmutableArtefactError,
    StoreUriError,
)
from llmops.artefacts.manifest import MANIFEST_NAME, BuiltBy, FileEntry, Manifest, artefact_prefix
from llmops.artefacts.store import ArtefactStore, TransferStats
from llmops.artefacts.uri import open_store, split_manifest_uri

__all__ = [
    "MANIFEST_NAME",
    "ArtefactError",
    "ArtefactIntegrityError",
    "ArtefactNotFoundError",
    "ArtefactStore",
    "BuiltBy",
    "FileEntry",
    "ImmutableArtefactError",
    "Manifest",
    "StoreUriError",
    "TransferStats",
    "artefact_prefix",
    "open_store",
    "split_manifest_uri",
]
