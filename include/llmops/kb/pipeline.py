"""Re-index one knowledge base: incremental upserts with reconciliation, or a blue/green full build.

Incremental: list and hash the source; read what the live collection holds; embed only new or
changed documents (and the missing chunks of unchanged ones); upsert first, then delete chunks that
no longer exist; delete the chunks of documents that left the source. A changed embedder or chunking
(the fingerprint stored on the collection) turns the run into a full build instead of mixing vectors.

Full: build `<alias>_v<N+1>`, validate it (row count read with Strong consistency, golden-query
recall@k), move the alias in one call, keep `retention` versions. The live alias is touched only by
that one call, so a failed or killed build leaves readers on the old version.

What to do is decided by the pure functions of `llmops.kb.plan` (per-document plans from the stored rows,
the mode, the rows to embed, keep and delete, the counts); this module performs it: it lists and reads the
source, chunks, embeds, writes to and deletes from Milvus, and reports progress.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from llmops.hashing import sha256_stream
from llmops.kb.chunking import chunk_lines
from llmops.kb.embedders import Embedder, LazyEmbedder
from llmops.kb.errors import (
    DimensionMismatchError,
    DocumentError,
    KbError,
    SourceNotFoundError,
    Stopped,
)
from llmops.kb.index import KbIndex
from llmops.kb.loaders import load_lines
from llmops.kb.plan import (
    EMBED,
    SKIP,
    DocPlan,
    DocRecord,
    DocWrite,
    RunSummary,
    check_mode,
    choose_mode,
    config_fingerprint,
    next_version,
    orphans,
    plan_document,
    plan_writes,
    too_many_changes,
)
from llmops.kb.progress import Progress, duration
from llmops.kb.sources import SourceDocument, open_source

log = logging.getLogger(__name__)


class _Writer:
    """Batches documents' rows, embeds them and upserts them; counts progress at the embedder's batch size.

    Rows are upserted `flush_at` at a time. Within a flush the texts are embedded `embed_batch` at a time,
    longest first (the order sentence-transformers itself uses inside one call, so the work is the same),
    and every embedded batch moves the heartbeat's chunk count: a small knowledge base shows progress too.
    """

    def __init__(self, index: KbIndex, collection: str, embedder: Embedder, flush_at: int, embed_batch: int,
                 progress: Progress):
        self.index, self.collection, self.embedder = index, collection, embedder
        self.flush_at, self.embed_batch = flush_at, max(embed_batch, 1)
        self.progress = progress
        self.pending: list[dict] = []
        self.kept: list[dict] = []  # unchanged chunks of changed documents: stored vector, new metadata
        self.pending_docs = 0
        self.written = 0

    def add(self, write: DocWrite) -> None:
        self.pending.extend(write.embed)
        self.kept.extend(write.keep)
        self.pending_docs += 1
        if len(self.pending) + len(self.kept) >= self.flush_at:
            self.flush()

    def flush(self) -> None:
        if self.kept:
            vectors = self.index.vectors(self.collection, [row["pk"] for row in self.kept])
            for row in self.kept:
                if row["pk"] in vectors:
                    row["vector"] = vectors[row["pk"]]
                else:  # deleted meanwhile: embed it after all
                    self.pending.append(row)
            kept = [row for row in self.kept if "vector" in row]
            self.index.upsert(self.collection, kept)
            self.written += len(kept)
            self.kept = []
        if self.pending:
            ordered = sorted(self.pending, key=lambda row: -len(row["text"]))
            for start in range(0, len(ordered), self.embed_batch):
                batch = ordered[start:start + self.embed_batch]
                vectors = self.embedder.embed([row["text"] for row in batch])
                if vectors and len(vectors[0]) != self.embedder.dimension:
                    raise DimensionMismatchError(
                        f"embedder {self.embedder.kind}:{self.embedder.model} returned {len(vectors[0])}-d vectors, "
                        f"announced {self.embedder.dimension}", fix="check the model")
                for row, vector in zip(batch, vectors, strict=True):
                    row["vector"] = vector
                self.progress.advance(chunks=len(batch), chars=sum(len(row["text"]) for row in batch))
            self.index.upsert(self.collection, self.pending)
            self.written += len(self.pending)
        self.progress.advance(documents=self.pending_docs)
        self.pending, self.pending_docs = [], 0


def _chunks(doc: SourceDocument, kb) -> list[str]:
    lines = load_lines(doc, dict(kb.loaders))
    return list(chunk_lines(lines, kb.chunking.size, kb.chunking.overlap, kb.chunking.markdown_aware))


def _list_and_hash(kb, summary: RunSummary, progress: Progress) -> dict[str, tuple[SourceDocument, str]]:
    progress.set_phase("listing documents")
    source = open_source(kb.source)
    limit = int(kb.source.max_document_mib * 1024 * 1024)
    docs = []
    for doc in source.list():
        if doc.size > limit:
            summary.excluded.append({"doc": doc.doc_id, "error": (
                f"is {doc.size / 2**20:.1f} MiB, above source.max_document_mib {kb.source.max_document_mib:g}; "
                "fix: split the document or raise source.max_document_mib in knowledge_bases.yaml")})
        else:
            docs.append(doc)
    summary.excluded[:0] = getattr(source, "excluded", [])
    if not docs:
        excluded = f" ({len(summary.excluded)} excluded: {summary.excluded[0]['doc']} {summary.excluded[0]['error']})" \
            if summary.excluded else ""
        raise SourceNotFoundError(
            f"knowledge base {kb.name}: source {source.describe()} lists no document matching "
            f"{list(kb.source.include)}{excluded}; refusing to treat an empty source as 'delete everything'",
            fix="check source.uri and source.include in knowledge_bases.yaml")
    hashed: dict[str, tuple[SourceDocument, str]] = {}
    progress.set_phase("hashing documents", docs_total=len(docs))
    for doc in docs:
        try:
            with doc.open() as stream:
                hashed[doc.doc_id] = (doc, sha256_stream(stream)[0])
        except OSError as exc:
            summary.failed.append({"doc": doc.doc_id, "error": f"cannot be read ({exc.strerror or exc}); "
                                   "fix: check that the file exists and is readable"})
        progress.advance(1)
    summary.documents = len(docs)
    log.info("%s: %d documents listed in %s (%d unreadable, %d excluded)", kb.name, len(docs), source.describe(),
             len(summary.failed), len(summary.excluded))
    for item in summary.excluded:
        log.warning("%s: excluded %s: %s", kb.name, item["doc"], item["error"])
    return hashed


def _check_golden(kb, listed: set[str]) -> None:
    unknown = [q.expected_document for q in kb.golden_queries if q.expected_document not in listed]
    if unknown:
        raise KbError(f"knowledge base {kb.name}: golden queries expect {', '.join(sorted(set(unknown)))} which the "
                      "source does not contain", fix="correct golden_queries[].expected_document "
                      "(a path relative to the source root)")


_CACHE_CHARS = 64 * 2**20  # chunk texts kept between the counting and the embedding pass; beyond, re-read


@dataclass
class _Work:
    """One document to write: its plan, how many chunks it embeds, and its rows when they fit the cache."""

    doc_id: str
    plan: DocPlan
    n_embed: int
    chars: int  # characters to embed (what the ETA is weighted by)
    write: DocWrite | None  # cached from the counting pass, or None (chunked again when written)


def _plan_writes(kb, hashed, doc_id: str, plan: DocPlan) -> DocWrite:
    doc, doc_hash = hashed[doc_id]
    return plan_writes(doc_id, doc_hash, plan, _chunks(doc, kb))


def _count(kb, hashed, plans: dict[str, DocPlan], summary: RunSummary, progress: Progress,
           sample: list[str], dry_run: bool) -> list[_Work]:
    """Chunk every document to write and count the chunks to embed (the heartbeat's total, the dry run's size;
    a dry run also tallies here what the writes would be)."""
    progress.set_phase("counting chunks", docs_total=len(plans))
    work: list[_Work] = []
    cached = 0
    for doc_id, plan in plans.items():
        try:
            write = _plan_writes(kb, hashed, doc_id, plan)
        except DocumentError as exc:
            summary.failed.append({"doc": doc_id, "error": str(exc)})
            progress.advance(1)
            continue
        if len(sample) < 64:
            sample.extend(row["text"] for row in (write.embed + write.keep)[:64 - len(sample)])
        size = sum(len(row["text"]) for row in write.embed + write.keep)
        keep = cached + size <= _CACHE_CHARS
        cached += size if keep else 0
        work.append(_Work(doc_id, plan, write.n_embed, sum(len(row["text"]) for row in write.embed),
                          write if keep else None))
        if dry_run:
            summary.tally(write)
        progress.advance(1)
    summary.chunks_to_embed = sum(item.n_embed for item in work)
    return work


def _write(kb, index: KbIndex, collection: str, embedder: Embedder, hashed, work: list[_Work],
           summary: RunSummary, progress: Progress) -> tuple[_Writer, list[str]]:
    """Embed and upsert every document's rows (both modes); return the writer and the keys to delete after."""
    writer = _Writer(index, collection, embedder, max(kb.embedder.batch_size * 4, 64), kb.embedder.batch_size,
                     progress)
    stale: list[str] = []
    for item in work:
        try:
            write = item.write or _plan_writes(kb, hashed, item.doc_id, item.plan)
        except DocumentError as exc:
            summary.failed.append({"doc": item.doc_id, "error": str(exc)})
            progress.advance(1)
            continue
        writer.add(write)
        summary.tally(write)
        stale.extend(write.stale)
    writer.flush()
    return writer, stale


