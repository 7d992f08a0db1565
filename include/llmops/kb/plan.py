"""Pure decisions of a re-index: what each document needs, which mode a run takes, which rows it embeds,
keeps and deletes, and what it reports (a dry run's size and time estimate included).

Every function here is a function of its arguments: the rows the store holds (`DocRecord` of named
`StoredChunk`s), the source's content hashes and the chunker's output. Nothing opens Milvus, a file or
an embedder; `llmops.kb.pipeline` performs what these functions decide. Tested exhaustively in
tests/unit/test_kb_plan.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, NamedTuple, get_args

from llmops.kb.errors import DimensionMismatchError, KbError
from llmops.kb.keys import chunk_key, text_hash
from llmops.kb.progress import duration

#: kb_reindex modes (the DAGs' Params, the job's --mode, the DAG-run selection, this planner): `incremental` and
#: `full` re-index, `rollback` moves the alias back to the previous version
ReindexMode = Literal["incremental", "full"]
KbMode = Literal[ReindexMode, "rollback"]
REINDEX_MODES: tuple[str, ...] = get_args(ReindexMode)
KB_MODES: tuple[str, ...] = get_args(KbMode)
SCHEMA_VERSION = 2  # row layout; a collection of another layout is rebuilt, not patched
TEXT_MAX_BYTES = 65535  # the text field's max_length in the collection schema
BM25_FIELD = "text_bm25"  # hybrid retrieval: the sparse vector that Milvus' BM25 function fills from `text`
# Milvus' standard tokenizer with lowercasing (Milvus Lite 3.2 offers the standard and jieba tokenizers only).
TEXT_ANALYZER = {"type": "standard"}
BM25_FINGERPRINT = {"field": BM25_FIELD, "analyzer": TEXT_ANALYZER}  # what the rows' sparse vectors depend on

EMBED, REPAIR, SKIP = "embed", "repair", "skip"


class StoredChunk(NamedTuple):
    """One row of the store as the planner sees it (its text and vector stay in Milvus)."""

    pk: str
    doc_hash: str  # content hash of the document version the chunk was cut from
    n_chunks: int  # how many chunks that version had
    chunk_hash: str  # hash of the chunk's text: an unchanged chunk keeps its vector


@dataclass
class DocRecord:
    """What the store holds for one document: chunk_index -> StoredChunk."""

    rows: dict[int, StoredChunk] = field(default_factory=dict)

    def primary_keys(self) -> list[str]:
        return [row.pk for row in self.rows.values()]


@dataclass
class DocPlan:
    """What an incremental run does with one listed document, decided from the store's rows alone."""

    action: str  # SKIP | EMBED (new or changed: every chunk) | REPAIR (same content: missing chunks only)
    indexes: frozenset[int] = frozenset()  # REPAIR: chunk indexes to embed
    n_chunks: int = 0  # REPAIR: the chunk count the stored version has
    stale_keys: list[str] = field(default_factory=list)  # REPAIR: rows to delete once the writes are done
    old_keys: dict[int, str] = field(default_factory=dict)  # every stored row's key by chunk index
    old_chunks: dict[int, str] = field(default_factory=dict)  # every stored row's chunk_hash by chunk index


def _stored(record: DocRecord) -> dict:
    return {"old_keys": {idx: row.pk for idx, row in record.rows.items()},
            "old_chunks": {idx: row.chunk_hash for idx, row in record.rows.items()}}


def plan_document(doc_hash: str, record: DocRecord | None) -> DocPlan:
    """Decide from the rows in the store alone whether a document is current (skip), changed (embed) or
    damaged (repair: rows missing, or rows of an earlier version left beyond the current chunk count)."""
    if record is None or not record.rows:
        return DocPlan(EMBED)
    current = {idx: row.n_chunks for idx, row in record.rows.items() if row.doc_hash == doc_hash}
    counts = set(current.values())
    if not current or len(counts) != 1:
        return DocPlan(EMBED, **_stored(record))
    n_chunks = counts.pop()
    missing = frozenset(range(n_chunks)) - set(current)
    stale = [row.pk for idx, row in sorted(record.rows.items()) if idx >= n_chunks]
    if not missing and not stale:
        return DocPlan(SKIP)
    return DocPlan(REPAIR, indexes=missing, n_chunks=n_chunks, stale_keys=stale, **_stored(record))


