"""ArtefactStoreHook: credentials from the `llmops_artefacts` Connection reach a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json

import pytest
from artefact_helpers import make_manifest

from llmops.artefacts import artefact_prefix
from support.seaweed import make_bucket, seaweed_server


@pytest.fixture(scope="module")
def s3():
    with seaweed_server() as server:
        make_bucket(server, "hooked")
        yield server


def _connection(s3, secret: str) -> str:
    return json.dumps({"conn_type": "aws", "login": s3.access_key, "password": secret,
                       "extra": {"endpoint_url": s3.endpoint_url, "region_name": s3.region}})


def test_publish_through_the_hook(s3, tmp_path, monkeypatch):
    from llmops_airflow.hooks.artefacts import ArtefactStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_ARTEFACTS", _connection(s3, s3.secret_key))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1024)
    manifest = make_manifest(tmp_path)
    hook = ArtefactStoreHook(store_uri="s3://hooked/llmops")
    assert hook.test_connection()[0] is True
    prefix = artefact_prefix(manifest.model, manifest.source_sha, manifest.serving_runtime, manifest.recipe)
    uri = hook.get_conn().publish(tmp_path, prefix, manifest)
    assert uri.startswith("s3://hooked/llmops/models/tiny-llama/")
    assert hook.get_conn().read_manifest(prefix).same_content(manifest)


def test_unreachable_store_is_reported_without_leaking_the_secret(s3, monkeypatch):
    """SeaweedFS here runs without identities, so a missing bucket stands in for a refused request."""
    from llmops_airflow.hooks.artefacts import ArtefactStoreHook

    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_ARTEFACTS", _connection(s3, "the-secret-value"))
    ok, message = ArtefactStoreHook(store_uri="s3://no-such-bucket/llmops").test_connection()
    assert ok is False and "s3://no-such-bucket/llmops" in message and "the-secret-value" not in message


def test_file_store_needs_no_connection(tmp_path, monkeypatch):
    from llmops_airflow.hooks.artefacts import ArtefactStoreHook

    monkeypatch.delenv("AIRFLOW_CONN_LLMOPS_ARTEFACTS", raising=False)
    hook = ArtefactStoreHook(store_uri=(tmp_path / "store").as_uri())
    assert hook.credentials() == {} and hook.test_connection()[0] is True
