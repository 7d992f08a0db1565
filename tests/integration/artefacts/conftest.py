"""Stores for the artefact contract suite: file, s3 (SeaweedFS) and oss (SeaweedFS behind the OSS adapter).

One SeaweedFS per session; every test gets its own root prefix, so tests never see each other's versions.
Parts are 5 MiB (S3's minimum, which SeaweedFS enforces), so a 21 MiB weight file goes up in 5 parts.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from artefact_helpers import BUCKET, SMALL_PARTS, MiB

from llmops.artefacts import open_store
from support.oss_adapter import oss_adapter
from support.seaweed import make_bucket, seaweed_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        make_bucket(server, BUCKET)
        yield server


@pytest.fixture(scope="session")
def oss_server(s3_server):
    with oss_adapter(s3_server.endpoint_url) as adapter:
        yield adapter


@pytest.fixture
def open_test_store(request, tmp_path):
    """open_test_store(kind, **options) -> a store with a fresh root for this test."""
    root = uuid.uuid4().hex[:12]

    def make(kind: str, **options):
        options = {**SMALL_PARTS, **options}
        if kind == "file":
            return open_store((tmp_path / "store").as_uri())
        if kind == "s3":
            server = request.getfixturevalue("s3_server")
            return open_store(f"s3://{BUCKET}/{root}", credentials=server.credentials, **options)
        if kind == "oss":
            adapter = request.getfixturevalue("oss_server")
            return open_store(f"oss://{BUCKET}/{root}", credentials=adapter.credentials, **options)
        raise ValueError(kind)

    return make


@pytest.fixture(params=["file", "s3", "oss"])
def store(request, open_test_store):
    return open_test_store(request.param)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """A small quantized-checkpoint-shaped directory: two small files and one multipart-sized weight file."""
    out = tmp_path / "checkpoint"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {"format": "int8"}}))
    (out / "model.safetensors").write_bytes(os.urandom(20 * MiB + 12345))
    (out / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    return out