def config_fingerprint(kb) -> dict:
    """What the vectors in a collection depend on, besides the documents (dimension is added when built).
    Hybrid adds the BM25 field: switching to hybrid rebuilds; back to dense keeps the collection (dense search
    ignores the extra field), so a dense knowledge base's fingerprint is what it was before hybrid existed."""
    fingerprint = {"schema": SCHEMA_VERSION, "embedder": kb.embedder.identity(),
                   "chunking": {"size": kb.chunking.size, "overlap": kb.chunking.overlap,
                                "markdown_aware": kb.chunking.markdown_aware}}
    if kb.retrieval.mode == "hybrid":
        fingerprint["bm25"] = BM25_FINGERPRINT
    return fingerprint


def check_mode(mode: str) -> None:
    if mode not in REINDEX_MODES:
        raise KbError(f"mode {mode!r} is not a re-index mode", fix=f"use one of {', '.join(REINDEX_MODES)}")


def choose_mode(kb, requested: str, live: str | None, stored: dict | None, dimension: int | None) -> tuple[str, str]:
    """(mode, reason) before the store's rows are read: an incremental run becomes a full build when the alias
    does not exist or the stored fingerprint differs from the registry's. `stored` is the live collection's
    fingerprint, `dimension` the embedder's (None when there is none: a dry run without estimate).

    Same model name but another dimension is refused: the model behind the name changed, and neither
    patching nor a silent rebuild is what the user meant.
    """
    check_mode(requested)
    if requested == "full":
        return "full", "requested"
    wanted = config_fingerprint(kb)
    if live is None:
        return "full", f"alias {kb.alias} does not exist yet"
    if stored is None or {key: stored.get(key) for key in wanted} != wanted:
        return "full", f"fingerprint changed: {stored} -> {wanted}"
    if dimension is not None and stored.get("dimension") != dimension:
        raise DimensionMismatchError(
            f"knowledge base {kb.name}: embedder {kb.embedder.kind}:{kb.embedder.model} produces {dimension}-d "
            f"vectors but the live collection {live} holds {stored.get('dimension')}-d vectors of the same model "
            "name; nothing was written", fix="if the model behind the name changed, give the embedder a new "
            "model name (that forces a full rebuild) or run with --mode full")
    return "incremental", "fingerprint unchanged"


def too_many_changes(kb, plans: dict[str, DocPlan]) -> str | None:
    """The reason to rebuild instead of patching when more than `incremental_max_changed_ratio` of the listed
    documents changed (a rebuild then costs about the same and keeps the old version for rollback); else None."""
    changed = sum(1 for plan in plans.values() if plan.action == EMBED)
    if plans and changed / len(plans) > kb.incremental_max_changed_ratio:
        return (f"{changed}/{len(plans)} documents changed, above incremental_max_changed_ratio "
                f"{kb.incremental_max_changed_ratio}")
    return None


def orphans(records: dict[str, DocRecord], listed: set[str], unreadable: set[str]) -> dict[str, DocRecord]:
    """Documents the store holds but the source no longer lists (an unreadable one is still listed: kept)."""
    return {doc_id: record for doc_id, record in records.items() if doc_id not in listed | unreadable}


def fit_text(text: str) -> str:
    """The text as stored: cut to the text field's byte limit on a character boundary."""
    encoded = text.encode("utf-8")
    return text if len(encoded) <= TEXT_MAX_BYTES else encoded[:TEXT_MAX_BYTES].decode("utf-8", "ignore")


def chunk_row(doc_id: str, doc_hash: str, index: int, n_chunks: int, text: str) -> dict:
    """A row to write (without its vector): the primary key is derived from (document, chunk index)."""
    return {"pk": chunk_key(doc_id, index), "doc_id": doc_id, "doc_hash": doc_hash, "chunk_index": index,
            "n_chunks": n_chunks, "chunk_hash": text_hash(text), "text": fit_text(text)}


