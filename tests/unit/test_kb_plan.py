"""Pure decisions of kb_reindex (llmops.kb.plan): per-document plans from the store's rows, the mode a run
takes, the rows it embeds, keeps and deletes, its counts and dry-run estimate; run selection, report, config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llmops.config import load_file
from llmops.config.schema import KnowledgeBase
from llmops.errors import ConfigError
from llmops.hashing import sha256_file, sha256_stream
from llmops.kb.errors import DimensionMismatchError, KbError
from llmops.kb.index import resolve_uri
from llmops.kb.keys import chunk_key, text_hash
from llmops.kb.plan import (
    TEXT_MAX_BYTES,
    DocPlan,
    DocRecord,
    RunSummary,
    StoredChunk,
    check_mode,
    choose_mode,
    config_fingerprint,
    fit_text,
    next_version,
    orphans,
    plan_document,
    plan_writes,
    too_many_changes,
)
from llmops.kb.runs import format_report, job_arguments, outcomes
from llmops.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


def _record(rows: dict[int, tuple[str, int]], doc="d.md") -> DocRecord:
    return DocRecord({idx: StoredChunk(chunk_key(doc, idx), doc_hash, n, f"c{idx}")
                      for idx, (doc_hash, n) in rows.items()})


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


def test_half_written_change_is_finished_whatever_order_the_store_returns_rows_in():
    """The repair keeps the chunk count of the rows of the current version, not of the first row read."""
    record = _record({1: ("h1", 3), 0: ("h2", 2), 2: ("h1", 3)})
    plan = plan_document("h2", record)
    assert (plan.action, plan.indexes, plan.n_chunks) == ("repair", {1}, 2)
    write = plan_writes("d.md", "h2", plan, ["zero", "one"])
    assert write.action == "repair" and [row["chunk_index"] for row in write.embed] == [1]
    assert write.keep == [] and write.stale == [chunk_key("d.md", 2)]


def test_rows_of_one_hash_but_two_chunk_counts_are_replaced():
    plan = plan_document("h1", _record({0: ("h1", 2), 1: ("h1", 3)}))
    assert plan.action == "embed" and sorted(plan.old_keys) == [0, 1]


def _rows(texts, doc="d.md", doc_hash="h"):
    return DocRecord({i: StoredChunk(chunk_key(doc, i), doc_hash, len(texts), text_hash(t)) for i, t in enumerate(texts)})


def test_new_document_embeds_every_chunk():
    write = plan_writes("d.md", "h", plan_document("h", None), ["a", "b"])
    assert write.action == "embed" and write.keep == [] and write.stale == []
    assert [(row["pk"], row["chunk_index"], row["n_chunks"], row["doc_hash"]) for row in write.embed] == [
        (chunk_key("d.md", 0), 0, 2, "h"), (chunk_key("d.md", 1), 1, 2, "h")]
    assert write.embed[1]["chunk_hash"] == text_hash("b") and write.embed[1]["text"] == "b"


def test_changed_document_embeds_changed_chunks_keeps_unchanged_ones_and_drops_the_surplus():
    plan = plan_document("new", _rows(["same", "old", "gone", "gone too"]))
    write = plan_writes("d.md", "new", plan, ["same", "edited", "added"])
    assert [row["text"] for row in write.embed] == ["edited", "added"]
    assert [row["text"] for row in write.keep] == ["same"] and write.keep[0]["doc_hash"] == "new"
    assert write.stale == [chunk_key("d.md", 3)]  # row 2 is overwritten by "added" (same key)


def test_chunk_moved_to_another_index_is_embedded_again():
    """Vectors are kept by (index, text): the row's key is derived from the index."""
    write = plan_writes("d.md", "new", plan_document("new", _rows(["a", "b"])), ["b", "a"])
    assert [row["text"] for row in write.embed] == ["b", "a"] and write.keep == []


def test_repair_whose_chunk_count_disagrees_with_the_chunker_reembeds_the_document():
    """Rows say 3 chunks, the chunker now cuts 2: the stored rows cannot be patched, the document is redone,
    its unchanged chunks keep their vectors and its surplus row goes."""
    record = _rows(["a", "b", "c"])
    del record.rows[1]
    plan = plan_document("h", record)
    assert plan.action == "repair" and plan.indexes == {1}
    write = plan_writes("d.md", "h", plan, ["a", "b+c"])
    assert write.action == "embed" and [row["text"] for row in write.embed] == ["b+c"]
    assert [row["text"] for row in write.keep] == ["a"] and write.stale == [chunk_key("d.md", 2)]