def known_dimension(embedder: Embedder | None) -> int | None:
    """The embedder's dimension as far as it is known without loading a model: a lazy embedder not loaded yet
    gives its planned dimension (registry or model files), any other its own; None without an embedder."""
    if embedder is None:
        return None
    if isinstance(embedder, LazyEmbedder) and not embedder.loaded:
        return embedder.planned_dimension
    return embedder.dimension


def measure_rate(embedder: Embedder, sample: list[str]) -> float | None:
    """Chunks per second of `embedder` on up to 64 of this run's own chunks, after one warm-up call."""
    if not sample:
        return None
    embedder.embed(sample[:4])
    started = time.monotonic()
    embedder.embed(sample)
    return len(sample) / max(time.monotonic() - started, 1e-9)


def _estimate(summary: RunSummary, embedder: Embedder | None, sample: list[str], progress: Progress) -> None:
    if embedder is not None and summary.chunks_to_embed:
        progress.set_phase("measuring the embedder's rate")
        summary.estimate(measure_rate(embedder, sample))
    log.info("%s: dry run: would embed %d documents and %d chunks%s", summary.kb, summary.embedded_documents,
             summary.chunks_to_embed,
             f"; the embedder does {summary.embed_rate:.1f} chunks/s here, so about {duration(summary.estimated_s)}"
             if summary.embed_rate else "" if summary.chunks_to_embed == 0 else
             " (no embedder given: no time estimate)")


