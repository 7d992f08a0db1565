"""The rollout report: what was compared, the numbers, the thresholds, the verdict, the timeline.

Rendered as Markdown (task log, PR comments) and self-contained HTML (stored next to the artefact).
Pure: the caller stores the text.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmops.canary.stats import median
from llmops.canary.verdict import ProbeRound, Thresholds, Verdict


@dataclass
class StepReport:
    canary_percent: int
    verdict: Verdict
    canary_rounds: list[ProbeRound] = field(default_factory=list)
    stable_rounds: list[ProbeRound] = field(default_factory=list)
    golden: list[Any] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    window_s: float = 0.0
    stopped_early: str = ""


@dataclass
class RolloutReport:
    deployment: str
    model: str
    runtime: str
    run_id: str
    canary_version: str
    stable_version: str | None
    outcome: str  # promoted | rolled_back | refused | dry_run
    reason: str
    thresholds: Thresholds
    steps: list[StepReport] = field(default_factory=list)
    timeline: list[tuple[float, str, str, str]] = field(default_factory=list)  # (at, phase, event, detail)
    timings: dict[str, float] = field(default_factory=dict)
    manual_roll_back: bool = False  # version "previous": a person asked to go back
    canary_extra_args: list[str] = field(default_factory=list)
    probe: dict = field(default_factory=dict)  # requests per round, concurrency, window

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.0f} ms"
    if unit == "%":
        return f"{value * 100:.1f} %"
    return f"{value:.2f}"


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%H:%M:%S") if at else "-"


def _summary_rows(step: StepReport) -> list[list[str]]:
    rows = []
    for name, rounds in (("stable", step.stable_rounds), ("canary", step.canary_rounds)):
        if not rounds:
            continue
        requests = sum(r.requests for r in rounds)
        errors = sum(r.errors for r in rounds)
        rows.append([name, str(len(rounds)), str(requests), str(errors),
                     _fmt(median([r.p50_ttft_s for r in rounds if r.p50_ttft_s is not None])),
                     _fmt(median([r.p95_ttft_s for r in rounds if r.p95_ttft_s is not None])),
                     _fmt(median([r.p50_e2e_s for r in rounds if r.p50_e2e_s is not None])),
                     _fmt(median([r.p95_e2e_s for r in rounds if r.p95_e2e_s is not None]))])
    return rows


SUMMARY_HEAD = ["backend", "rounds", "requests", "errors", "TTFT p50", "TTFT p95", "e2e p50", "e2e p95"]
CHECK_HEAD = ["check", "status", "observed", "threshold", "detail"]


def _check_rows(verdict: Verdict) -> list[list[str]]:
    rows = []
    for c in verdict.checks:
        unit = "%" if c.name in ("error_rate", "golden_prompts") else "x"
        rows.append([c.name, c.status.upper(), _fmt(c.observed, unit), _fmt(c.threshold, unit), c.detail])
    return rows


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(out)


def render_markdown(report: RolloutReport) -> str:
    t = report.thresholds
    lines = [
        f"# Rollout of {report.model} to {report.deployment}: **{report.outcome.upper()}**",
        "",
        f"- run: `{report.run_id}` on runtime `{report.runtime}`",
        f"- canary version: `{report.canary_version}`",
        f"- stable version: `{report.stable_version or 'none (initial deployment)'}`",
        f"- reason: {report.reason}",
        f"- thresholds: p95 latency ratio <= {t.max_p95_latency_ratio:g}, error rate <= {t.max_error_rate:g}, "
        f"golden pass rate >= {t.min_golden_pass_rate:g}, at least {t.min_rounds} paired rounds",
    ]
    if report.timings:
        lines.append("- timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
    for step in report.steps:
        lines += ["", f"## Step: {step.canary_percent} % canary ({step.window_s:.0f} s window) - "
                      f"{'PASS' if step.verdict.passed else 'FAIL'}", "", step.verdict.summary, "",
                  _md_table(CHECK_HEAD, _check_rows(step.verdict))]
        rows = _summary_rows(step)
        if rows:
            lines += ["", _md_table(SUMMARY_HEAD, rows)]
        if step.golden:
            lines += ["", _md_table(["prompt", "passed", "output", "reason"],
                                    [[repr(g.prompt), "yes" if g.passed else "no", repr(g.output)[:80], g.reason]
                                     for g in step.golden])]
        if step.metrics:
            lines += ["", "vLLM /metrics during the window:", "", "```json",
                      json.dumps(step.metrics, indent=1, sort_keys=True, default=str), "```"]
    if report.timeline:
        lines += ["", "## Timeline", "", _md_table(["time (UTC)", "phase", "event", "detail"],
                                                   [[_stamp(at), ph, ev, de] for at, ph, ev, de in report.timeline])]
    return "\n".join(lines) + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: RolloutReport) -> str:
    color = {"promoted": "#1a7f37", "rolled_back": "#cf222e"}.get(report.outcome, "#9a6700")
    t = report.thresholds
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Rollout {html.escape(report.deployment)}: {html.escape(report.outcome)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head><body>",
        f"<h1>Rollout of {html.escape(report.model)} to {html.escape(report.deployment)}: "
        f"<span style='color:{color}'>{html.escape(report.outcome.upper())}</span></h1>",
        "<ul>",
        f"<li>run: <code>{html.escape(report.run_id)}</code> on runtime <code>{html.escape(report.runtime)}</code></li>",
        f"<li>canary version: <code>{html.escape(report.canary_version)}</code></li>",
        f"<li>stable version: <code>{html.escape(report.stable_version or 'none (initial deployment)')}</code></li>",
        f"<li>reason: {html.escape(report.reason)}</li>",
        f"<li>thresholds: p95 latency ratio &le; {t.max_p95_latency_ratio:g}, error rate &le; {t.max_error_rate:g}, "
        f"golden pass rate &ge; {t.min_golden_pass_rate:g}</li>",
    ]
    if report.timings:
        parts.append("<li>timings: " + html.escape(", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))
                     + "</li>")
    parts.append("</ul>")
    for step in report.steps:
        parts.append(f"<h2>Step: {step.canary_percent} % canary - {'PASS' if step.verdict.passed else 'FAIL'}</h2>")
        parts.append(f"<p>{html.escape(step.verdict.summary)}</p>")
        parts.append(_html_table(CHECK_HEAD, _check_rows(step.verdict)))
        rows = _summary_rows(step)
        if rows:
            parts.append(_html_table(SUMMARY_HEAD, rows))
        if step.golden:
            parts.append(_html_table(["prompt", "passed", "output", "reason"],
                                     [[g.prompt, "yes" if g.passed else "no", g.output[:80], g.reason]
                                      for g in step.golden]))
    if report.timeline:
        parts.append("<h2>Timeline</h2>")
        parts.append(_html_table(["time (UTC)", "phase", "event", "detail"],
                                 [[_stamp(at), ph, ev, de] for at, ph, ev, de in report.timeline]))
    parts.append("</body></html>")
    return "\n".join(parts)


def step_to_dict(step: StepReport) -> dict:
    return asdict(step)


def step_from_dict(data: dict) -> StepReport:
    from llmops.canary.verdict import Check, GoldenOutcome

    verdict = Verdict(data["verdict"]["passed"], [Check(**c) for c in data["verdict"]["checks"]],
                      data["verdict"]["summary"], data["verdict"].get("outcome", "passed"))
    def probe_round(r: dict) -> ProbeRound:
        return ProbeRound(**{**r, "e2e_samples": tuple(r.get("e2e_samples") or ())})

    return StepReport(data["canary_percent"], verdict, [probe_round(r) for r in data["canary_rounds"]],
                      [probe_round(r) for r in data["stable_rounds"]], [GoldenOutcome(**g) for g in data["golden"]],
                      data.get("metrics") or {}, data.get("window_s", 0.0), data.get("stopped_early", ""))