def test_skipped_document_writes_nothing():
    with pytest.raises(ValueError, match="writes nothing"):
        plan_writes("d.md", "h", DocPlan("skip"), ["a"])


def test_text_is_cut_to_the_field_limit_on_a_character_boundary():
    assert fit_text("short") == "short"
    cut = fit_text("é" * TEXT_MAX_BYTES)
    assert len(cut.encode()) <= TEXT_MAX_BYTES and set(cut) == {"é"} and len(cut) == TEXT_MAX_BYTES // 2
    row = plan_writes("d.md", "h", DocPlan("embed"), ["é" * TEXT_MAX_BYTES])
    assert row.embed[0]["chunk_hash"] == text_hash("é" * TEXT_MAX_BYTES)  # the hash is of what was chunked


def _kb(**changes):
    return _kbs()["product-docs"].model_copy(update=changes)


def test_mode_follows_the_alias_and_the_fingerprint():
    kb = _kb()
    stored = {**config_fingerprint(kb), "dimension": 384}
    assert choose_mode(kb, "full", "a_v1", stored, 384) == ("full", "requested")
    assert choose_mode(kb, "incremental", None, None, 384) == ("full", f"alias {kb.alias} does not exist yet")
    assert choose_mode(kb, "incremental", "a_v1", stored, 384) == ("incremental", "fingerprint unchanged")
    assert choose_mode(kb, "incremental", "a_v1", stored, None) == ("incremental", "fingerprint unchanged")
    mode, reason = choose_mode(kb, "incremental", "a_v1", {**stored, "schema": 1}, 384)
    assert mode == "full" and reason.startswith("fingerprint changed")
    assert choose_mode(kb, "incremental", "a_v1", None, 384)[0] == "full"  # a collection without a fingerprint
    other = _kb(embedder=kb.embedder.model_copy(update={"model": "other"}))
    assert choose_mode(other, "incremental", "a_v1", stored, 384)[0] == "full"


def test_same_model_name_with_another_dimension_is_refused():
    kb = _kb()
    stored = {**config_fingerprint(kb), "dimension": 384}
    with pytest.raises(DimensionMismatchError, match=r"produces 128-d vectors.*holds 384-d.*nothing was written"):
        choose_mode(kb, "incremental", "a_v1", stored, 128)
    assert choose_mode(kb, "full", "a_v1", stored, 128) == ("full", "requested")  # a rebuild is the fix


def test_unknown_mode_is_refused():
    with pytest.raises(KbError, match="'sideways' is not a re-index mode; fix: use one of incremental, full"):
        check_mode("sideways")


def test_too_many_changed_documents_turn_into_a_rebuild():
    kb = _kb(incremental_max_changed_ratio=0.5)
    plans = {"a": DocPlan("embed"), "b": DocPlan("embed"), "c": DocPlan("repair"), "d": DocPlan("skip")}
    assert too_many_changes(kb, plans) is None  # 2/4 changed is not above 0.5 (a repair is no change)
    plans["d"] = DocPlan("embed")
    assert too_many_changes(kb, plans) == "3/4 documents changed, above incremental_max_changed_ratio 0.5"
    assert too_many_changes(kb, {}) is None


def test_orphans_are_stored_documents_the_source_no_longer_lists_except_unreadable_ones():
    records = {"kept.md": _rows(["a"], "kept.md"), "gone.md": _rows(["a", "b"], "gone.md"),
               "broken.pdf": _rows(["a"], "broken.pdf")}
    removed = orphans(records, {"kept.md", "new.md"}, {"broken.pdf"})
    assert list(removed) == ["gone.md"]
    assert removed["gone.md"].primary_keys() == [chunk_key("gone.md", 0), chunk_key("gone.md", 1)]


