"""Re-index one knowledge base into Milvus (worker environment: embedding needs torch).

    python -m llmops.jobs.kb_reindex --kb product-docs --mode incremental [--dry-run [--no-estimate]]
    python -m llmops.jobs.kb_reindex --kb product-docs --mode full
    python -m llmops.jobs.kb_reindex --kb product-docs --mode rollback      # alias back one version
    python -m llmops.jobs.kb_reindex --kb product-docs --mode search --query "how do I install?"

The last stdout line is `LLMOPS_RESULT {summary}` (embedded, skipped, deleted, repaired, duration...).
The Milvus token comes from MILVUS_TOKEN (the DAG fills it from the knowledge base's milvus.connection_id),
never from arguments;
the server from --milvus-uri, else the knowledge base's `milvus.uri`, else MILVUS_URI (the `milvus_default`
Connection's host, filled in by the DAG), else the default Milvus Lite file; a Milvus Lite file is replaced by
the local runtime's `milvus-lite server`, shared by every process: LLMOPS_MILVUS_URI when set, else the server
recorded in $LLMOPS_HOME/milvus/server.pid while it runs (`make ui`; llmops.kb.index.local_server).
Exit status 2 means a permanent error (bad input, an unknown model, a dimension that contradicts the live
collection, a failed validation): not retried; the message says what to fix. Other non-zero statuses (Milvus,
the hub or the embedding endpoint unreachable) are retried. SIGTERM stops the run cleanly (exit 143, also during
the first ONNX export, which then leaves nothing behind): it logs what was done and drops a full build's
unfinished version; the next run continues from what is in Milvus.
One writer per knowledge base: a run takes the knowledge base's lease in its Milvus (llmops.kb.lease), so two
pods or two LLMOPS_HOMEs never write one knowledge base at once. When another process holds it, the run waits up
to LLMOPS_KB_LEASE_WAIT_S (default 0) and then exits 0 with `"already_running": true` (not a failure).
Nothing large loads before it is needed: a run with nothing to embed never loads the embedder (nor imports torch).
A heartbeat line (`progress <kb>: ...`) comes at once and then every --progress-every seconds.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Only light imports here: the heartbeat starts before Milvus' client, the registry schema or any model load.
from llmops.errors import ConfigError, LlmopsError
from llmops.jobs._cli import emit_result, fail_known, setup_logging
from llmops.kb.errors import KbAlreadyRunning, KbError, Stopped
from llmops.kb.plan import KB_MODES
from llmops.kb.progress import Progress

if TYPE_CHECKING:
    from llmops.kb.index import KbIndex

log = logging.getLogger("llmops.jobs.kb_reindex")


def load_knowledge_base(name: str, config_dir: Path):
    from llmops.config import load_file

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
    from llmops.settings import get_settings

    connection = get_settings().milvus_default_uri
    if "uri" in kb.milvus.model_fields_set or not connection:
        return kb.milvus.uri
    return connection if "://" in connection else f"http://{connection}"


def open_index(kb, override_uri: str | None = None) -> KbIndex:
    from llmops.kb.index import KbIndex, connect, local_server, resolve_uri
    from llmops.settings import get_settings

    settings = get_settings()
    uri = milvus_uri(kb, override_uri)
    server = local_server(settings.home, settings.milvus_uri)
    client = connect(uri, settings.home, settings.credentials.milvus_token or None, server=server)
    index = KbIndex.for_kb(client, kb)
    index.check_retrieval(kb.name, resolve_uri(uri, settings.home, server))  # before any model load
    return index


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llmops.jobs.kb_reindex", description=__doc__.split("\n")[0])
    parser.add_argument("--kb", required=True, help="knowledge base name in knowledge_bases.yaml")
    parser.add_argument("--mode", default="incremental", choices=[*KB_MODES, "search"])
    parser.add_argument("--dry-run", action="store_true",
                        help="count documents and chunks to embed and estimate the time; write nothing")
    parser.add_argument("--no-estimate", dest="estimate", action="store_false",
                        help="with --dry-run: do not load the embedder to measure its rate (no time estimate)")
    parser.add_argument("--query", help="the question for --mode search")
    parser.add_argument("--milvus-uri", help="override milvus.uri from the registry (a Lite file or a server URL)")
    parser.add_argument("--config-dir", help="registry directory (default: LLMOPS_CONFIG_DIR / include/config)")
    parser.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, progress: Progress | None = None) -> dict:
    """Run one mode; `progress` (the heartbeat, already beating) reports the phases of a re-index."""
    from llmops.settings import get_settings

    settings = get_settings()
    if args.mode == "search" and not args.query:
        raise ConfigError("--query", [("", "is required with --mode search", "pass --query 'your question'")])
    progress = progress or Progress(args.kb)
    progress.set_phase("reading the registry")
    kb = load_knowledge_base(args.kb, Path(args.config_dir or settings.config_dir))
    if args.mode == "search":
        return run_search(kb, args)
    from llmops.kb.embedders import LazyEmbedder
    from llmops.kb.lease import MilvusLease
    from llmops.kb.pipeline import reindex

    # Everything that can fail fails before anything large loads: the registry (above), Milvus (a locked Lite
    # file, an unreachable server), the lease, the model's name and dimension (from its files); the source is
    # listed and compared with Milvus before the embedder is built, and only chunks to embed build it.
    progress.set_phase("opening Milvus")
    index = open_index(kb, args.milvus_uri)
    embedder = None
    if args.mode != "rollback" and (not args.dry_run or args.estimate):
        embedder = LazyEmbedder(kb.embedder, on_load=progress.set_phase)
    if args.dry_run:  # writes nothing: no lease needed, and a dry run may look while another run writes
        if args.mode == "rollback":
            return run_rollback(kb, index, dry_run=True)
        return reindex(kb, args.mode, index=index, embedder=embedder, dry_run=True, progress=progress).as_dict()
    progress.set_phase(f"taking the lease on {kb.alias} in Milvus")
    lease = MilvusLease(index.client, kb.alias, ttl_s=settings.kb_lease_ttl_s)
    with lease.hold(wait_s=settings.kb_lease_wait_s):
        progress.guard = lease.check
        if args.mode == "rollback":
            return run_rollback(kb, index, False)
        summary = reindex(kb, args.mode, index=index, embedder=embedder, progress=progress)
        return summary.as_dict()


def run_search(kb, args: argparse.Namespace) -> dict:
    """Open Milvus and check the alias before loading the model; print the answers and how long each part took."""
    from llmops.kb.embedders import build_embedder
    from llmops.kb.pipeline import search

    started = time.monotonic()
    index = open_index(kb, args.milvus_uri)
    if index.live_collection() is None:
        raise KbError(f"knowledge base {kb.name}: alias {index.alias} does not exist", fix="run kb_reindex first")
    opened = time.monotonic()
    embedder = build_embedder(kb.embedder)
    embedder.embed(["warm-up"])
    warm = time.monotonic()
    hits = search(kb, index, embedder, args.query)
    answered = time.monotonic()
    retrieval = index.retrieval_of(index.alias)
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. {hit['doc_id']} (chunk {hit['chunk_index']}, score {hit['score']:.3f})")
        print("   " + hit["text"].replace("\n", " ")[:300])
    timings = {"milvus_s": round(opened - started, 3), "model_s": round(warm - opened, 3),
               "answer_s": round(answered - warm, 3)}
    log.info("opened Milvus in %.1f s, loaded the model in %.1f s, answered in %.2f s (%s retrieval)",
             *timings.values(), retrieval)
    return {"kb": kb.name, "mode": "search", "query": args.query, "retrieval": retrieval, **timings,
            "hits": [{k: hit[k] for k in ("doc_id", "chunk_index", "score")} for hit in hits]}


def run_rollback(kb, index: KbIndex, dry_run: bool) -> dict:
    started = time.monotonic()
    if dry_run:
        return {"kb": kb.name, "mode": "rollback", "dry_run": True, "collection": index.live_collection(),
                "versions": [index.collection_name(v) for v in index.versions()]}
    dropped = index.drop_unpublished()  # an interrupted build's leftovers, never read by anyone
    previous, current = index.rollback()
    log.info("%s: alias %s moved back from %s to %s", kb.name, kb.alias, previous, current)
    return {"kb": kb.name, "mode": "rollback", "collection": current, "previous_collection": previous,
            "dropped_collections": dropped, "duration_s": round(time.monotonic() - started, 3)}


def _stop_on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Stopped(f"stopped by signal {signal.Signals(signum).name}", fix="rerun when ready (the next run of any "
                  "mode finishes or cleans up what this one left)")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    # Milvus Lite's in-process gRPC server logs a traceback for every RPC it does not implement
    # (AllocTimestamp, asked by query iterators); the client falls back by itself.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    # ... and pymilvus then warns once per scan that it used a client-side timestamp instead.
    logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(lambda r: "mvccTs" not in r.getMessage())
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # Airflow's on_kill and Kubernetes send SIGTERM
    try:
        if args.mode == "search":
            result = run(args)
        else:
            with Progress(args.kb, args.progress_every) as progress:  # a line now, then every --progress-every s
                result = run(args, progress)
    except KbAlreadyRunning as exc:  # another pod or home does this work now: not a failure, nothing done
        log.warning("%s", exc)
        result = {"kb": args.kb, "mode": args.mode, "already_running": True, "reason": str(exc)}
    except Stopped as exc:
        log.warning("%s", exc)
        return 128 + signal.SIGTERM
    except (LlmopsError, OSError) as exc:  # a domain error, or a full or read-only Milvus Lite directory: one line, not a traceback
        return fail_known(exc, log, f"kb_reindex --kb {args.kb}")
    emit_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
