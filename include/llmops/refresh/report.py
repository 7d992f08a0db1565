"""model_refresh's report: what became of each (model, recipe) item, one line each. Pure.

The item's steps' task states come from the Airflow side (plugins/llmops_airflow/refresh_tasks.py).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

#: The steps of one item's chain, in order (each a task of the item's mapped task group).
ITEM_STEPS = ("download", "quantize", "validate", "publish")

PUBLISHED, SKIPPED, FAILED = "published", "skipped", "failed"
#: Report lines are wrapped at this width, between words (a URI or path longer than the line stays whole on a
#: line of its own): the log view shows every word, the fix included, instead of cutting a line at its edge.
REPORT_WIDTH = 110


@dataclass(frozen=True)
class ItemOutcome:
    """What became of one (model, recipe) item, or of a model that never got items (failed to resolve)."""

    key: str  # model/recipe, or the model alone
    status: str  # published | skipped | failed
    detail: str  # the manifest URI, why it was skipped, or "<step>: <first error line>"


def item_outcome(key: str, states: dict[str, str | None], *, error: str | None = None,
                 manifest_uri: str | None = None) -> ItemOutcome:
    """The outcome of one item from its steps' task states (step -> state) once the run is done.

    The failed step is the first of the chain that failed (later ones are upstream_failed); a chain that
    never finished (the run was stopped) is reported as such rather than as a success.
    """
    if states.get("publish") == "success":
        return ItemOutcome(key, PUBLISHED, manifest_uri or "published")
    for step in ITEM_STEPS:
        state = states.get(step)
        if state == "failed":
            return ItemOutcome(key, FAILED, f"{step}: {error or 'see the task log'}")
        if state == "skipped":
            return ItemOutcome(key, SKIPPED, f"{step} was skipped")
        if state != "success":
            return ItemOutcome(key, FAILED, f"{step}: did not run to the end (state {state or 'none'})")
    return ItemOutcome(key, FAILED, "publish: no outcome recorded")


def render_report(summary: str, outcomes: list[ItemOutcome], width: int = REPORT_WIDTH) -> str:
    """The report a person reads at the end of a run: every item, failures first, each wrapped between words
    with its continuation lines indented under its detail."""
    order = {FAILED: 0, PUBLISHED: 1, SKIPPED: 2}
    counts = {status: sum(o.status == status for o in outcomes) for status in order}
    lines = [f"model_refresh: {counts[PUBLISHED]} published, {counts[SKIPPED]} skipped, {counts[FAILED]} failed"]
    key_width = min(max((len(o.key) for o in outcomes), default=0), width // 3)
    for outcome in sorted(outcomes, key=lambda o: (order.get(o.status, 3), o.key)):
        head = f"  {outcome.status:<9} {outcome.key:<{key_width}}  "
        lines.extend(_wrap(head + outcome.detail, width, " " * len(head)))
    lines.append("plan:")
    for line in summary.splitlines():
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        lines.extend(_wrap("  " + line, width, indent + "  "))
    return "\n".join(lines)


def _wrap(text: str, width: int, indent: str) -> list[str]:
    return textwrap.wrap(text, width=width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False, drop_whitespace=True) or [text]