def test_summary_counts_writes_the_same_way_for_a_dry_run_and_a_real_run():
    summary = RunSummary(kb="k", requested_mode="incremental")
    summary.tally(plan_writes("new.md", "h", DocPlan("embed"), ["a", "b"]))
    summary.tally(plan_writes("d.md", "h2", plan_document("h2", _rows(["a", "b", "c"])), ["a", "x"]))
    record = _rows(["a", "b", "c"])
    del record.rows[1]
    summary.tally(plan_writes("d.md", "h", plan_document("h", record), ["a", "b", "c"]))
    summary.tally_orphans({"gone.md": _rows(["a", "b"], "gone.md")})
    assert (summary.embedded_documents, summary.embedded_chunks, summary.reused_chunks) == (2, 3, 1)
    assert (summary.repaired_chunks, summary.deleted_documents, summary.deleted_chunks) == (1, 1, 3)


def test_dry_run_estimate_is_chunks_over_the_measured_rate():
    summary = RunSummary(kb="k", requested_mode="full", dry_run=True, chunks_to_embed=300)
    summary.estimate(12.345)
    assert (summary.embed_rate, summary.estimated_s) == (12.35, 24.3)
    assert "[dry run, nothing written: 300 chunks to embed, about 24 s]" in summary.line()
    assert "would_embed=0 docs/0 chunks" in summary.line() and " embedded=" not in summary.line()
    for rate in (None, 0.0, 0.001):  # no embedder, or too slow to measure: no estimate rather than a division by 0
        summary.estimate(rate)
        assert summary.embed_rate is None and summary.estimated_s is None


def test_next_version_never_reuses_a_number():
    assert next_version([]) == 1
    assert next_version([2, 3]) == 4
    assert next_version([1], floor=3) == 4  # v2, v3 were dropped leftovers: their numbers are not handed out again


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


def test_embedder_backend_is_in_the_fingerprint_and_the_default_keeps_existing_collections_current():
    kb = _kbs()["product-docs"]
    assert config_fingerprint(kb)["embedder"] == {"kind": "sentence-transformers", "model": "all-MiniLM-L6-v2"}
    onnx = kb.model_copy(update={"embedder": kb.embedder.model_copy(update={"backend": "onnx"})})
    int8 = kb.model_copy(update={"embedder": onnx.embedder.model_copy(update={"quantize": "int8"})})
    prints = [config_fingerprint(k)["embedder"] for k in (kb, onnx, int8)]
    assert prints[1]["backend"] == "onnx" and prints[2]["backend"] == "onnx-int8" and len(set(map(str, prints))) == 3


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
    assert "docs: dry run: would embed 11 documents and 30 chunks, about 2 s at the embedder's measured 12.0 chunks/s" \
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


def test_milvus_uri_resolution(tmp_path):
    assert resolve_uri("http://127.0.0.1:19530", tmp_path) == "http://127.0.0.1:19530"
    assert resolve_uri("kb.db", tmp_path) == str(tmp_path / "milvus" / "kb.db")
    assert (tmp_path / "milvus").is_dir()


def test_the_reindex_job_opens_milvus_with_the_declared_token_only(tmp_path, monkeypatch):
    """The token reaches the job as MILVUS_TOKEN (the step's secret_env from the knowledge base's
    milvus.connection_id), never by parsing an AIRFLOW_CONN_* variable. `connect` is replaced by a recorder:
    no Milvus with authentication runs here."""
    from llmops.jobs import kb_reindex
    from llmops.kb import index

    seen = []
    monkeypatch.setattr(index, "connect", lambda uri, home, token=None, server="": seen.append(token) or object())
    kb = KnowledgeBase.model_validate({"name": "k", "alias": "k", "source": {"uri": "docs"},
                                       "milvus": {"uri": "http://127.0.0.1:1"}})
    monkeypatch.delenv("MILVUS_TOKEN", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_DEFAULT", json.dumps({"conn_type": "generic", "password": "not-read"}))
    get_settings.cache_clear()
    kb_reindex.open_index(kb)
    monkeypatch.setenv("MILVUS_TOKEN", "root:Milvus")
    get_settings.cache_clear()
    kb_reindex.open_index(kb)
    assert seen == [None, "root:Milvus"]
    assert "root:Milvus" not in repr(get_settings())


def test_a_run_that_found_its_knowledge_base_already_running_is_reported_not_failed():
    result = {"kb": "docs", "mode": "full", "already_running": True,
              "reason": "knowledge base alias docs is being re-indexed by pod-b pid 7 home /h"}
    items = outcomes(["docs"], [result])
    assert items == [("docs", result)]  # a result, not a failure: the report does not fail the run
    assert "docs                 skipped      already running elsewhere" in format_report(items)
