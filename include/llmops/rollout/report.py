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
from llmops.canary.verdict import Check, ProbeRound, Thresholds, Verdict
from llmops.golden import GoldenOutcome


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
    placement: str = ""  # where stable and canary ran while compared (local runtime: CPU sets, or that they shared)


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
    warm_roll_back: bool = False  # ... and the kept copy of that version took the traffic again (no cold start)
    kept_previous: dict = field(default_factory=dict)  # promoted: {version, replicas, until} of the warm copy
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


def _title(report: RolloutReport) -> str:
    kind = "Warm roll back" if report.warm_roll_back else "Manual roll back" if report.manual_roll_back else "Rollout"
    return f"{kind} of {report.model} to {report.deployment}: {report.outcome.upper()}"


def _blocks(report: RolloutReport) -> list[tuple]:
    """The report's content once, as blocks both renderers draw: Markdown and HTML show the same things."""
    t = report.thresholds
    items = [("run", f"`{report.run_id}` on runtime `{report.runtime}`")]
    if report.warm_roll_back:
        items.append(("kind", "warm roll back (version `previous`): the copy of that version kept running since its "
                              "replacement was checked (ready, golden prompts) and took the traffic again, no new "
                              "server started"))
    elif report.manual_roll_back:
        items.append(("kind", "manual roll back (version `previous`): a person asked to return to the version "
                              "the stable one replaced; it went through the same checks and canary steps"))
    items += [
        ("canary version", f"`{report.canary_version}`"),
        ("stable version", f"`{report.stable_version or 'none (initial deployment)'}`"),
        ("reason", report.reason),
    ]
    items += [("approval", f"{detail} ({_stamp(at)})") for at, _, event, detail in report.timeline
              if event in ("approved", "rejected")]
    items += [
        ("thresholds", f"p95 latency ratio: a canary {t.max_p95_latency_ratio:g}x slower fails, rolled back above "
                       f"{t.latency_decision_ratio:.2f} when a rank test agrees (alpha {t.latency_alpha:g}), canary error rate <= {t.max_error_rate:g}, golden "
                       f"pass rate >= {t.min_golden_pass_rate:g}, at least {t.min_rounds} paired rounds; early stop "
                       f"on golden prompts failing, >= {t.min_errors_to_stop} errors over the rate, or the canary "
                       f"gone"),
    ]
    if report.probe:
        items.append(("probe", ", ".join(f"{k} {v}" for k, v in report.probe.items())))
    if report.canary_extra_args:
        items.append(("canary extra args", "`" + " ".join(report.canary_extra_args) + "` (canary only)"))
    if report.kept_previous:
        kept = report.kept_previous
        until = datetime.fromtimestamp(kept["until"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        what = "its vLLM process" if report.runtime == "local" else f"{kept['replicas']} replica(s)"
        items.append(("previous version kept warm", f"`{kept['version']}` ({what}) until {until}: `version: "
                      "previous` before then rolls back without a cold start; the next rollout after that "
                      "releases it"))
    if report.timings:
        items.append(("timings", ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items())))
    blocks: list[tuple] = [("title", _title(report)), ("items", items)]
    for step in report.steps:
        window = f"{step.window_s:.0f} s window" + (", stopped early" if step.stopped_early else "")
        blocks += [("heading", f"Step: {step.canary_percent} % canary ({window}) - "
                               f"{step.verdict.outcome.upper() if not step.verdict.passed else 'PASS'}"),
                   ("para", step.verdict.summary)]
        if step.stopped_early:
            blocks.append(("para", f"Analysis stopped early: {step.stopped_early}"))
        if step.placement:
            blocks.append(("para", f"Placement: {step.placement}"))
        blocks.append(("table", CHECK_HEAD, _check_rows(step.verdict)))
        rows = _summary_rows(step)
        if rows:
            blocks.append(("table", SUMMARY_HEAD, rows))
        if step.golden:
            blocks.append(("table", ["prompt", "passed", "output", "reason"],
                           [[repr(g.prompt), "yes" if g.passed else "no", repr(g.output)[:80], g.reason]
                            for g in step.golden]))
        if step.metrics:
            blocks += [("para", "Server-side metrics during the window (histogram quantiles only where the buckets "
                                "resolve them; 'missing': quantities this server does not export; the verdict "
                                "uses the client-side probes, so none of these passes or fails a canary):"),
                       ("code", json.dumps(step.metrics, indent=1, sort_keys=True, default=str))]
    if report.timeline:
        blocks += [("heading", "Timeline"),
                   ("table", ["time (UTC)", "phase", "event", "detail"],
                    [[_stamp(at), ph, ev, de] for at, ph, ev, de in report.timeline])]
    return blocks


def render_markdown(report: RolloutReport) -> str:
    lines: list[str] = []
    for block in _blocks(report):
        kind = block[0]
        if kind == "title":
            head, _, outcome = block[1].rpartition(": ")
            lines.append(f"# {head}: **{outcome}**")
        elif kind == "items":
            lines += [""] + [f"- {label}: {text}" for label, text in block[1]]
        elif kind == "heading":
            lines += ["", f"## {block[1]}"]
        elif kind == "para":
            lines += ["", block[1]]
        elif kind == "table":
            lines += ["", _md_table(block[1], block[2])]
        elif kind == "code":
            lines += ["", "```json", block[1], "```"]
    return "\n".join(lines) + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    """Escape, then turn Markdown `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(report: RolloutReport) -> str:
    color = {"promoted": "#1a7f37", "rolled_back": "#cf222e"}.get(report.outcome, "#9a6700")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(_title(report))}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
        "pre{background:#f6f8fa;padding:1em;overflow:auto}</style></head><body>",
    ]
    for block in _blocks(report):
        kind = block[0]
        if kind == "title":
            head, _, outcome = block[1].rpartition(": ")
            parts.append(f"<h1>{html.escape(head)}: <span style='color:{color}'>{html.escape(outcome)}</span></h1>")
        elif kind == "items":
            parts.append("<ul>" + "".join(f"<li>{html.escape(label)}: {_inline(text)}</li>"
                                          for label, text in block[1]) + "</ul>")
        elif kind == "heading":
            parts.append(f"<h2>{html.escape(block[1])}</h2>")
        elif kind == "para":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            parts.append(_html_table(block[1], block[2]))
        elif kind == "code":
            parts.append(f"<pre>{html.escape(block[1])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def step_to_dict(step: StepReport) -> dict:
    return asdict(step)


def step_from_dict(data: dict) -> StepReport:
    verdict = Verdict(data["verdict"]["passed"], [Check(**c) for c in data["verdict"]["checks"]],
                      data["verdict"]["summary"], data["verdict"].get("outcome", "passed"))
    def probe_round(r: dict) -> ProbeRound:
        return ProbeRound(**{**r, "e2e_samples": tuple(r.get("e2e_samples") or ())})

    return StepReport(data["canary_percent"], verdict, [probe_round(r) for r in data["canary_rounds"]],
                      [probe_round(r) for r in data["stable_rounds"]], [GoldenOutcome(**g) for g in data["golden"]],
                      data.get("metrics") or {}, data.get("window_s", 0.0), data.get("stopped_early", ""),
                      data.get("placement", ""))
