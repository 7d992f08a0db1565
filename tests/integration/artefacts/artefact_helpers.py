"""Constants and the manifest builder shared by the artefact tests (a unique module name: no clash with
other folders' helpers under pytest's prepend import mode)."""

from __future__ import annotations

from pathlib import Path

from llmops.artefacts import Manifest

BUCKET = "artefacts"
MiB = 1024 * 1024
SMALL_PARTS = {"part_size": 5 * MiB, "multipart_threshold": 5 * MiB, "threads": 2}
SHA = "0123456789abcdef0123456789abcdef01234567"


def make_manifest(directory: Path, **overrides) -> Manifest:
    fields = dict(model="tiny-llama", source_repo="llmops-demo/tiny-llama", source_sha=SHA, source_revision="main",
                  recipe="llmcompressor-w8a8", recipe_params={"scheme": "W8A8", "ignore": ["lm_head"]},
                  tool_versions={"llmcompressor": "0.14.0", "transformers": "5.17.0"}, serving_runtime="vllm",
                  quantization_format="W8A8", min_compute_capability=7.5, tensor_parallel_size=1, max_model_len=512,
                  built_by={"dag_id": "model_refresh", "run_id": "manual__1", "task_id": "publish"})
    fields.update(overrides)
    return Manifest.for_directory(directory, **fields)


def stored_key(store, prefix: str, path: str) -> str:
    """The key (below the store root) that holds `path` of the published version at `prefix`."""
    entry = next(e for e in store.read_manifest(prefix).files if e.path == path)
    return f"{prefix}/{entry.key}"


def overwrite_stored(store, request, key: str, data: bytes) -> None:
    """Replace a stored object's bytes behind the store's back: on disk, or straight on the S3 server (for oss
    too: the adapter must notice, as OSS would, that the bytes under the key changed)."""
    if store.scheme == "file":
        (store.root / key).write_bytes(data)
    else:
        server = request.getfixturevalue("s3_server")
        server.client().put_object(Bucket=BUCKET, Key=store._key(key), Body=data)
