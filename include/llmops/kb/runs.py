"""Which knowledge bases a kb_reindex DAG run covers, and the report it ends with. Pure functions."""

from __future__ import annotations

from llmops.errors import ConfigError, shorten
from llmops.kb.plan import KB_MODES
from llmops.kb.progress import duration


def job_arguments(knowledge_bases: dict, knowledge_base: str = "", mode: str = "incremental",
                  dry_run: bool = False) -> list[list[str]]:
    """Arguments of one `llmops.jobs.kb_reindex` call per knowledge base; an empty `knowledge_base` means all.

    (Schedules are per knowledge base: each has its own DAG `kb_reindex__<name>`; this selection serves
    the manual `kb_reindex` DAG and those.)
    """
    if mode not in KB_MODES:
        raise ConfigError("params.mode", [("", f"{shorten(mode)} is not a mode", f"use one of {', '.join(KB_MODES)}")])
    if knowledge_base:
        if knowledge_base not in knowledge_bases:
            known = ", ".join(sorted(knowledge_bases)) or "none"
            raise ConfigError("params.knowledge_base", [(
                "", f"{shorten(knowledge_base)} is not in knowledge_bases.yaml (known: {known})",
                "pick a known knowledge base")])
        names = [knowledge_base]
    else:
        names = sorted(knowledge_bases)
    return [["--kb", name, "--mode", mode, *(["--dry-run"] if dry_run else [])] for name in names]


def outcomes(selected: list[str], results) -> list[tuple[str, dict | None]]:
    """Pair each selected knowledge base with its job result; None where its re-index failed (no result).

    `results` are the mapped step's return values: failed items have none (or None in their place).
    """
    by_name = {result["kb"]: result for result in (results or []) if isinstance(result, dict) and result.get("kb")}
    return [(name, by_name.get(name)) for name in selected]


def format_report(items: list[tuple[str, dict | None]]) -> str:
    """One line per knowledge base: what was embedded, skipped, deleted, repaired, and how long it took;
    FAILED for a knowledge base whose re-index failed.

    `kept`: unchanged chunks of changed documents that kept their stored vector (not embedded again).
    """
    lines = [f"{'knowledge base':<20} {'mode':<12} {'collection':<28} {'docs':>5} {'embedded':>14} "
             f"{'kept':>5} {'skipped':>7} {'deleted':>14} {'repaired':>8} {'failed':>6} {'rows':>7} {'recall':>6} {'time':>7}"]
    problems = []
    results = [result for _, result in items]
    for name, result in items:
        if not result:
            lines.append(f"{name:<20} {'FAILED':<12} the re-index failed: see the log of reindex[{name}]")
            continue
        if result.get("already_running"):
            lines.append(f"{result['kb']:<20} {'skipped':<12} already running elsewhere (another pod or home holds "
                         "its lease); nothing done here")
            continue
        if result.get("mode") == "rollback":
            lines.append(f"{result['kb']:<20} {'rollback':<12} {str(result.get('collection')):<28} "
                         f"(alias moved back from {result.get('previous_collection')})")
            continue
        mode = result.get("mode", "") + ("*" if result.get("dry_run") else "")
        recall = "-" if result.get("recall") is None else f"{result['recall']:.2f}"
        lines.append(
            f"{result['kb']:<20} {mode:<12} {str(result.get('collection')):<28} {result.get('documents', 0):>5} "
            f"{result.get('embedded_documents', 0):>5} docs/{result.get('embedded_chunks', 0):>4} "
            f"{result.get('reused_chunks', 0):>5} {result.get('skipped_documents', 0):>7} {result.get('deleted_documents', 0):>5} docs/"
            f"{result.get('deleted_chunks', 0):>4} {result.get('repaired_chunks', 0):>8} "
            f"{len(result.get('failed', [])):>6} {str(result.get('rows')):>7} {recall:>6} "
            f"{result.get('duration_s', 0):>6.1f}s")
        if result.get("dry_run"):
            rate = result.get("embed_rate")
            problems.append(f"{result['kb']}: dry run: would embed {result.get('embedded_documents', 0)} documents "
                            f"and {result.get('chunks_to_embed', 0)} chunks" + (
                                f", about {duration(result.get('estimated_s'))} at the embedder's measured "
                                f"{rate:.1f} chunks/s" if rate else ""))
        if result.get("reason") and result.get("mode") != result.get("requested_mode"):
            problems.append(f"{result['kb']}: ran {result['mode']} instead of {result['requested_mode']}: "
                            f"{result['reason']}")
        for failure in result.get("failed", []):
            problems.append(f"{result['kb']}: skipped {failure['doc']}: {failure['error']}")
        for item in result.get("excluded", []):
            problems.append(f"{result['kb']}: excluded {item['doc']}: {item['error']}")
    if any(r and r.get("dry_run") for r in results):
        problems.append("* dry run: counts are what a real run would do; nothing was written")
    return "\n".join(lines + problems)
