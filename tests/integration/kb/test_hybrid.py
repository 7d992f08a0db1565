"""Hybrid retrieval (BM25 full text + dense, fused) per knowledge base, on the real Milvus stand-ins.

Milvus Lite 3.2 (here served by `milvus-lite server`, as on the local runtime) has BM25 functions: a switch to
hybrid rebuilds the collection with an analysed `text` and a BM25 field, search fuses both rankings and
finds exact terms (tenant numbers) that the dense embedding misses, incremental upserts fill the BM25 field
too, and a switch back to dense keeps the collection. The `milvus` package's 2.3.5 standalone server has no
BM25: the job refuses it before loading a model or creating a collection, with the fix.
"""

from __future__ import annotations

import signal
import time

import pytest
from kb_helpers import job_env, start_job

from llmops.jobs import kb_reindex
from llmops.jobs._cli import parse_result
from llmops.kb.index import BM25_FIELD
from llmops.kb.pipeline import reindex
from llmops.settings import get_settings

pytestmark = pytest.mark.slow

TENANTS = range(4101, 4125)


def write_tenant_notes(root) -> None:
    """Near-identical notes told apart only by a tenant number: a dense embedding blurs them, BM25 does not."""
    notes = root / "tenants"
    notes.mkdir()
    for tenant in TENANTS:
        (notes / f"tenant-{tenant}.md").write_text(
            f"# Tenant note\n\nThe scheduler service retries failed jobs for tenant {tenant} after a short delay "
            f"and alerts the on-call team when tenant {tenant} exceeds its quota.\n")


def found(index, embedder, queries: dict[str, str], hybrid: bool, k: int = 3) -> int:
    texts = list(queries)
    hits = index.search(index.alias, embedder.embed(texts), k, ("doc_id",), queries=texts if hybrid else None)
    return sum(queries[text] in [hit["doc_id"] for hit in row] for text, row in zip(texts, hits, strict=True))


def search_cli(kb, tmp_path, milvus_uri, query, monkeypatch, capsys) -> tuple[dict, str]:
    """The CLI's search (what `scripts/kb --mode search` runs), in this process: the model is loaded already."""
    env = job_env(kb, tmp_path, LLMOPS_MILVUS_URI=milvus_uri)
    for name in ("LLMOPS_HOME", "LLMOPS_CONFIG_DIR", "LLMOPS_MILVUS_URI"):
        monkeypatch.setenv(name, env[name])
    get_settings.cache_clear()
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        status = kb_reindex.main(["--kb", kb.name, "--mode", "search", "--query", query])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
        monkeypatch.undo()
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    assert status == 0, err[-3000:]
    return parse_result(out), err


def test_hybrid_is_built_searched_and_kept_up_to_date_on_milvus_lite(make_kb, corpus, tmp_path, milvus_lite_server,
                                                                     open_index, embedder, monkeypatch, capsys):
    write_tenant_notes(corpus)
    dense_kb = make_kb()
    reindex(dense_kb, "full", index=open_index(dense_kb, milvus_lite_server), embedder=embedder)

    kb = make_kb(retrieval={"mode": "hybrid"})
    index = open_index(kb, milvus_lite_server)
    switched = reindex(kb, "incremental", index=index, embedder=embedder)
    assert switched.mode == "full" and "fingerprint changed" in switched.reason  # dense rows have no BM25 field
    assert switched.recall == 1.0  # the registry's golden queries, validated through the hybrid search
    live = index.live_collection()
    assert live == f"{kb.alias}_v2" and index.retrieval_of(kb.alias) == "hybrid"

    queries = {f"tenant {t} quota": f"tenants/tenant-{t}.md" for t in TENANTS[::3]}
    hybrid_found, dense_found = found(index, embedder, queries, True), found(index, embedder, queries, False)
    assert hybrid_found == len(queries), (hybrid_found, dense_found)
    assert dense_found < hybrid_found, "the query set no longer shows what BM25 adds; pick rarer terms"

    # An incremental upsert fills the BM25 field from the new text: found by full text alone.
    note = corpus / "tenants" / "tenant-4101.md"
    note.write_text(note.read_text() + "\nTenant 4101 moved to the zanzibar region.\n")
    update = reindex(kb, "incremental", index=index, embedder=embedder)
    assert update.mode == "incremental" and update.embedded_documents == 1
    bm25 = index.client.search(kb.alias, data=["zanzibar"], anns_field=BM25_FIELD, limit=3, output_fields=["doc_id"],
                               search_params={"metric_type": "BM25"}, consistency_level="Strong")[0]
    assert [hit["entity"]["doc_id"] for hit in bm25] == ["tenants/tenant-4101.md"]

    # The CLI's search uses the hybrid knowledge base and says so.
    result, log = search_cli(kb, tmp_path, milvus_lite_server, "which region is tenant 4101 in?", monkeypatch, capsys)
    assert result["retrieval"] == "hybrid" and result["hits"][0]["doc_id"] == "tenants/tenant-4101.md", result
    assert "(hybrid retrieval)" in log

    # Back to dense: the ranker is a search-time choice and dense search ignores the BM25 field: no rebuild.
    back = reindex(dense_kb, "incremental", index=open_index(dense_kb, milvus_lite_server), embedder=embedder)
    assert back.mode == "incremental" and back.collection == live


def test_hybrid_on_a_milvus_without_bm25_fails_before_any_model_load(make_kb, tmp_path, milvus_server, open_index):
    kb = make_kb(retrieval={"mode": "hybrid", "ranker": "weighted", "dense_weight": 0.7})
    started = time.monotonic()
    job = start_job(["--kb", kb.name, "--mode", "full", "--milvus-uri", milvus_server], job_env(kb, tmp_path))
    output = job.communicate(timeout=180)[0]
    assert job.returncode == 2, output  # permanent: a retry would fail the same way
    assert "retrieval.mode 'hybrid' needs BM25 full-text search" in output and "v2.3.5" in output, output
    assert "fix: point milvus.uri" in output and "retrieval.mode: dense" in output
    assert "loading the embedder" not in output and "sentence_transformers" not in output
    assert open_index(kb, milvus_server).versions() == []  # nothing was created
    assert time.monotonic() - started < 120
