"""S3 and OSS knowledge bases: the real SeaweedFS S3 server (boto3), the OSS-dialect adapter in front of it (oss2)."""

from __future__ import annotations

import pytest
from kb_helpers import SAMPLE

from llmops.kb.errors import KbError, SourceNotFoundError
from llmops.kb.pipeline import reindex, search


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from support.seaweed import make_bucket, seaweed_server

    with seaweed_server(tmp_path_factory.mktemp("seaweed")) as server:
        make_bucket(server, "kbdocs")
        yield server


def test_s3_prefix_is_indexed_incrementally(s3, make_kb, tmp_path, open_index, embedder, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    client = s3.client()
    for path in sorted(SAMPLE.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "kbdocs", f"docs/product/{path.relative_to(SAMPLE).as_posix()}")
    client.put_object(Bucket="kbdocs", Key="docs/product-old/stale.md", Body=b"# not under the prefix")

    kb = make_kb(source={"kind": "s3", "uri": "s3://kbdocs/docs/product", "endpoint": s3.endpoint_url})
    index = open_index(kb, str(tmp_path / "s3.db"))
    first = reindex(kb, "incremental", index=index, embedder=embedder)
    assert first.documents == 12 and first.failed == [] and first.recall == 1.0
    assert search(kb, index, embedder, "Is Orbit free?", limit=1)[0]["doc_id"] == "faq/pricing.txt"

    client.delete_object(Bucket="kbdocs", Key="docs/product/faq/upgrades.md")
    embedder.reset()
    second = reindex(kb, "incremental", index=index, embedder=embedder)
    assert second.deleted_documents == 1 and second.embedded_documents == 0 and embedder.texts == 0

    # A golden query whose document left the source is a registry error, raised before anything changes.
    client.delete_object(Bucket="kbdocs", Key="docs/product/faq/pricing.txt")
    with pytest.raises(KbError, match="golden queries expect faq/pricing.txt which the source does not contain"):
        reindex(kb, "incremental", index=index, embedder=embedder)
    assert index.count(index.live_collection()) == second.rows

    missing = make_kb(source={"kind": "s3", "uri": "s3://kbdocs/nothing-here", "endpoint": s3.endpoint_url})
    with pytest.raises(SourceNotFoundError, match="lists no document"):
        reindex(missing, "incremental", index=index, embedder=embedder)


def test_oss_prefix_is_indexed_through_the_oss_dialect(s3, make_kb, tmp_path, open_index, embedder, monkeypatch):
    """OssSource (oss2) against the OSS-dialect adapter the artefact tests use, in front of the same S3 server."""
    import oss2

    from support.oss_adapter import oss_adapter
    from support.seaweed import make_bucket

    make_bucket(s3, "kbdocs-oss")
    with oss_adapter(s3.endpoint_url) as oss:
        monkeypatch.setenv("OSS_ACCESS_KEY_ID", oss.access_key_id)
        monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", oss.access_key_secret)
        monkeypatch.setenv("OSS_REGION", "cn-hangzhou")
        bucket = oss2.Bucket(oss2.Auth(oss.access_key_id, oss.access_key_secret), oss.endpoint, "kbdocs-oss")
        for path in sorted(SAMPLE.rglob("*")):
            if path.is_file():
                bucket.put_object(f"docs/product/{path.relative_to(SAMPLE).as_posix()}", path.read_bytes())
        bucket.put_object("docs/product-old/stale.md", b"# not under the prefix")

        kb = make_kb(source={"kind": "oss", "uri": "oss://kbdocs-oss/docs/product", "endpoint": oss.endpoint})
        index = open_index(kb, str(tmp_path / "oss.db"))
        first = reindex(kb, "incremental", index=index, embedder=embedder)
        assert first.documents == 12 and first.failed == [] and first.recall == 1.0
        assert oss.stats["get_requests"] >= 2 * 12  # every document was hashed and loaded through the OSS dialect
        assert search(kb, index, embedder, "Is Orbit free?", limit=1)[0]["doc_id"] == "faq/pricing.txt"

        bucket.delete_object("docs/product/faq/upgrades.md")
        embedder.reset()
        second = reindex(kb, "incremental", index=index, embedder=embedder)
        assert second.deleted_documents == 1 and second.embedded_documents == 0 and embedder.texts == 0

        missing = make_kb(source={"kind": "oss", "uri": "oss://kbdocs-oss/nothing-here", "endpoint": oss.endpoint})
        with pytest.raises(SourceNotFoundError, match="lists no document"):
            reindex(missing, "incremental", index=index, embedder=embedder)
