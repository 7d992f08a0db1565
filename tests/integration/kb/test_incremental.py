"""Incremental re-indexing against real Milvus (Lite and standalone server) with the real MiniLM."""

from __future__ import annotations

import pytest
from kb_helpers import rows_of

from llmops.kb.chunking import chunk_lines
from llmops.kb.errors import DimensionMismatchError, SourceNotFoundError
from llmops.kb.pipeline import reindex, search


def _chunks(text: str, kb) -> list[str]:
    return list(chunk_lines(text.splitlines(), kb.chunking.size, kb.chunking.overlap, kb.chunking.markdown_aware))


def _chunk_count(path, kb) -> int:
    return len(_chunks(path.read_text(), kb))


def test_edit_and_delete_embed_only_the_edited_document(make_kb, corpus, milvus_uri, open_index, embedder):
    kb = make_kb()
    index = open_index(kb, milvus_uri)
    first = reindex(kb, "incremental", index=index, embedder=embedder)
    assert first.mode == "full" and first.rows == first.embedded_chunks > 0  # no alias yet: a full build
    live = index.live_collection()
    assert live == f"{kb.alias}_v1"
    removed_rows = len(rows_of(index, live, "faq/upgrades.md"))
    old_edited_rows = len(rows_of(index, live, "guides/retries.md"))
    assert removed_rows and old_edited_rows

    edited = corpus / "guides" / "retries.md"
    before = _chunks(edited.read_text(), kb)
    edited.write_text(edited.read_text().replace("doubles each time", "doubles after each try")
                      + "\n## Jitter\n\nOrbit adds up to ten percent random jitter to each delay.\n")
    after = _chunks(edited.read_text(), kb)
    changed = [i for i, text in enumerate(after) if i >= len(before) or before[i] != text]
    assert 0 < len(changed) < len(after)  # one chunk edited, one added, one untouched
    (corpus / "faq" / "upgrades.md").unlink()
    # A dry run sizes the job: documents and chunks to embed, and the time at the embedder's measured rate.
    plan = reindex(kb, "incremental", index=index, embedder=embedder, dry_run=True)
    assert (plan.embedded_documents, plan.chunks_to_embed, plan.deleted_documents) == (1, len(changed), 1)
    assert plan.embed_rate > 0 and plan.estimated_s == round(len(changed) / plan.embed_rate, 1)
    assert index.live_collection() == live and len(rows_of(index, live, "faq/upgrades.md")) == removed_rows
    embedder.reset()

    second = reindex(kb, "incremental", index=index, embedder=embedder)
    assert second.mode == "incremental" and index.live_collection() == live
    assert second.embedded_documents == 1
    # Counted at the embedder: only the edited document's changed chunks; its unchanged chunk keeps its vector.
    assert embedder.texts == second.embedded_chunks == len(changed)
    assert second.reused_chunks == len(after) - len(changed)
    assert second.deleted_documents == 1 and rows_of(index, live, "faq/upgrades.md") == []
    new_hashes = {row["doc_hash"] for row in rows_of(index, live, "guides/retries.md")}
    assert len(new_hashes) == 1 and len(rows_of(index, live, "guides/retries.md")) == _chunk_count(edited, kb)
    assert second.skipped_documents == 10
    assert second.rows == index.count(live) == first.rows - removed_rows - old_edited_rows + len(after)
    assert second.deleted_chunks == removed_rows + max(0, old_edited_rows - len(after))
    hits = search(kb, index, embedder, "random jitter added to retry delays", limit=1)
    assert hits[0]["doc_id"] == "guides/retries.md"

    embedder.reset()
    rows_before = index.count(live)
    third = reindex(kb, "incremental", index=index, embedder=embedder)
    assert embedder.texts == 0 and embedder.calls == 0
    assert third.embedded_documents == third.deleted_chunks == third.repaired_chunks == 0
    assert index.count(live) == rows_before == third.rows


