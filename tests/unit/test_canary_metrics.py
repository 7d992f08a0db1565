"""Parsing vLLM /metrics (recorded from a real vLLM 0.32 CPU server after 8 requests) and older names."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.canary.metrics import parse, promql_window_queries, window_summary

RECORDED = (Path(__file__).parent / "data" / "vllm_0.32_metrics.txt").read_text()


def test_recorded_vllm_metrics_parse():
    snap = parse(RECORDED)
    assert snap.names["e2e_latency"] == "vllm:e2e_request_latency_seconds"
    assert snap.names["ttft"] == "vllm:time_to_first_token_seconds"
    assert snap.histograms["e2e_latency"].count >= 8
    assert snap.values["waiting"] == 0
    assert snap.values["requests"] >= 8


def test_window_summary_is_the_difference_between_scrapes():
    before = parse(RECORDED)
    after = parse(RECORDED)
    after.histograms["e2e_latency"].count += 4
    after.histograms["e2e_latency"].sum += 2.0
    for le in after.histograms["e2e_latency"].buckets:
        if le >= 0.5:
            after.histograms["e2e_latency"].buckets[le] += 4
    summary = window_summary(before, after)
    assert summary["e2e_latency_count"] == 4
    assert summary["e2e_latency_mean_s"] == pytest.approx(0.5)
    assert 0.3 <= summary["e2e_latency_p95_s"] <= 0.5
    assert summary["requests"] == 0


def test_quantiles_below_the_histogram_resolution_are_not_presented_as_measurements():
    """A tiny model on CPU: every request lands in vLLM's first e2e bucket; its bound is not a p95."""
    before = parse(RECORDED)
    after = parse(RECORDED)
    first = min(after.histograms["e2e_latency"].buckets)
    after.histograms["e2e_latency"].count += 6
    for le in after.histograms["e2e_latency"].buckets:
        after.histograms["e2e_latency"].buckets[le] += 6
    summary = window_summary(before, after)
    assert summary["e2e_latency_count"] == 6
    assert summary["e2e_latency_p95_s"].startswith("below histogram resolution")
    assert f"{first:g} s" in summary["e2e_latency_p95_s"]


def test_renamed_metrics_are_still_found():
    """Older vLLM / exporters: underscores instead of ':' and request_latency instead of e2e_request_latency."""
    old = RECORDED.replace("vllm:e2e_request_latency_seconds", "vllm:request_latency_seconds").replace("vllm:", "vllm_")
    snap = parse(old)
    assert snap.names["e2e_latency"] == "vllm_request_latency_seconds"
    assert snap.names["ttft"] == "vllm_time_to_first_token_seconds"
    assert snap.histograms["e2e_latency"].count == parse(RECORDED).histograms["e2e_latency"].count


def test_missing_metrics_are_reported_unavailable_not_zero():
    assert window_summary(None, None) == {"available": False}
    assert parse("# nothing here\n").names == {}


def test_promql_queries_select_the_track():
    queries = promql_window_queries("tiny-llama-chat", "canary", 60)
    assert 'service="tiny-llama-chat-canary"' in queries["e2e_latency_p95_s"] and "[60s]" in queries["requests"]
