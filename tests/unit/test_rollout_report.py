"""The rollout report renders every number a reviewer needs, in Markdown and escaped HTML."""

from __future__ import annotations

from llmops.canary.verdict import Observations, ProbeRound, Thresholds, judge
from llmops.golden import GoldenOutcome
from llmops.rollout.report import RolloutReport, StepReport, render_html, render_markdown


def make_report():
    t = Thresholds(max_p95_latency_ratio=1.5)
    canary = [ProbeRound("canary", 8, 0, 0.2, 0.4, 0.05, 0.09)] * 3
    stable = [ProbeRound("stable", 8, 0, 0.1, 0.1, 0.04, 0.05)] * 3
    golden = [GoldenOutcome("One, two, three,", True, " four, five."), GoldenOutcome("<b>", False, "x", "expected 'y'")]
    verdict = judge(Observations(golden, canary, stable), t)
    step = StepReport(10, verdict, canary, stable, golden, {"canary": {"vllm:num_requests_waiting": 0}}, 30)
    return RolloutReport("tiny-llama-chat", "tiny-llama", "local", "manual__1", "file:///c/manifest.json",
                         "file:///s/manifest.json", "rolled_back", verdict.summary, t, [step],
                         [(1.0, "deploying", "start", "steps [10, 100]")], {"canary_ready": 41.0})


def test_markdown_has_the_comparison_numbers_and_verdict():
    md = render_markdown(make_report())
    assert "ROLLED_BACK" in md
    assert "| canary | 3 | 24 | 0 | 50 ms | 90 ms | 200 ms | 400 ms |" in md
    assert "p95_latency_ratio | FAIL | 4.00" in md
    assert "golden_prompts | FAIL | 50.0 %" in md
    assert "file:///c/manifest.json" in md and "canary_ready 41.0 s" in md


def test_html_is_escaped():
    page = render_html(make_report())
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert page.startswith("<!doctype html>") and "ROLLED_BACK" in page


def test_html_has_everything_the_markdown_has():
    import re

    report = make_report()
    markdown, page = render_markdown(report), render_html(report)
    text = html_to_text(page)
    for line in markdown.splitlines():
        for cell in re.split(r"\s*\|\s*", line.strip("-#| `*")):
            cell = cell.replace("`", "").replace("**", "").strip()
            if cell and not set(cell) <= set("-|") and not cell.startswith("```"):
                assert cell in text, cell
    assert "at least 3 paired rounds" in text and "num_requests_waiting" in text


def html_to_text(page: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", " ", page)).replace("  ", " ")


def test_manual_roll_back_extra_args_and_early_stop_are_labelled():
    report = make_report()
    report.manual_roll_back = True
    report.canary_extra_args = ["--max-num-seqs", "1"]
    report.steps[0].stopped_early = "golden prompts failing (1/2 passed)"
    for text in (render_markdown(report), html_to_text(render_html(report))):
        assert text.splitlines()[0].lstrip("# ").startswith("Manual roll back of tiny-llama") or \
            "Manual roll back of tiny-llama" in text
        assert "--max-num-seqs 1" in text and "stopped early" in text


def test_step_reports_round_trip_through_json():
    import json

    from llmops.rollout.report import step_from_dict, step_to_dict

    step = make_report().steps[0]
    assert step_from_dict(json.loads(json.dumps(step_to_dict(step)))) == step


def test_a_promotion_says_until_when_the_previous_version_is_kept_and_a_warm_roll_back_says_so():
    from dataclasses import replace

    promoted = replace(make_report(), outcome="promoted", runtime="kubernetes",
                       kept_previous={"version": "file:///s/manifest.json", "replicas": 2, "until": 1767225600.0})
    md = render_markdown(promoted)
    assert "previous version kept warm" in md and "`file:///s/manifest.json` (2 replica(s)) until " \
        "2026-01-01 00:00:00 UTC" in md
    assert "2026-01-01 00:00:00 UTC" in render_html(promoted)
    warm = replace(make_report(), outcome="promoted", manual_roll_back=True, warm_roll_back=True)
    md = render_markdown(warm)
    assert md.startswith("# Warm roll back of tiny-llama") and "no new server started" in md
    assert "previous version kept warm" not in md
