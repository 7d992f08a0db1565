"""What only one backend has: OSS's CRC64 checks, and a real process killed in the middle of an S3 upload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import oss2
import pytest
from artefact_helpers import BUCKET, make_manifest, stored_key

from llmops.artefacts import open_store

ROOT = Path(__file__).resolve().parents[3]
MiB = 1024 * 1024


def test_oss_crc64_is_checked_on_upload(open_test_store, oss_server, checkpoint):
    store = open_test_store("oss")
    manifest = make_manifest(checkpoint)
    oss_server.state.corrupt_crc = True  # the server now reports a CRC64 that does not match the bytes
    try:
        with pytest.raises(oss2.exceptions.InconsistentError):
            store.publish(checkpoint, manifest.prefix, manifest)
    finally:
        oss_server.state.corrupt_crc = False
    assert store.read_manifest(manifest.prefix) is None
    store.publish(checkpoint, manifest.prefix, manifest)
    remote = store._head(store._key(stored_key(store, manifest.prefix, "model.safetensors")))
    local = store._local_checksums(checkpoint / "model.safetensors", remote.size)
    assert remote.crc64 is not None and remote.crc64 == local.crc64  # combined from parts, checked by us


def test_oss_retry_sends_fewer_part_bytes_at_the_server(open_test_store, oss_server, checkpoint):
    store = open_test_store("oss")
    manifest = make_manifest(checkpoint)
    before = oss_server.stats["upload_part_bytes"]

    def crash(path: str, done: int, size: int) -> None:
        if path.endswith("model.safetensors") and done >= 10 * MiB:
            raise KeyboardInterrupt  # like Ctrl-C or a pod eviction's SIGTERM turned into an exception

    with pytest.raises(KeyboardInterrupt):
        store.publish(checkpoint, manifest.prefix, manifest, progress=crash)
    first = oss_server.stats["upload_part_bytes"] - before
    open_test_store("oss").publish(checkpoint, manifest.prefix, manifest)
    second = oss_server.stats["upload_part_bytes"] - before - first
    weights = (checkpoint / "model.safetensors").stat().st_size
    assert first >= 10 * MiB and first + second < weights + 5 * MiB  # at most one part sent twice
    assert second <= weights - 10 * MiB


PUBLISHER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from llmops.artefacts import Manifest, open_store
    args = json.loads(sys.argv[1])
    store = open_store(args["uri"], credentials=args["credentials"], part_size=5 * 2**20,
                       multipart_threshold=5 * 2**20, threads=1)
    manifest = Manifest.model_validate_json(Path(args["manifest"]).read_text())
    def progress(path, done, size):
        print("PROGRESS", path, done, size, flush=True)
        time.sleep(0.3)
    store.publish(Path(args["dir"]), manifest.prefix, manifest, progress=progress)
    print("PUBLISHED", flush=True)
""")


def test_s3_publisher_killed_midway_leaves_no_version_and_the_retry_resumes(s3_server, tmp_path):
    data = tmp_path / "checkpoint"
    data.mkdir()
    (data / "config.json").write_text("{}")
    (data / "model.safetensors").write_bytes(os.urandom(40 * MiB))
    manifest = make_manifest(data)
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    uri = f"s3://{BUCKET}/killed"
    args = {"uri": uri, "credentials": s3_server.credentials, "manifest": str(tmp_path / "manifest.json"),
            "dir": str(data)}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, __import__("json").dumps(args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    parts_seen = 0
    try:
        for line in proc.stdout:
            if line.startswith("PROGRESS") and "model.safetensors" in line:
                parts_seen += 1
                if parts_seen == 3:
                    os.kill(proc.pid, signal.SIGKILL)  # no cleanup, no finally: like an OOM kill
                    break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()

    store = open_store(uri, credentials=s3_server.credentials, part_size=5 * MiB, multipart_threshold=5 * MiB)
    assert store.read_manifest(manifest.prefix) is None and store.list_versions("tiny-llama") == []
    store.publish(data, manifest.prefix, manifest)
    stats = store.stats.snapshot()
    assert stats["parts_skipped"] >= 3 and stats["files_skipped"] == 1  # config.json and 15 MiB were kept
    assert stats["bytes_uploaded"] <= 25 * MiB
    assert store.fetch(manifest.prefix, tmp_path / "fetched").joinpath("model.safetensors").stat().st_size == 40 * MiB


def test_s3_parts_carry_a_crc32_the_server_checks(open_test_store):
    from botocore.exceptions import ClientError

    store = open_test_store("s3")
    key = store._key("crc-check/blob")
    upload_id = store._create_upload(key, {"sha256": "0" * 64})
    data = os.urandom(MiB)
    with pytest.raises(ClientError, match="BadDigest"):
        store._upload_part(key, upload_id, 1, data, store._part_checksum(data) ^ 1)
    assert store._upload_part(key, upload_id, 1, data, store._part_checksum(data))
    store._abort(key, upload_id)