def test_rows_deleted_or_added_behind_the_back_are_repaired(make_kb, milvus_uri, open_index, embedder):
    kb = make_kb()
    index = open_index(kb, milvus_uri)
    reindex(kb, "incremental", index=index, embedder=embedder)
    live = index.live_collection()
    total = index.count(live)
    target = rows_of(index, live, "guides/installation.md")
    assert len(target) >= 2
    # Someone deletes rows of one document and leaves a row of a document that does not exist.
    index.client.delete(live, filter='doc_id == "guides/installation.md" and chunk_index == 0')
    index.client.delete(live, filter='doc_id == "faq/pricing.txt"')
    index.client.upsert(live, [{"pk": "stray", "doc_id": "old/removed.md", "doc_hash": "0" * 64, "chunk_index": 0,
                                "n_chunks": 1, "chunk_hash": "0" * 64, "text": "stale", "vector": [0.1] * embedder.dimension}])
    assert index.count(live) == total - 2 + 1
    embedder.reset()

    summary = reindex(kb, "incremental", index=index, embedder=embedder)
    assert summary.mode == "incremental"
    assert index.count(live) == total
    assert len(rows_of(index, live, "guides/installation.md")) == len(target)
    assert len(rows_of(index, live, "faq/pricing.txt")) == 1
    assert rows_of(index, live, "old/removed.md") == []
    assert summary.repaired_chunks == 1  # chunk 0 of installation.md, without re-embedding its other chunks
    assert summary.embedded_documents == 1  # pricing.txt had no rows left: embedded as new
    assert embedder.texts == 2
    assert summary.deleted_documents == 1 and summary.deleted_chunks == 1
    again = reindex(kb, "incremental", index=index, embedder=embedder)
    assert again.embedded_chunks == again.repaired_chunks == again.deleted_chunks == 0


def test_changed_chunking_forces_a_full_rebuild(make_kb, milvus_uri, open_index, embedder):
    kb = make_kb()
    index = open_index(kb, milvus_uri)
    reindex(kb, "incremental", index=index, embedder=embedder)
    smaller = make_kb(chunking={"size": 300, "overlap": 50})
    summary = reindex(smaller, "incremental", index=index, embedder=embedder)
    assert summary.mode == "full" and "fingerprint changed" in summary.reason
    assert index.live_collection() == f"{kb.alias}_v2"
    assert index.fingerprint(index.live_collection())["chunking"]["size"] == 300
    assert summary.rows == index.count(index.live_collection()) > 0
    assert index.versions() == [1, 2]  # the previous version stays for rollback


def test_missing_source_fails_before_anything_changes(make_kb, corpus, tmp_path, milvus_uri, open_index, embedder):
    kb = make_kb(source={"uri": str(tmp_path / "nowhere")})
    index = open_index(kb, milvus_uri)
    with pytest.raises(SourceNotFoundError, match="nowhere.*does not exist.*fix:"):
        reindex(kb, "incremental", index=index, embedder=embedder)
    assert index.versions() == [] and embedder.calls == 0
    # An existing but empty source is refused too: it must not read as "delete every document".
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceNotFoundError, match="lists no document"):
        reindex(make_kb(source={"uri": str(empty)}), "incremental", index=index, embedder=embedder)