def reindex(kb, mode: str, *, index: KbIndex, embedder: Embedder | None, dry_run: bool = False,
            progress_every_s: float = 5.0, progress: Progress | None = None) -> RunSummary:
    """Re-index `kb` (a KnowledgeBase registry entry). `embedder` may be None only for a dry run (then without
    a time estimate). A heartbeat reports progress every `progress_every_s` seconds (or through `progress`).

    Stopped (SIGTERM, see llmops.jobs.kb_reindex) it logs what was done and drops the unfinished version of a
    full build; whatever a harder kill leaves (an unpublished version) is dropped by the next run of any mode.
    """
    check_mode(mode)
    if progress is None:
        with Progress(kb.name, progress_every_s) as own:
            return reindex(kb, mode, index=index, embedder=embedder, dry_run=dry_run, progress=own)
    started = time.monotonic()
    summary = RunSummary(kb=kb.name, requested_mode=mode, dry_run=dry_run)
    try:
        _reindex(kb, mode, index, embedder, dry_run, progress, summary)
    except Stopped:
        summary.duration_s = round(time.monotonic() - started, 3)
        log.warning("%s: stopped while %s; done so far: %s", kb.name, progress.line().split(": ", 1)[-1],
                    summary.line())
        raise
    summary.duration_s = round(time.monotonic() - started, 3)
    if summary.embedded_chunks and not dry_run:
        summary.embed_rate = round(summary.embedded_chunks / max(summary.duration_s, 1e-9), 2)
    log.info("summary %s", summary.line())
    for failure in summary.failed:
        log.warning("%s: skipped %s: %s", kb.name, failure["doc"], failure["error"])
    return summary


def _reindex(kb, mode: str, index: KbIndex, embedder: Embedder | None, dry_run: bool, progress: Progress,
             summary: RunSummary) -> None:
    hashed = _list_and_hash(kb, summary, progress)
    _check_golden(kb, set(hashed) | {f["doc"] for f in summary.failed})

    progress.set_phase("reading the live collection")
    live = index.live_collection()
    summary.collection = live
    stored = index.fingerprint(live) if live else None
    effective, reason = choose_mode(kb, mode, live, stored, known_dimension(embedder))
    records: dict[str, DocRecord] = {}
    plans: dict[str, DocPlan] = {}
    if effective == "incremental":
        index.ensure_loaded(live)  # a reopened Milvus Lite file starts released
        records = index.scan(live)
        plans = {doc_id: plan_document(doc_hash, records.get(doc_id)) for doc_id, (_, doc_hash) in hashed.items()}
        rebuild = too_many_changes(kb, plans)
        if rebuild:
            effective, reason = "full", rebuild
    summary.mode, summary.reason = effective, reason
    log.info("%s: %s run (%s)%s", kb.name, effective, reason, " [dry run]" if dry_run else "")

    if effective == "incremental":
        _incremental(kb, index, live, embedder, hashed, records, plans, summary, dry_run, progress, stored)
    else:
        _full(kb, index, embedder, hashed, summary, dry_run, progress)


