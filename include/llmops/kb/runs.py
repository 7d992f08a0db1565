"""Which knowledge bases a kb_reindex DAG run covers, and the report it ends with. Pure functions."""

from __future__ import annotations

from llmops.errors import ConfigError, shorten

RUN_MODES = ("incremental", "full", "rollback")


def job_arguments(knowledge_bases: dict, knowledge_base: str = "", mode: str = "incremental",
                  dry_run: bool = False, scheduled: bool = False) -> list[list[str]]:
    """Arguments of one `llmops.jobs.kb_reindex` call per knowledge base.

    An empty `knowledge_base` means all of them; on a scheduled run, knowledge bases whose `schedule`
    is null are left out (they are re-indexed on demand only).
    """
    if mode not in RUN_MODES:
        raise ConfigError("params.mode", [("", f"{shorten(mode)} is not a mode", f"use one of {', '.join(RUN_MODES)}")])
    if knowledge_base:
        if knowledge_base not in knowledge_bases:
            known = ", ".join(sorted(knowledge_bases)) or "none"
            raise ConfigError("params.knowledge_base", [(
                "", f"{shorten(knowledge_base)} is not in knowledge_bases.yaml (known: {known})",
                "pick a known knowledge base")])
        names = [knowledge_base]
    else:
        names = sorted(name for name, kb in knowledge_bases.items() if not scheduled or kb.schedule)
    return [["--kb", name, "--mode", mode, *(["--dry-run"] if dry_run else [])] for name in names]


def format_report(results: list[dict | None]) -> str:
    """One line per knowledge base: what was embedded, skipped, deleted, repaired, and how long it took.

    `kept`: unchanged chunks of changed documents that kept their stored vector (not embedded again).
    """
    lines = [f"{'knowledge base':<20} {'mode':<12} {'collection':<28} {'docs':>5} {'embedded':>14} "
             f"{'kept':>5} {'skipped':>7} {'deleted':>14} {'repaired':>8} {'failed':>6} {'rows':>7} {'recall':>6} {'time':>7}"]
    problems = []
    for result in results:
        if not result:
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
        if result.get("reason") and result.get("mode") != result.get("requested_mode"):
            problems.append(f"{result['kb']}: ran {result['mode']} instead of {result['requested_mode']}: "
                            f"{result['reason']}")
        for failure in result.get("failed", []):
            problems.append(f"{result['kb']}: skipped {failure['doc']}: {failure['error']}")
    if any(r and r.get("dry_run") for r in results):
        problems.append("* dry run: counts are what a real run would do; nothing was written")
    return "\n".join(lines + problems)