def test_unreadable_files_are_skipped_and_reported(make_kb, corpus, tmp_path, milvus_uri, open_index, embedder):
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    (corpus / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (corpus / "dangling.md").symlink_to(corpus / "does-not-exist.md")
    (tmp_path / "secret.md").write_text("# Payroll\n\nThe payroll signing key is kept in the vault.\n")
    (corpus / "leak.md").symlink_to(tmp_path / "secret.md")
    (corpus / "huge.txt").write_text("big words here " * 80_000)  # 1.1 MiB
    kb = make_kb(source={"max_document_mib": 1})
    index = open_index(kb, milvus_uri)
    summary = reindex(kb, "incremental", index=index, embedder=embedder)
    failed = {item["doc"]: item["error"] for item in summary.failed}
    assert set(failed) == {"broken.pdf", "latin1.txt"}
    assert "not a readable PDF" in failed["broken.pdf"] and "not UTF-8" in failed["latin1.txt"]
    excluded = {item["doc"]: item["error"] for item in summary.excluded}
    assert set(excluded) == {"dangling.md", "leak.md", "huge.txt"}
    assert "symbolic link" in excluded["leak.md"] and "above source.max_document_mib 1" in excluded["huge.txt"]
    assert summary.embedded_documents == 12 and summary.recall == 1.0
    assert index.live_collection() == f"{kb.alias}_v1"
    hits = search(kb, index, embedder, "where is the payroll signing key kept?", limit=3)
    assert all(hit["doc_id"] != "leak.md" and "payroll" not in hit["text"] for hit in hits)
    # A later run leaves the unreadable files reported, the rest untouched.
    again = reindex(kb, "incremental", index=index, embedder=embedder)
    assert again.skipped_documents == 12 and {i["doc"] for i in again.failed} == set(failed)


def test_embedder_dimension_mismatch_writes_nothing(make_kb, milvus_uri, open_index, embedder):
    from llmops.kb.embedders import SentenceTransformerEmbedder
    from support.embedders import CountingEmbedder

    kb = make_kb()
    index = open_index(kb, milvus_uri)
    reindex(kb, "incremental", index=index, embedder=embedder)
    live = index.live_collection()
    rows = index.count(live)
    # Same model name, other dimension: what happens when the model behind a name is swapped.
    truncated = CountingEmbedder(SentenceTransformerEmbedder("all-MiniLM-L6-v2", truncate_dim=128))
    assert truncated.dimension == 128
    with pytest.raises(DimensionMismatchError, match=r"128-d.*384-d.*nothing was written.*fix:"):
        reindex(kb, "incremental", index=index, embedder=truncated)
    assert truncated.calls == 0 and index.count(live) == rows and index.versions() == [1]


def test_declared_dimension_is_checked_when_the_embedder_is_built(make_kb):
    from llmops.kb.embedders import build_embedder

    kb = make_kb(embedder={"dimension": 768})
    with pytest.raises(DimensionMismatchError, match="384-d vectors but knowledge_bases.yaml declares dimension 768"):
        build_embedder(kb.embedder)


class _FailingAfter:
    """The real MiniLM that raises once `limit` texts were embedded.

    Fault injection, not a stand-in: the embedding endpoint dying mid-run is the failure under test,
    and no real server can be made to die at a chosen call.
    """

    def __init__(self, inner, limit: int):
        self.inner, self.limit, self.seen = inner, limit, 0
        self.kind, self.model, self.dimension = inner.kind, inner.model, inner.dimension

    def embed(self, texts):
        self.seen += len(texts)
        if self.seen > self.limit:
            raise ConnectionError("embedding endpoint went away")
        return self.inner.embed(texts)


def test_a_failed_embedding_never_deletes_the_old_chunks(make_kb, corpus, milvus_uri, open_index, minilm):
    kb = make_kb(embedder={"batch_size": 1})  # one batch per 64 chunks: the failure hits the only batch
    index = open_index(kb, milvus_uri)
    reindex(kb, "incremental", index=index, embedder=minilm)
    live = index.live_collection()
    rows = index.count(live)
    old_rows = rows_of(index, live, "guides/alerts.md")
    (corpus / "guides" / "alerts.md").write_text("# Alerts\n\nAlerts are now configured in the web console.\n")
    (corpus / "faq" / "upgrades.md").unlink()
    with pytest.raises(ConnectionError):
        reindex(kb, "incremental", index=index, embedder=_FailingAfter(minilm, 0))
    # Nothing was deleted: neither the edited document's old chunks nor the removed document's.
    assert index.count(live) == rows and rows_of(index, live, "guides/alerts.md") == old_rows
    assert rows_of(index, live, "faq/upgrades.md")
    done = reindex(kb, "incremental", index=index, embedder=minilm)
    assert done.embedded_documents == 1 and done.deleted_documents == 1
    assert len(rows_of(index, live, "guides/alerts.md")) == 1


def test_many_changed_documents_turn_into_a_full_rebuild(make_kb, corpus, milvus_uri, open_index, embedder):
    kb = make_kb(incremental_max_changed_ratio=0.5)
    index = open_index(kb, milvus_uri)
    reindex(kb, "incremental", index=index, embedder=embedder)
    for path in sorted(corpus.rglob("*.md"))[:7]:  # 7 of 12 documents
        path.write_text(path.read_text() + "\nReviewed in November.\n")
    summary = reindex(kb, "incremental", index=index, embedder=embedder)
    assert summary.mode == "full" and "7/12 documents changed" in summary.reason
    assert index.live_collection() == f"{kb.alias}_v2" and summary.rows == index.count(f"{kb.alias}_v2")
