"""Pure decisions of kb_reindex: per-document plans from the store's rows, run selection, report, config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llmops.config import load_file
from llmops.config.schema import KnowledgeBase
from llmops.errors import ConfigError
from llmops.hashing import sha256_file, sha256_stream
from llmops.kb.index import DocRecord, resolve_uri, token_from_env
from llmops.kb.keys import chunk_key
from llmops.kb.pipeline import config_fingerprint, plan_document
from llmops.kb.runs import format_report, job_arguments, outcomes

ROOT = Path(__file__).resolve().parents[2]


def _record(rows: dict[int, tuple[str, int]], doc="d.md") -> DocRecord:
    return DocRecord({idx: (chunk_key(doc, idx), doc_hash, n, f"c{idx}") for idx, (doc_hash, n) in rows.items()})


def test_new_document_is_embedded():
    assert plan_document("h1", None).action == "embed"


def test_complete_current_document_is_skipped():
    assert plan_document("h1", _record({0: ("h1", 2), 1: ("h1", 2)})).action == "skip"


def test_changed_document_is_embedded_and_remembers_old_rows():
    plan = plan_document("h2", _record({0: ("h1", 3), 1: ("h1", 3), 2: ("h1", 3)}))
    assert plan.action == "embed" and sorted(plan.old_keys) == [0, 1, 2]
    assert plan.old_chunks == {0: "c0", 1: "c1", 2: "c2"}  # unchanged chunks keep their vectors


def test_missing_rows_of_an_unchanged_document_are_repaired_alone():
    plan = plan_document("h1", _record({0: ("h1", 3), 2: ("h1", 3)}))
    assert plan.action == "repair" and plan.indexes == {1} and plan.stale_keys == []


def test_leftover_rows_beyond_the_chunk_count_are_removed():
    plan = plan_document("h1", _record({0: ("h1", 1), 1: ("h0", 2)}))
    assert plan.action == "repair" and plan.indexes == set() and plan.stale_keys == [chunk_key("d.md", 1)]


def test_half_written_change_is_finished():
    """A run killed while writing a changed document leaves rows of two hashes: finish the new version
    (embed its missing chunks only) and drop the old leftovers."""
    plan = plan_document("h2", _record({0: ("h2", 2), 1: ("h1", 3), 2: ("h1", 3)}))
    assert plan.action == "repair" and plan.indexes == {1} and plan.stale_keys == [chunk_key("d.md", 2)]


def test_keys_and_hashes_are_deterministic(tmp_path):
    assert chunk_key("a.md", 0) == chunk_key("a.md", 0) != chunk_key("a.md", 1) != chunk_key("b.md", 1)
    assert len(chunk_key("a.md", 0)) == 64
    path = tmp_path / "f"
    path.write_bytes(b"x" * (3 * 1024 * 1024 + 5))
    with open(path, "rb") as stream:  # documents are hashed as streams, artefact files by path: one digest
        assert sha256_stream(stream, chunk_size=1024 * 1024) == sha256_file(path) == (
            hashlib.sha256(path.read_bytes()).hexdigest(), 3 * 1024 * 1024 + 5)


def _kbs():
    registry = load_file(ROOT / "include" / "config" / "knowledge_bases.yaml")
    return {kb.name: kb for kb in registry.knowledge_bases}


def test_registry_sample_is_valid_and_fingerprint_tracks_embedder_and_chunking():
    kb = _kbs()["product-docs"]
    assert kb.golden_queries and kb.embedder.dimension == 384
    other = kb.model_copy(update={"chunking": kb.chunking.model_copy(update={"size": 300})})
    assert config_fingerprint(kb) != config_fingerprint(other)
    assert config_fingerprint(kb) == config_fingerprint(kb.model_copy(update={"retention": 5}))


def test_job_arguments_select_knowledge_bases():
    kbs = _kbs()
    assert job_arguments(kbs, "product-docs", "full", True) == [["--kb", "product-docs", "--mode", "full",
                                                                 "--dry-run"]]
    assert job_arguments(kbs) == [["--kb", name, "--mode", "incremental"] for name in sorted(kbs)]
    manual_only = {"x": kbs["product-docs"].model_copy(update={"schedule": None})}
    assert job_arguments(manual_only) == [["--kb", "x", "--mode", "incremental"]]  # the form can run it
    with pytest.raises(ConfigError, match="'nope' is not in knowledge_bases.yaml"):
        job_arguments(kbs, "nope")
    with pytest.raises(ConfigError, match="use one of incremental, full, rollback"):
        job_arguments(kbs, mode="sideways")


def test_report_shows_counts_and_skipped_documents():
    results = [
        {"kb": "docs", "mode": "full", "requested_mode": "incremental", "reason": "alias missing",
         "collection": "docs_v1", "documents": 12, "embedded_documents": 11, "embedded_chunks": 30,
         "skipped_documents": 0, "deleted_documents": 0, "deleted_chunks": 0, "repaired_chunks": 0,
         "failed": [{"doc": "bad.pdf", "error": "not a readable PDF"}], "rows": 30, "recall": 1.0,
         "duration_s": 3.2},
        {"kb": "other", "mode": "rollback", "collection": "o_v1", "previous_collection": "o_v2"},
        None,
    ]
    items = outcomes(["docs", "other", "broken"], results)
    assert [name for name, result in items if result is None] == ["broken"]
    text = format_report(items)
    assert "broken               FAILED       the re-index failed: see the log of reindex[broken]" in text
    assert "docs_v1" in text and "11 docs/  30" in text and "1.00" in text
    assert "docs: ran full instead of incremental: alias missing" in text
    assert "docs: skipped bad.pdf: not a readable PDF" in text
    assert "alias moved back from o_v2" in text
    dry = format_report([("docs", {**results[0], "dry_run": True, "chunks_to_embed": 30, "embed_rate": 12.0,
                                   "estimated_s": 2.5})])
    assert "docs: dry run: 11 documents and 30 chunks to embed, about 2 s at the embedder's measured 12.0 chunks/s" \
        in dry


@pytest.mark.parametrize(("change", "message"), [
    ({"source": {"kind": "s3", "uri": "/local/path"}}, "needs a s3://bucket/prefix uri"),
    ({"loaders": {"md": "markdown"}}, "is not a lowercase file suffix"),
    ({"loaders": {".md": "word"}}, "Input should be"),
    ({"chunking": {"size": 100, "overlap": 100}}, "overlap (100) must be below size (100)"),
    ({"embedder": {"kind": "openai"}}, "needs an endpoint"),
    ({"schedule": "every day"}, "is neither a five-field cron expression"),
    ({"schedule": "@sometimes"}, "is neither a five-field cron expression"),
    ({"schedule": {"asset": "docs/"}}, "String should match pattern"),
    ({"source": {"uri": "docs", "max_document_mib": 0}}, "greater than 0"),
])
def test_bad_knowledge_base_entries_are_refused(change, message):
    data = {"name": "k", "alias": "k", "source": {"uri": "docs"}, **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KnowledgeBase.model_validate(data)


def test_milvus_uri_and_token_resolution(tmp_path, monkeypatch):
    assert resolve_uri("http://127.0.0.1:19530", tmp_path) == "http://127.0.0.1:19530"
    assert resolve_uri("kb.db", tmp_path) == str(tmp_path / "milvus" / "kb.db")
    assert (tmp_path / "milvus").is_dir()
    monkeypatch.delenv("MILVUS_TOKEN", raising=False)
    assert token_from_env("milvus_default") is None
    monkeypatch.setenv("MILVUS_TOKEN", "root:Milvus")
    assert token_from_env(None) == "root:Milvus"
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_PROD", json.dumps({"conn_type": "generic", "login": "u", "password": "p"}))
    assert token_from_env("milvus_prod") == "u:p"
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_URI", "generic://:s%40cret@milvus:19530")
    assert token_from_env("milvus_uri") == "s@cret"
