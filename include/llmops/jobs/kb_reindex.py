"""Re-index one knowledge base into Milvus (worker environment: embedding needs torch).

    python -m llmops.jobs.kb_reindex --kb product-docs --mode incremental [--dry-run]
    python -m llmops.jobs.kb_reindex --kb product-docs --mode full
    python -m llmops.jobs.kb_reindex --kb product-docs --mode rollback      # alias back one version
    python -m llmops.jobs.kb_reindex --kb product-docs --mode search --query "how do I install?"

The last stdout line is `LLMOPS_RESULT {summary}` (embedded, skipped, deleted, repaired, duration...).
The Milvus token comes from AIRFLOW_CONN_<milvus.connection_id> or MILVUS_TOKEN, never from arguments;
the server from --milvus-uri, else the knowledge base's `milvus.uri`, else MILVUS_URI (the `milvus_default`
Connection's host, filled in by the DAG), else the default Milvus Lite file.
Exit status 2 means a permanent error (bad input, a failed validation): not retried; the message says what
to fix. Other non-zero statuses (Milvus unreachable, lock held) are retried.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from llmops.config import load_file
from llmops.errors import ConfigError, LlmopsError
from llmops.jobs._cli import emit_result, fail, setup_logging, storage_error
from llmops.kb.pipeline import kb_lock, reindex, search
from llmops.kb.store import KbIndex, connect, token_from_env
from llmops.settings import get_settings

log = logging.getLogger("llmops.jobs.kb_reindex")


def load_knowledge_base(name: str, config_dir: Path):
    path = Path(config_dir) / "knowledge_bases.yaml"
    registry = load_file(path)
    known = {kb.name: kb for kb in registry.knowledge_bases}
    if name not in known:
        raise ConfigError(str(path), [("", f"has no knowledge base named {name!r} (known: {', '.join(sorted(known))})",
                                       f"pick a known knowledge base or add {name!r}")])
    return known[name]


def milvus_uri(kb, override: str | None = None) -> str:
    """--milvus-uri > the knowledge base's own `milvus.uri` > MILVUS_URI (the step factory fills it from the
    `milvus_default` Connection's host; a host without a scheme gets http://) > the default Lite file."""
    if override:
        return override
    connection = os.environ.get("MILVUS_URI", "").strip()
    if "uri" in kb.milvus.model_fields_set or not connection:
        return kb.milvus.uri
    return connection if "://" in connection else f"http://{connection}"


def open_index(kb, override_uri: str | None = None) -> KbIndex:
    settings = get_settings()
    client = connect(milvus_uri(kb, override_uri), settings.home, token_from_env(kb.milvus.connection_id))
    return KbIndex(client, kb.alias, kb.milvus.index_type, kb.milvus.metric_type, dict(kb.milvus.index_params))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llmops.jobs.kb_reindex", description=__doc__.split("\n")[0])
    parser.add_argument("--kb", required=True, help="knowledge base name in knowledge_bases.yaml")
    parser.add_argument("--mode", default="incremental", choices=["incremental", "full", "rollback", "search"])
    parser.add_argument("--dry-run", action="store_true", help="plan and report, write nothing")
    parser.add_argument("--query", help="the question for --mode search")
    parser.add_argument("--milvus-uri", help="override milvus.uri from the registry (a Lite file or a server URL)")
    parser.add_argument("--config-dir", help="registry directory (default: LLMOPS_CONFIG_DIR / include/config)")
    parser.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    settings = get_settings()
    kb = load_knowledge_base(args.kb, Path(args.config_dir or settings.config_dir))
    if args.mode == "search" and not args.query:
        raise ConfigError("--query", [("", "is required with --mode search", "pass --query 'your question'")])
    embedder = None
    if not args.dry_run and args.mode != "rollback":
        from llmops.kb.embedders import build_embedder

        embedder = build_embedder(kb.embedder)
    index = open_index(kb, args.milvus_uri)
    if args.mode == "search":
        hits = search(kb, index, embedder, args.query)
        for rank, hit in enumerate(hits, start=1):
            print(f"{rank}. {hit['doc_id']} (chunk {hit['chunk_index']}, score {hit['score']:.3f})")
            print("   " + hit["text"].replace("\n", " ")[:300])
        return {"kb": kb.name, "mode": "search", "query": args.query,
                "hits": [{k: hit[k] for k in ("doc_id", "chunk_index", "score")} for hit in hits]}
    with kb_lock(settings.home, kb.name):
        if args.mode == "rollback":
            started = time.monotonic()
            if args.dry_run:
                return {"kb": kb.name, "mode": "rollback", "dry_run": True, "collection": index.live_collection(),
                        "versions": [index.collection_name(v) for v in index.versions()]}
            previous, current = index.rollback()
            log.info("%s: alias %s moved back from %s to %s", kb.name, kb.alias, previous, current)
            return {"kb": kb.name, "mode": "rollback", "collection": current, "previous_collection": previous,
                    "duration_s": round(time.monotonic() - started, 3)}
        summary = reindex(kb, args.mode, index=index, embedder=embedder, dry_run=args.dry_run,
                          progress_every_s=args.progress_every)
        return summary.as_dict()


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    # Milvus Lite's in-process gRPC server logs a traceback for every RPC it does not implement
    # (AllocTimestamp, asked by query iterators); the client falls back by itself.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    # ... and pymilvus then warns once per scan that it used a client-side timestamp instead.
    logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(lambda r: "mvccTs" not in r.getMessage())
    args = parse_args(argv)
    try:
        result = run(args)
    except LlmopsError as exc:
        return fail(exc, log)
    except OSError as exc:  # a full or read-only Milvus Lite directory: one line, not a traceback
        full_or_read_only = storage_error(exc, f"kb_reindex --kb {args.kb}")
        if full_or_read_only is None:
            raise
        return fail(full_or_read_only, log)
    emit_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
