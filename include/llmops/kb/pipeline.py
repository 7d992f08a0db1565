"""Re-index one knowledge base: incremental upserts with reconciliation, or a blue/green full build.

Incremental: list and hash the source; read what the live collection holds; embed only new or
changed documents (and the missing chunks of unchanged ones); upsert first, then delete chunks that
no longer exist; delete the chunks of documents that left the source. A changed embedder or chunking
(the fingerprint stored on the collection) turns the run into a full build instead of mixing vectors.

Full: build `<alias>_v<N+1>`, validate it (row count read with Strong consistency, golden-query
recall@k), move the alias in one call, keep `retention` versions. The live alias is touched only by
that one call, so a failed or killed build leaves readers on the old version.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmops.hashing import sha256_stream
from llmops.kb.chunking import chunk_lines
from llmops.kb.embedders import Embedder
from llmops.kb.errors import (
    DimensionMismatchError,
    DocumentError,
    KbBusyError,
    KbError,
    SourceNotFoundError,
    Stopped,
)
from llmops.kb.index import TEXT_MAX_BYTES, DocRecord, KbIndex
from llmops.kb.keys import chunk_key, text_hash
from llmops.kb.loaders import load_lines
from llmops.kb.progress import Progress, duration
from llmops.kb.runs import REINDEX_MODES
from llmops.kb.sources import SourceDocument, open_source

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # row layout; a collection of another layout is rebuilt, not patched


@dataclass
class RunSummary:
    kb: str
    requested_mode: str
    mode: str = ""
    reason: str = ""
    dry_run: bool = False
    collection: str | None = None
    previous_collection: str | None = None
    documents: int = 0
    embedded_documents: int = 0
    embedded_chunks: int = 0
    reused_chunks: int = 0
    skipped_documents: int = 0
    deleted_documents: int = 0
    deleted_chunks: int = 0
    repaired_chunks: int = 0
    chunks_to_embed: int = 0  # counted before embedding (a dry run's estimate is based on it)
    embed_rate: float | None = None  # chunks/s measured on this run's chunks (dry run) or achieved (real run)
    estimated_s: float | None = None  # dry run: chunks_to_embed / embed_rate
    failed: list[dict] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)  # refused by policy (links, size): treated as absent
    rows: int | None = None
    recall: float | None = None
    dropped_collections: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        return (f"{self.kb}: mode={self.mode} ({self.reason}) collection={self.collection} "
                f"documents={self.documents} embedded={self.embedded_documents} docs/{self.embedded_chunks} chunks "
                f"(+{self.reused_chunks} unchanged chunks kept) "
                f"skipped={self.skipped_documents} deleted={self.deleted_documents} docs/{self.deleted_chunks} chunks "
                f"repaired={self.repaired_chunks} chunks failed={len(self.failed)} excluded={len(self.excluded)} "
                f"rows={self.rows} "
                f"recall={self.recall} duration={self.duration_s:.1f}s" + (
                    f" [dry run: {self.chunks_to_embed} chunks to embed, about {duration(self.estimated_s)}]"
                    if self.dry_run else ""))


@dataclass
class DocPlan:
    """What an incremental run does with one listed document."""

    action: str  # "skip" | "embed" (new or changed: all chunks) | "repair" (same content: missing chunks only)
    indexes: set[int] | None = None  # for "repair": chunk indexes to embed
    stale_keys: list[str] = field(default_factory=list)  # rows to delete after the writes
    old_keys: dict[int, str] = field(default_factory=dict)  # for "embed": existing rows by chunk index
    old_chunks: dict[int, str] = field(default_factory=dict)  # for "embed": stored chunk_hash by chunk index


def config_fingerprint(kb) -> dict:
    """What the vectors in a collection depend on, besides the documents (dimension is added when built)."""
    return {"schema": SCHEMA_VERSION, "embedder": {"kind": kb.embedder.kind, "model": kb.embedder.model},
            "chunking": {"size": kb.chunking.size, "overlap": kb.chunking.overlap,
                         "markdown_aware": kb.chunking.markdown_aware}}


def plan_document(doc_hash: str, record: DocRecord | None) -> DocPlan:
    """Decide from the rows in the store alone whether a document is current, changed or damaged."""
    if record is None or not record.rows:
        return DocPlan("embed")
    current = {idx: row[2] for idx, row in record.rows.items() if row[1] == doc_hash}
    counts = set(current.values())
    if not current or len(counts) != 1:
        return DocPlan("embed", old_keys={idx: row[0] for idx, row in record.rows.items()},
                       old_chunks={idx: row[3] for idx, row in record.rows.items()})
    n_chunks = counts.pop()
    missing = set(range(n_chunks)) - set(current)
    stale = [row[0] for idx, row in record.rows.items() if idx >= n_chunks]
    if not missing and not stale:
        return DocPlan("skip")
    return DocPlan("repair", indexes=missing, stale_keys=stale)


@contextlib.contextmanager
def kb_lock(home: Path, name: str) -> Iterator[None]:
    """One run per knowledge base at a time on this machine (the DAG also limits it; this covers CLI runs)."""
    lock_dir = home / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"kb-{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KbBusyError(f"knowledge base {name!r} is being re-indexed by another process; "
                              "fix: wait for that run to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fit_text(text: str) -> str:
    encoded = text.encode("utf-8")
    return text if len(encoded) <= TEXT_MAX_BYTES else encoded[:TEXT_MAX_BYTES].decode("utf-8", "ignore")


class _Writer:
    """Batches chunks across documents, embeds a batch at once and upserts it."""

    def __init__(self, index: KbIndex, collection: str, embedder: Embedder, batch: int, progress: Progress):
        self.index, self.collection, self.embedder = index, collection, embedder
        self.batch = batch
        self.progress = progress
        self.pending: list[dict] = []
        self.carried: list[dict] = []  # unchanged chunks of changed documents: stored vector, new metadata
        self.pending_docs = 0
        self.written = 0
        self.embedded = 0

    def add(self, doc_id: str, doc_hash: str, chunks: list[str], indexes: set[int] | None,
            stored: dict[int, str] | None = None) -> tuple[int, int]:
        """Queue a document's chunks; return (chunks to embed, chunks whose stored vector is kept)."""
        embedded = carried = 0
        for idx, text in enumerate(chunks):
            if indexes is not None and idx not in indexes:
                continue
            row = {"pk": chunk_key(doc_id, idx), "doc_id": doc_id, "doc_hash": doc_hash, "chunk_index": idx,
                   "n_chunks": len(chunks), "chunk_hash": text_hash(text), "text": _fit_text(text)}
            if stored and stored.get(idx) == row["chunk_hash"]:
                self.carried.append(row)
                carried += 1
            else:
                self.pending.append(row)
                embedded += 1
        self.pending_docs += 1
        if len(self.pending) + len(self.carried) >= self.batch:
            self.flush()
        return embedded, carried

    def flush(self) -> None:
        if self.carried:
            vectors = self.index.vectors(self.collection, [row["pk"] for row in self.carried])
            for row in self.carried:
                if row["pk"] in vectors:
                    row["vector"] = vectors[row["pk"]]
                else:  # deleted meanwhile: embed it after all
                    self.pending.append(row)
            self.carried = [row for row in self.carried if "vector" in row]
            self.index.upsert(self.collection, self.carried)
            self.written += len(self.carried)
            self.carried = []
        if self.pending:
            self.embedded += len(self.pending)
            vectors = self.embedder.embed([row["text"] for row in self.pending])
            if vectors and len(vectors[0]) != self.embedder.dimension:
                raise DimensionMismatchError(
                    f"embedder {self.embedder.kind}:{self.embedder.model} returned {len(vectors[0])}-d vectors, "
                    f"announced {self.embedder.dimension}; fix: check the model")
            for row, vector in zip(self.pending, vectors, strict=True):
                row["vector"] = vector
            self.index.upsert(self.collection, self.pending)
            self.written += len(self.pending)
        self.progress.advance(self.pending_docs, len(self.pending))
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
            f"{list(kb.source.include)}{excluded}; refusing to treat an empty source as 'delete everything'; "
            "fix: check source.uri and source.include in knowledge_bases.yaml")
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
                      "source does not contain; fix: correct golden_queries[].expected_document "
                      "(a path relative to the source root)")


