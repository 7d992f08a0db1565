"""The Milvus side: versioned collections behind an alias, rows as the index's own record.

Readers query the alias (`product_docs`); the data lives in versions (`product_docs_v3`). A full
build fills a new version, validates it and moves the alias in one `alter_alias` call; the
previous version stays for rollback. Incremental runs upsert into the version the alias points to.

Every row carries `doc_id`, `doc_hash`, `chunk_index` and `n_chunks`, and every collection carries
the embedder/chunking fingerprint as a property, so the store itself says what it holds: the
pipeline reconciles against the rows that are really there, not against a sidecar that can drift.
Works on Milvus Lite (a local file) and on a Milvus server (http(s)://host:port, token optional).

Hybrid retrieval (a knowledge base's `retrieval.mode: hybrid`): the collection also analyses `text` and a
BM25 function fills a sparse field from it, on every insert and upsert; search then runs a dense and a BM25
request and fuses them (RRF or weighted). BM25 functions came with Milvus 2.5: Milvus Lite 3.x has them,
the `milvus` package's 2.3 standalone server does not, and `check_retrieval` refuses it when the index is
opened, before a model is loaded or a collection created.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from llmops.kb.errors import (
    HybridUnsupportedError,
    IndexValidationError,
    KbError,
    MilvusLiteBusyError,
    MilvusUnreachableError,
    RollbackError,
)
from llmops.kb.milvus_client import (
    AnnSearchRequest,
    DataType,
    Function,
    FunctionType,
    MilvusClient,
    MilvusException,
    RRFRanker,
    WeightedRanker,
)
from llmops.kb.plan import BM25_FIELD, TEXT_ANALYZER, TEXT_MAX_BYTES, DocRecord, StoredChunk

if TYPE_CHECKING:
    from llmops.config.schema import Retrieval

log = logging.getLogger(__name__)

FINGERPRINT_PROPERTY = "llmops.kb.fingerprint"
STRONG = "Strong"
_SCAN_FIELDS = ["pk", "doc_id", "doc_hash", "chunk_index", "n_chunks", "chunk_hash"]
BM25_SINCE = (2, 5)  # the first Milvus release with BM25 functions
# Milvus Lite 3.x (the pure-Python generation) documents BM25 and hybrid search and passes the integration tests;
# the older C++-core Lite releases are not counted on.
LITE_BM25_SINCE = (3, 0)
MAX_CANDIDATES = 16384  # Milvus' largest limit per search request


def bm25_supported(server_version: str) -> bool | None:
    """Whether a Milvus of this version (`get_server_version()`: 'v2.5.4', 'v2.3.5-lite', 'milvus_lite-3.2.2')
    has BM25 functions; None when the version cannot be read (a managed service: the server decides)."""
    match = re.match(r"^(milvus[_-]lite-|v)?(\d+)\.(\d+)", server_version.strip())
    if not match:
        return None
    since = LITE_BM25_SINCE if match.group(1) and "lite" in match.group(1) else BM25_SINCE
    return (int(match.group(2)), int(match.group(3))) >= since


def is_server(uri: str) -> bool:
    return bool(re.match(r"^(https?|tcp|grpc|unix)://", uri))


def resolve_uri(uri: str, home: Path, server: str = "") -> str:
    """A server URI stays as it is; a Milvus Lite file is relative to $LLMOPS_HOME/milvus, or replaced by
    `server` (LLMOPS_MILVUS_URI: the local runtime's Milvus, shared by every process) when one is set."""
    if is_server(uri):
        return uri
    if server:
        return server
    path = Path(uri).expanduser()
    if not path.is_absolute():
        path = home / "milvus" / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


#: Where the local runtime's Milvus server is recorded ("PID URI", relative to $LLMOPS_HOME): written by whatever
#: serves $LLMOPS_HOME/milvus (`make ui`, tests/support/milvus.py start), read by every job through `local_server`.
LOCAL_SERVER_RECORD = Path("milvus") / "server.pid"


def local_server(home: Path, explicit: str = "") -> str:
    """The one way to find the local Milvus server: LLMOPS_MILVUS_URI (`explicit`) when set, else the server
    recorded under `home` while its process lives, else "" (the knowledge bases' Milvus Lite files are opened
    directly)."""
    if explicit:
        return explicit
    try:
        pid, uri = (home / LOCAL_SERVER_RECORD).read_text().split()[:2]
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return ""
    return uri


LITE_LOCKED_FIX = (
    "a Milvus Lite file serves one process at a time (a re-index holds it for its whole run); fix: serve it to "
    "every process with `milvus-lite server --data-dir {path} --host 127.0.0.1 --port PORT` and set "
    "LLMOPS_MILVUS_URI=http://127.0.0.1:PORT (make demo and make ui do this), or use a Milvus server")


def _lite_file_busy(path: Path) -> bool:
    """True if another process holds the Lite data dir's lock (Milvus Lite flocks <dir>/LOCK)."""
    lock = path / "LOCK"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops our lock, if we took it
    return False


def connect(uri: str, home: Path, token: str | None = None, server: str = "") -> MilvusClient:
    """Open Milvus: a server, or a Milvus Lite file (checked first: a file held by another process fails
    at once, with the fix, before the caller loads a model)."""
    resolved = resolve_uri(uri, home, server)
    if not is_server(resolved) and _lite_file_busy(Path(resolved)):
        raise MilvusLiteBusyError(f"Milvus Lite file {resolved} is held by another process; "
                                  + LITE_LOCKED_FIX.format(path=resolved))
    last: MilvusException | None = None
    for attempt in range(CONNECT_TRIES):
        try:
            return MilvusClient(uri=resolved, token=token or "")
        except MilvusException as exc:
            if not is_server(resolved) and _lite_file_busy(Path(resolved)):
                raise MilvusLiteBusyError(f"Milvus Lite file {resolved} is held by another process; "
                                          + LITE_LOCKED_FIX.format(path=resolved)) from None
            if _permission_denied(exc):
                raise KbError(f"Milvus at {resolved} refused the token ({exc.message})",
                              fix="check the token (MILVUS_TOKEN, from milvus.connection_id's password)") from None
            last = exc
            if attempt + 1 < CONNECT_TRIES:
                log.warning("Milvus at %s cannot be reached (%s); trying again in %d s", resolved, exc.message,
                            2 ** attempt)
                time.sleep(2 ** attempt)
    raise MilvusUnreachableError(
        f"Milvus at {resolved} cannot be reached after {CONNECT_TRIES} tries ({last.message if last else ''})",
        fix="start the server (locally: make ui or tests/support/milvus.py start) or correct milvus.uri / "
        "--milvus-uri; the task is retried") from None


CONNECT_TRIES = 3


def _permission_denied(exc: MilvusException) -> bool:
    text = f"{getattr(exc, 'code', '')} {exc.message}".lower()
    return any(word in text for word in ("auth", "permission", "denied", "unauthenticated", "credential"))


def disconnect(client: MilvusClient, uri: str, home: Path) -> None:
    """Close the client; for Milvus Lite also stop the in-process server so another process can open the file."""
    client.close()
    resolved = resolve_uri(uri, home)
    if not is_server(resolved):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(resolved)


class KbIndex:
    """Versions and alias of one knowledge base in one Milvus."""

    def __init__(self, client: MilvusClient, alias: str, index_type: str = "AUTOINDEX",
                 metric_type: str = "COSINE", index_params: dict | None = None, retrieval: Retrieval | None = None):
        self.client = client
        self.alias = alias
        self.index_type = index_type
        self.metric_type = metric_type
        self.index_params = dict(index_params or {})
        self.retrieval = retrieval
        self._version_re = re.compile(rf"^{re.escape(alias)}_v(\d+)$")

    @classmethod
    def for_kb(cls, client: MilvusClient, kb) -> KbIndex:
        """The index of knowledge base `kb` (its alias, Milvus index settings and retrieval mode)."""
        return cls(client, kb.alias, kb.milvus.index_type, kb.milvus.metric_type, dict(kb.milvus.index_params),
                   kb.retrieval)

    @property
    def hybrid(self) -> bool:
        return self.retrieval is not None and self.retrieval.mode == "hybrid"

    def check_retrieval(self, kb_name: str, where: str) -> None:
        """Refuse hybrid retrieval on a Milvus without BM25 functions: at once, before a model is loaded or a
        collection created (an old server would create the collection and then fail on its sparse index)."""
        if not self.hybrid:
            return
        version = self.client.get_server_version()
        if bm25_supported(version) is False:
            raise HybridUnsupportedError(
                f"knowledge base {kb_name}: retrieval.mode 'hybrid' needs BM25 full-text search (Milvus "
                f"{BM25_SINCE[0]}.{BM25_SINCE[1]}+ or Milvus Lite {LITE_BM25_SINCE[0]}+), but the Milvus at {where} "
                f"is {version}; nothing was changed", fix="point milvus.uri (or --milvus-uri) at such a Milvus (a "
                "Milvus Lite file is served locally by `milvus-lite server`), or set retrieval.mode: dense")

    # --- versions and alias ----------------------------------------------------------------------

    def collection_name(self, version: int) -> str:
        return f"{self.alias}_v{version}"

    def versions(self) -> list[int]:
        found = []
        for name in self.client.list_collections():
            match = self._version_re.match(name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def live_collection(self) -> str | None:
        if self.alias not in self.client.list_aliases().get("aliases", []):
            return None
        return self.client.describe_alias(self.alias)["collection_name"]

    def version_of(self, collection: str) -> int | None:
        match = self._version_re.match(collection)
        return int(match.group(1)) if match else None

    def fingerprint(self, collection: str) -> dict | None:
        properties = self.client.describe_collection(collection).get("properties", {}) or {}
        raw = properties.get(FINGERPRINT_PROPERTY)
        return json.loads(raw) if raw else None

    def dimension(self, collection: str) -> int:
        for item in self.client.describe_collection(collection)["fields"]:
            if item["name"] == "vector":
                return int(item["params"]["dim"])
        raise KbError(f"collection {collection} has no 'vector' field", fix="it was not built by kb_reindex, "
                      "point the alias elsewhere or run --mode full")

    def create_version(self, version: int, dimension: int, fingerprint: dict) -> str:
        name = self.collection_name(version)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=4096)
        schema.add_field("doc_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("chunk_index", DataType.INT64)
        schema.add_field("n_chunks", DataType.INT64)
        schema.add_field("chunk_hash", DataType.VARCHAR, max_length=64)
        if self.hybrid:
            schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES, enable_analyzer=True,
                             analyzer_params=TEXT_ANALYZER)
        else:
            schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type=self.index_type, metric_type=self.metric_type,
                        params=self.index_params)
        if self.hybrid:
            schema.add_field(BM25_FIELD, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(Function(name=f"{BM25_FIELD}_fn", function_type=FunctionType.BM25,
                                         input_field_names=["text"], output_field_names=[BM25_FIELD]))
            index.add_index(BM25_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level=STRONG)
        self.client.alter_collection_properties(name, properties={FINGERPRINT_PROPERTY: json.dumps(fingerprint)})
        log.info("created collection %s (dimension %d, %s/%s%s)", name, dimension, self.index_type, self.metric_type,
                 ", BM25 on text" if self.hybrid else "")
        return name

    def swap_alias(self, collection: str) -> str | None:
        """Point the alias at `collection` in one call; return the collection it pointed at before."""
        previous = self.live_collection()
        if previous is None:
            self.client.create_alias(collection, self.alias)
        else:
            self.client.alter_alias(collection, self.alias)
        log.info("alias %s -> %s (was %s)", self.alias, collection, previous)
        return previous

    def rollback(self) -> tuple[str, str]:
        live = self.live_collection()
        live_version = self.version_of(live) if live else None
        older = [v for v in self.versions() if live_version is not None and v < live_version]
        if not older:
            raise RollbackError(f"alias {self.alias} points at {live} and no earlier version is kept",
                                fix="raise retention in knowledge_bases.yaml, or run --mode full")
        target = self.collection_name(older[-1])
        self.ensure_loaded(target)
        self.swap_alias(target)
        return live, target

    def drop_unpublished(self) -> list[str]:
        """Drop versions newer than the live one: failed or killed builds, or versions rolled back from."""
        live = self.live_collection()
        live_version = self.version_of(live) if live else -1
        dropped = []
        for version in self.versions():
            if version > live_version:
                name = self.collection_name(version)
                self.client.drop_collection(name)
                dropped.append(name)
        if dropped:
            log.info("dropped unpublished collections %s", ", ".join(dropped))
        return dropped

    def apply_retention(self, keep: int) -> list[str]:
        """Keep the live version and the `keep - 1` versions before it; drop older ones."""
        live = self.live_collection()
        live_version = self.version_of(live) if live else None
        if live_version is None:
            return []
        older = [v for v in self.versions() if v < live_version]
        doomed = older[:max(0, len(older) - (keep - 1))]
        for version in doomed:
            self.client.drop_collection(self.collection_name(version))
        if doomed:
            log.info("retention %d: dropped %s", keep, ", ".join(self.collection_name(v) for v in doomed))
        return [self.collection_name(v) for v in doomed]

    # --- rows ------------------------------------------------------------------------------------

    def upsert(self, collection: str, rows: list[dict]) -> None:
        if rows:
            self.client.upsert(collection, rows)

    def delete_keys(self, collection: str, keys: Iterable[str]) -> int:
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            self.client.delete(collection, ids=keys[start:start + 1000])
        return len(keys)

    def vectors(self, collection: str, keys: list[str]) -> dict[str, list[float]]:
        """Stored vectors by primary key (to carry an unchanged chunk over without embedding it again)."""
        found: dict[str, list[float]] = {}
        for start in range(0, len(keys), 1000):
            for row in self.client.get(collection, ids=keys[start:start + 1000], output_fields=["vector"]):
                found[row["pk"]] = [float(x) for x in row["vector"]]
        return found

    def count(self, collection: str) -> int:
        result = self.client.query(collection, filter="", output_fields=["count(*)"], consistency_level=STRONG)
        return int(result[0]["count(*)"])

    def scan(self, collection: str) -> dict[str, DocRecord]:
        """Read what the store holds (doc ids, hashes, chunk indexes), with Strong consistency."""
        records: dict[str, DocRecord] = {}
        iterator = self.client.query_iterator(collection, batch_size=2000, filter="", output_fields=_SCAN_FIELDS,
                                              consistency_level=STRONG)
        try:
            while batch := iterator.next():
                for row in batch:
                    record = records.setdefault(row["doc_id"], DocRecord())
                    record.rows[int(row["chunk_index"])] = StoredChunk(row["pk"], row["doc_hash"],
                                                                       int(row["n_chunks"]), row["chunk_hash"])
        finally:
            iterator.close()
        return records

    def flush_and_load(self, collection: str) -> None:
        self.client.flush(collection)
        self.ensure_loaded(collection)

    def ensure_loaded(self, collection: str) -> None:
        state = self.client.get_load_state(collection).get("state")
        if getattr(state, "name", str(state)) != "Loaded":
            self.client.load_collection(collection)

    def retrieval_of(self, collection: str) -> str:
        """'hybrid' when the knowledge base asks for it and `collection` (or the alias) holds BM25 vectors, else
        'dense'. A collection built before the switch to hybrid is searched dense until a full run rebuilds it
        (the fingerprint forces that); readers are not failed meanwhile."""
        if not self.hybrid:
            return "dense"
        fields = {item["name"] for item in self.client.describe_collection(collection)["fields"]}
        return "hybrid" if BM25_FIELD in fields else "dense"

    def search(self, collection: str, vectors: list[list[float]], limit: int,
               output_fields: tuple[str, ...] = ("doc_id", "chunk_index", "text"),
               queries: list[str] | None = None) -> list[list[dict]]:
        """Top `limit` chunks for each query vector; with the query texts too, hybrid where the knowledge base
        and the collection have it: a dense and a BM25 request, `limit * 4` (at least 20) candidates each, fused."""
        hybrid = queries is not None and self.retrieval_of(collection) == "hybrid"
        if queries is not None and self.hybrid and not hybrid:
            log.warning("%s has no BM25 field (built before retrieval.mode became hybrid): searching dense only; "
                        "fix: run --mode full (the next scheduled run rebuilds it)", collection)
        if hybrid:
            candidates = min(max(limit * 4, 20), MAX_CANDIDATES)
            requests = [
                AnnSearchRequest(data=vectors, anns_field="vector", param={"metric_type": self.metric_type},
                                 limit=candidates),
                AnnSearchRequest(data=list(queries), anns_field=BM25_FIELD, param={"metric_type": "BM25"},
                                 limit=candidates),
            ]
            ranker = (RRFRanker(self.retrieval.rrf_k) if self.retrieval.ranker == "rrf"
                      else WeightedRanker(self.retrieval.dense_weight, 1.0 - self.retrieval.dense_weight))
            hits = self.client.hybrid_search(collection, requests, ranker=ranker, limit=limit,
                                             output_fields=list(output_fields), consistency_level=STRONG)
        else:
            hits = self.client.search(collection, data=vectors, limit=limit, output_fields=list(output_fields),
                                      search_params={"metric_type": self.metric_type}, consistency_level=STRONG)
        return [[{"score": hit["distance"], **hit["entity"]} for hit in row] for row in hits]

    def validate(self, collection: str, expected_rows: int, golden: list[tuple[str, str, list[float]]],
                 top_k: int, min_recall: float) -> dict:
        """Row count (Strong) equals what was written; golden queries (expected document, query, its vector)
        find their documents at recall@k, searched as readers will search (hybrid where configured)."""
        rows = self.count(collection)
        if rows != expected_rows:
            raise IndexValidationError(
                f"collection {collection} holds {rows} rows but {expected_rows} were written; the alias "
                f"{self.alias} was not moved", fix="rerun (the incomplete version is dropped by the next build)")
        recall = None
        misses: list[str] = []
        if golden:
            results = self.search(collection, [vector for _, _, vector in golden], top_k, ("doc_id",),
                                  queries=[query for _, query, _ in golden])
            found = 0
            for (expected, _, _), hits in zip(golden, results, strict=True):
                if any(hit["doc_id"] == expected for hit in hits):
                    found += 1
                else:
                    misses.append(expected)
            recall = found / len(golden)
            if recall < min_recall:
                raise IndexValidationError(
                    f"collection {collection}: golden-query recall@{top_k} is {recall:.2f}, below min_recall "
                    f"{min_recall}; missed {', '.join(misses)}; the alias {self.alias} was not moved", fix="check "
                    "the documents, the chunking and the embedder, or the golden queries in knowledge_bases.yaml")
        return {"rows": rows, "recall": recall, "golden_misses": misses}