def _incremental(kb, index: KbIndex, live: str, embedder, hashed, records: dict[str, DocRecord],
                 plans: dict[str, DocPlan], summary: RunSummary, dry_run: bool, progress: Progress,
                 stored: dict | None) -> None:
    removed = orphans(records, set(hashed), {f["doc"] for f in summary.failed})
    todo = {doc_id: plan for doc_id, plan in plans.items() if plan.action != SKIP}
    summary.skipped_documents = len(plans) - len(todo)
    sample: list[str] = []
    work = _count(kb, hashed, todo, summary, progress, sample, dry_run)
    if dry_run:
        summary.tally_orphans(removed)
        summary.rows = index.count(live)
        _estimate(summary, embedder, sample, progress)
        return

    if summary.chunks_to_embed:  # the model loads here, and only here: a run with nothing to embed never loads it
        if embedder is None:
            raise KbError("an incremental run with chunks to embed needs an embedder",
                          fix="pass one (llmops.kb.embedders.LazyEmbedder loads it only when needed)")
        choose_mode(kb, "incremental", live, stored, embedder.dimension)  # the loaded model's own dimension
    # Whatever an earlier run left (a killed full build's unpublished version) goes first.
    summary.dropped_collections += index.drop_unpublished()
    progress.set_phase("embedding and writing", docs_total=len(work), chunks_total=summary.chunks_to_embed,
                       chars_total=sum(item.chars for item in work))
    _, stale = _write(kb, index, live, embedder, hashed, work, summary, progress)
    # Deletes come last: a document whose new chunks failed to embed keeps its old ones.
    progress.set_phase("deleting removed chunks and flushing")
    summary.tally_orphans(removed)
    index.delete_keys(live, stale + [key for record in removed.values() for key in record.primary_keys()])
    index.flush_and_load(live)
    summary.rows = index.count(live)


def _full(kb, index: KbIndex, embedder, hashed, summary: RunSummary, dry_run: bool, progress: Progress) -> None:
    seen = index.versions()
    sample: list[str] = []
    work = _count(kb, hashed, {doc_id: DocPlan(EMBED) for doc_id in hashed}, summary, progress, sample, dry_run)
    if dry_run:
        summary.collection = index.collection_name(next_version(seen))
        _estimate(summary, embedder, sample, progress)
        return
    if embedder is None:
        raise KbError("a full build needs an embedder", fix="build one with llmops.kb.embedders.build_embedder")
    summary.dropped_collections += index.drop_unpublished()
    wanted = {**config_fingerprint(kb), "dimension": embedder.dimension}
    collection = index.create_version(next_version(index.versions(), floor=max(seen, default=0)),
                                      embedder.dimension, wanted)
    summary.collection = collection
    try:
        progress.set_phase(f"embedding into {collection}", docs_total=len(work), chunks_total=summary.chunks_to_embed,
                           chars_total=sum(item.chars for item in work))
        writer, _ = _write(kb, index, collection, embedder, hashed, work, summary, progress)
        progress.set_phase(f"indexing, loading and validating {collection}")
        index.flush_and_load(collection)
        golden = []
        if kb.golden_queries:
            vectors = embedder.embed([q.query for q in kb.golden_queries])
            golden = [(q.expected_document, q.query, v) for q, v in zip(kb.golden_queries, vectors, strict=True)]
        checked = index.validate(collection, writer.written, golden, kb.top_k, kb.min_recall)
        summary.rows, summary.recall = checked["rows"], checked["recall"]
        progress.set_phase(f"moving alias {index.alias} to {collection}")
        summary.previous_collection = index.swap_alias(collection)
    except Stopped:
        if index.live_collection() != collection:  # never published: nobody reads it, nothing to keep
            index.client.drop_collection(collection)
            summary.dropped_collections.append(collection)
            log.warning("%s: dropped the unfinished %s; the alias %s still points at %s", kb.name, collection,
                        index.alias, summary.previous_collection or index.live_collection())
        raise
    summary.dropped_collections += index.apply_retention(kb.retention)


def search(kb, index: KbIndex, embedder: Embedder, query: str, limit: int | None = None) -> list[dict]:
    """Answer a query from the live alias: the top chunks with their documents and scores."""
    live = index.live_collection()
    if live is None:
        raise KbError(f"knowledge base {kb.name}: alias {index.alias} does not exist", fix="run kb_reindex first")
    index.ensure_loaded(live)
    return index.search(index.alias, embedder.embed([query]), limit or kb.top_k, queries=[query])[0]