_CACHE_CHARS = 64 * 2**20  # chunk texts kept between the counting and the embedding pass; beyond, re-read


@dataclass
class _Work:
    """One document to write: its plan settled against its current chunks, and how many chunks to embed."""

    doc_id: str
    doc_hash: str
    plan: DocPlan
    to_embed: int
    chunks: list[str] | None  # cached from the counting pass, or None (read again when written)


def _settle(plan: DocPlan, chunks: list[str], record: DocRecord | None) -> DocPlan:
    """A repair whose stored chunk count disagrees with the chunker's is redone as a full embed of the document."""
    if plan.action == "repair" and record is not None and len(chunks) != next(iter(record.rows.values()))[2]:
        return DocPlan("embed", old_keys={i: r[0] for i, r in record.rows.items()},
                       old_chunks={i: r[3] for i, r in record.rows.items()})
    return plan


def _to_embed(plan: DocPlan, chunks: list[str]) -> int:
    if plan.action == "repair":
        return len([idx for idx in (plan.indexes or ()) if idx < len(chunks)])
    return sum(1 for idx, text in enumerate(chunks) if plan.old_chunks.get(idx) != text_hash(text))


def _count(kb, hashed, plans: dict[str, DocPlan], records, summary: RunSummary, progress: Progress,
           sample: list[str]) -> list[_Work]:
    """Chunk every document to write and count the chunks to embed (the heartbeat's total, the dry run's size)."""
    progress.set_phase("counting chunks", docs_total=len(plans))
    work: list[_Work] = []
    cached = 0
    for doc_id, plan in plans.items():
        doc, doc_hash = hashed[doc_id]
        try:
            chunks = _chunks(doc, kb)
        except DocumentError as exc:
            summary.failed.append({"doc": doc_id, "error": str(exc)})
            progress.advance(1)
            continue
        plan = _settle(plan, chunks, records.get(doc_id))
        to_embed = _to_embed(plan, chunks)
        if len(sample) < 64:
            sample.extend(chunks[:64 - len(sample)])
        size = sum(len(text) for text in chunks)
        keep = cached + size <= _CACHE_CHARS
        cached += size if keep else 0
        work.append(_Work(doc_id, doc_hash, plan, to_embed, chunks if keep else None))
        progress.advance(1)
    summary.chunks_to_embed = sum(item.to_embed for item in work)
    return work


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
        summary.embed_rate = round(measure_rate(embedder, sample) or 0.0, 2) or None
        if summary.embed_rate:
            summary.estimated_s = round(summary.chunks_to_embed / summary.embed_rate, 1)
    log.info("%s: dry run: %d documents and %d chunks to embed%s", summary.kb, summary.embedded_documents,
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
    if mode not in REINDEX_MODES:
        raise KbError(f"mode {mode!r} is not a re-index mode; fix: use one of {', '.join(REINDEX_MODES)}")
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
    wanted = config_fingerprint(kb)
    live = index.live_collection()
    summary.collection = live
    effective, reason = mode, "requested"
    if mode == "incremental":
        stored = index.fingerprint(live) if live else None
        if live is None:
            effective, reason = "full", f"alias {index.alias} does not exist yet"
        elif stored is None or {k: stored.get(k) for k in wanted} != wanted:
            effective, reason = "full", f"fingerprint changed: {stored} -> {wanted}"
        elif embedder is not None and stored.get("dimension") != embedder.dimension:
            raise DimensionMismatchError(
                f"knowledge base {kb.name}: embedder {embedder.kind}:{embedder.model} produces {embedder.dimension}-d "
                f"vectors but the live collection {live} holds {stored.get('dimension')}-d vectors of the same model "
                "name; nothing was written; fix: if the model behind the name changed, give the embedder a new "
                "model name (that forces a full rebuild) or run with --mode full")
    if effective == "incremental":
        index.ensure_loaded(live)  # a reopened Milvus Lite file starts released
        records = index.scan(live)
        plans = {doc_id: plan_document(doc_hash, records.get(doc_id)) for doc_id, (_, doc_hash) in hashed.items()}
        changed = sum(1 for plan in plans.values() if plan.action == "embed")
        if hashed and changed / len(hashed) > kb.incremental_max_changed_ratio:
            effective = "full"
            reason = (f"{changed}/{len(hashed)} documents changed, above incremental_max_changed_ratio "
                      f"{kb.incremental_max_changed_ratio}")
        else:
            reason = "fingerprint unchanged"
    summary.mode, summary.reason = effective, reason
    log.info("%s: %s run (%s)%s", kb.name, effective, reason, " [dry run]" if dry_run else "")

    if effective == "incremental":
        _incremental(kb, index, live, embedder, hashed, records, plans, summary, dry_run, progress)
    else:
        _full(kb, index, embedder, hashed, summary, dry_run, progress)


def _incremental(kb, index: KbIndex, live: str, embedder, hashed, records, plans, summary: RunSummary,
                 dry_run: bool, progress: Progress) -> None:
    unreadable = {f["doc"] for f in summary.failed}
    orphans = {doc_id: record for doc_id, record in records.items()
               if doc_id not in hashed and doc_id not in unreadable}
    todo = {doc_id: plan for doc_id, plan in plans.items() if plan.action != "skip"}
    summary.skipped_documents = len(plans) - len(todo)
    summary.deleted_documents = len(orphans)
    sample: list[str] = []
    work = _count(kb, hashed, todo, records, summary, progress, sample)
    if dry_run:
        summary.embedded_documents = sum(1 for item in work if item.plan.action == "embed")
        summary.repaired_chunks = sum(item.to_embed + len(item.plan.stale_keys) for item in work
                                      if item.plan.action == "repair")
        summary.deleted_chunks = sum(len(r.rows) for r in orphans.values())
        summary.rows = index.count(live)
        _estimate(summary, embedder, sample, progress)
        return

    # Whatever an earlier run left (a killed full build's unpublished version) goes first.
    summary.dropped_collections += index.drop_unpublished()
    progress.set_phase("embedding and writing", docs_total=len(work), chunks_total=summary.chunks_to_embed)
    writer = _Writer(index, live, embedder, max(kb.embedder.batch_size * 4, 64), progress)
    stale: list[str] = []
    for item in work:
        doc, doc_hash = hashed[item.doc_id]
        try:
            chunks = item.chunks if item.chunks is not None else _chunks(doc, kb)
        except DocumentError as exc:
            summary.failed.append({"doc": item.doc_id, "error": str(exc)})
            progress.advance(1)
            continue
        plan = _settle(item.plan, chunks, records.get(item.doc_id))
        if plan.action == "repair":
            embedded, _ = writer.add(item.doc_id, doc_hash, chunks, plan.indexes)
            summary.repaired_chunks += embedded + len(plan.stale_keys)
            stale.extend(plan.stale_keys)
            continue
        summary.embedded_documents += 1
        embedded, carried = writer.add(item.doc_id, doc_hash, chunks, None, plan.old_chunks)
        summary.embedded_chunks += embedded
        summary.reused_chunks += carried
        shrunk = [pk for idx, pk in plan.old_keys.items() if idx >= len(chunks)]
        summary.deleted_chunks += len(shrunk)
        stale.extend(shrunk)
    writer.flush()
    # Deletes come last: a document whose new chunks failed to embed keeps its old ones.
    progress.set_phase("deleting removed chunks and flushing")
    orphan_keys = [row[0] for record in orphans.values() for row in record.rows.values()]
    summary.deleted_chunks += len(orphan_keys)
    index.delete_keys(live, stale + orphan_keys)
    index.flush_and_load(live)
    summary.rows = index.count(live)


def _full(kb, index: KbIndex, embedder, hashed, summary: RunSummary, dry_run: bool, progress: Progress) -> None:
    versions = index.versions()
    next_version = (versions[-1] + 1) if versions else 1
    sample: list[str] = []
    work = _count(kb, hashed, {doc_id: DocPlan("embed") for doc_id in hashed}, {}, summary, progress, sample)
    if dry_run:
        summary.embedded_documents = len(work)
        summary.collection = index.collection_name(next_version)
        _estimate(summary, embedder, sample, progress)
        return
    if embedder is None:
        raise KbError("a full build needs an embedder; fix: build one with llmops.kb.embedders.build_embedder")
    summary.dropped_collections += index.drop_unpublished()
    versions = index.versions()
    next_version = max([next_version - 1, *versions]) + 1
    wanted = {**config_fingerprint(kb), "dimension": embedder.dimension}
    collection = index.create_version(next_version, embedder.dimension, wanted)
    summary.collection = collection
    try:
        progress.set_phase(f"embedding into {collection}", docs_total=len(work), chunks_total=summary.chunks_to_embed)
        writer = _Writer(index, collection, embedder, max(kb.embedder.batch_size * 4, 64), progress)
        for item in work:
            doc, doc_hash = hashed[item.doc_id]
            try:
                chunks = item.chunks if item.chunks is not None else _chunks(doc, kb)
            except DocumentError as exc:
                summary.failed.append({"doc": item.doc_id, "error": str(exc)})
                progress.advance(1)
                continue
            summary.embedded_documents += 1
            summary.embedded_chunks += writer.add(item.doc_id, doc_hash, chunks, None)[0]
        writer.flush()
        progress.set_phase(f"indexing, loading and validating {collection}")
        index.flush_and_load(collection)
        golden = []
        if kb.golden_queries:
            vectors = embedder.embed([q.query for q in kb.golden_queries])
            golden = [(q.expected_document, v) for q, v in zip(kb.golden_queries, vectors, strict=True)]
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
        raise KbError(f"knowledge base {kb.name}: alias {index.alias} does not exist; fix: run kb_reindex first")
    index.ensure_loaded(live)
    return index.search(index.alias, embedder.embed([query]), limit or kb.top_k)[0]