@dataclass
class DocWrite:
    """What a run writes for one document, given its plan and its chunks as the chunker cuts them now."""

    doc_id: str
    action: str  # EMBED or REPAIR
    embed: list[dict]  # rows to embed and upsert
    keep: list[dict]  # rows of unchanged chunks of a changed document: upserted with their stored vector
    stale: list[str]  # primary keys to delete once every write is done

    @property
    def n_embed(self) -> int:
        return len(self.embed)


def plan_writes(doc_id: str, doc_hash: str, plan: DocPlan, chunks: list[str]) -> DocWrite:
    """Rows to embed, keep and delete for one document. A repair whose stored chunk count disagrees with the
    chunker's (the chunker changed without the fingerprint noticing, or the rows lie) is redone as a whole
    re-embed of the document."""
    if plan.action == SKIP:
        raise ValueError(f"{doc_id}: a skipped document writes nothing")
    n = len(chunks)
    if plan.action == REPAIR and n == plan.n_chunks:
        rows = [chunk_row(doc_id, doc_hash, idx, n, chunks[idx]) for idx in sorted(plan.indexes)]
        return DocWrite(doc_id, REPAIR, rows, [], list(plan.stale_keys))
    rows = [chunk_row(doc_id, doc_hash, idx, n, text) for idx, text in enumerate(chunks)]
    keep = [row for row in rows if plan.old_chunks.get(row["chunk_index"]) == row["chunk_hash"]]
    embed = [row for row in rows if plan.old_chunks.get(row["chunk_index"]) != row["chunk_hash"]]
    stale = [key for idx, key in sorted(plan.old_keys.items()) if idx >= n]
    return DocWrite(doc_id, EMBED, embed, keep, stale)


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

    def tally(self, write: DocWrite) -> None:
        """Count one document's writes (a dry run counts what a real run would write)."""
        if write.action == REPAIR:
            self.repaired_chunks += write.n_embed + len(write.stale)
            return
        self.embedded_documents += 1
        self.embedded_chunks += write.n_embed
        self.reused_chunks += len(write.keep)
        self.deleted_chunks += len(write.stale)

    def tally_orphans(self, removed: dict[str, DocRecord]) -> None:
        self.deleted_documents += len(removed)
        self.deleted_chunks += sum(len(record.rows) for record in removed.values())

    def estimate(self, rate: float | None) -> None:
        """A dry run's time estimate: the chunks to embed at the embedder's measured rate (chunks/s)."""
        self.embed_rate = (round(rate, 2) if rate else 0.0) or None
        self.estimated_s = round(self.chunks_to_embed / self.embed_rate, 1) if self.embed_rate else None

    def line(self) -> str:
        """The summary line; a dry run's says what it *would* do (nothing was written)."""
        words = ("would_embed", "would be kept", "would_skip", "would_delete", "would_repair") if self.dry_run else \
            ("embedded", "kept", "skipped", "deleted", "repaired")
        return (f"{self.kb}: mode={self.mode} ({self.reason}) collection={self.collection} "
                f"documents={self.documents} {words[0]}={self.embedded_documents} docs/{self.embedded_chunks} chunks "
                f"(+{self.reused_chunks} unchanged chunks {words[1]}) "
                f"{words[2]}={self.skipped_documents} {words[3]}={self.deleted_documents} docs/{self.deleted_chunks} "
                f"chunks {words[4]}={self.repaired_chunks} chunks failed={len(self.failed)} "
                f"excluded={len(self.excluded)} rows={self.rows} "
                f"recall={self.recall} duration={self.duration_s:.1f}s" + (
                    f" [dry run, nothing written: {self.chunks_to_embed} chunks to embed, about "
                    f"{duration(self.estimated_s) if self.chunks_to_embed else '0 s'}]" if self.dry_run else ""))


def next_version(versions: list[int], floor: int = 0) -> int:
    """The number of the next full build: above every existing version and above `floor`, the highest version
    seen before unpublished leftovers were dropped (a dropped number is never handed out again, so a reader
    that held the old name never meets a different collection under it)."""
    return max([floor, *versions]) + 1
