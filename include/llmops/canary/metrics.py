"""Serving runtimes' Prometheus metrics: scrape (or PromQL), parse with prometheus_client, tolerate renames.

vLLM renamed metrics across versions (e.g. `vllm:time_per_output_token_seconds` became
`vllm:inter_token_latency_seconds`; some exporters rewrite `:` to `_`). Each quantity is looked up by
a list of candidate names, the first present wins, and the name actually used is recorded.

TensorRT-LLM's `trtllm-serve` answers `/metrics` with JSON iteration statistics (drained on read), not
Prometheus text; its Prometheus exposition is `/prometheus/metrics`, mounted only when the LLM API option
`return_perf_metrics` is on (the rollout's pods turn it on, see serving/trtllm.py). Its names carry the
`trtllm_` prefix: request latency, time to first token and finished requests since 1.1; the queue and
running-request gauges and token counters only in later releases and only with `enable_iter_perf_stats`.
A quantity the server does not export is listed under `missing` in the window summary and the report.

None of these server-side numbers decides the verdict (canary/verdict.py judges what the probes measured
against the OpenAI-compatible API, the same for both runtimes), so an unavailable metric can neither
pass nor fail a canary: the report says it was not available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

CANDIDATES: dict[str, tuple[str, ...]] = {
    "e2e_latency": ("vllm:e2e_request_latency_seconds", "vllm_e2e_request_latency_seconds",
                    "vllm:request_latency_seconds", "trtllm_e2e_request_latency_seconds"),
    "ttft": ("vllm:time_to_first_token_seconds", "vllm_time_to_first_token_seconds",
             "trtllm_time_to_first_token_seconds"),
    "requests": ("vllm:request_success", "vllm_request_success", "vllm:request_success_total",
                 "vllm:num_requests_finished", "trtllm_request_success_total"),
    "waiting": ("vllm:num_requests_waiting", "vllm_num_requests_waiting", "trtllm_num_requests_waiting"),
    "running": ("vllm:num_requests_running", "vllm_num_requests_running", "trtllm_num_requests_running"),
    "generation_tokens": ("vllm:generation_tokens", "vllm_generation_tokens", "vllm:generation_tokens_total",
                          "trtllm_generation_tokens_total"),
}

#: Where each serving runtime exposes Prometheus text (trtllm-serve's /metrics is JSON iteration stats).
METRICS_PATHS = {"vllm": "/metrics", "tensorrt-llm": "/prometheus/metrics"}
#: PromQL names per runtime: the metric prefix and the finished-requests counter.
_PROMQL_NAMES = {
    "vllm": {"e2e": "vllm:e2e_request_latency_seconds", "ttft": "vllm:time_to_first_token_seconds",
             "success": "vllm:request_success_total", "waiting": "vllm:num_requests_waiting"},
    "tensorrt-llm": {"e2e": "trtllm_e2e_request_latency_seconds", "ttft": "trtllm_time_to_first_token_seconds",
                     "success": "trtllm_request_success_total", "waiting": "trtllm_num_requests_waiting"},
}


def metrics_path(runtime: str) -> str:
    """The HTTP path of `runtime`'s Prometheus exposition; ValueError naming the runtimes for another."""
    if runtime not in METRICS_PATHS:
        raise ValueError(f"serving runtime {runtime!r} has no known metrics endpoint; "
                         f"fix: use one of {', '.join(METRICS_PATHS)}")
    return METRICS_PATHS[runtime]


@dataclass
class Histogram:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    count: float = 0.0
    sum: float = 0.0

    def minus(self, other: Histogram | None) -> Histogram:
        if other is None:
            return self
        return Histogram({le: c - other.buckets.get(le, 0.0) for le, c in self.buckets.items()},
                         self.count - other.count, self.sum - other.sum)

    def quantile(self, q: float) -> float | None:
        """Prometheus-style histogram_quantile: linear interpolation inside the bucket."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        previous_le, previous_count = 0.0, 0.0
        for le in sorted(self.buckets):
            count = self.buckets[le]
            if count >= rank:
                if math.isinf(le):
                    return previous_le
                width = count - previous_count
                return previous_le + (le - previous_le) * ((rank - previous_count) / width if width else 0)
            previous_le, previous_count = le, count
        return previous_le


    def bucket_of(self, q: float) -> tuple[float, float] | None:
        """(lower, upper] bounds of the bucket holding the q-quantile; None without data."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        previous_le = 0.0
        for le in sorted(self.buckets):
            if self.buckets[le] >= rank:
                return previous_le, le
            previous_le = le
        return previous_le, math.inf

    def resolved_quantile(self, q: float) -> float | str | None:
        """The q-quantile where the buckets resolve it, else a note saying they do not.

        Interpolating inside a bucket only estimates: when the quantile falls in the first bucket (every
        request of a tiny model on CPU does, for vLLM's e2e buckets), in the overflow bucket, or in a bucket
        whose upper bound is more than `MAX_BUCKET_SPREAD` times its lower bound, the "quantile" would be a
        bucket bound, not a measurement."""
        bounds = self.bucket_of(q)
        if bounds is None:
            return None
        low, high = bounds
        if low <= 0:
            return f"below histogram resolution (all <= {high:g} s, the first bucket)"
        if math.isinf(high):
            return f"above histogram resolution (> {low:g} s, the last bucket)"
        if high > MAX_BUCKET_SPREAD * low:
            return f"below histogram resolution (somewhere in {low:g}-{high:g} s)"
        return self.quantile(q)


MAX_BUCKET_SPREAD = 2.5


@dataclass
class Snapshot:
    histograms: dict[str, Histogram] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # quantity -> metric name found


def _family_names(name: str) -> set[str]:
    base = name.removesuffix("_total")
    return {name, base, base.replace(":", "_")}


def parse(text: str) -> Snapshot:
    """Parse Prometheus text exposition into the quantities the analysis uses (summed over labels)."""
    families = {family.name: family for family in text_string_to_metric_families(text)}
    snap = Snapshot()
    for quantity, candidates in CANDIDATES.items():
        family = None
        for candidate in candidates:
            for name in _family_names(candidate):
                if name in families:
                    family = families[name]
                    break
            if family is not None:
                break
        if family is None:
            continue
        snap.names[quantity] = family.name
        if family.type == "histogram":
            hist = Histogram()
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    hist.buckets[le] = hist.buckets.get(le, 0.0) + sample.value
                elif sample.name.endswith("_count"):
                    hist.count += sample.value
                elif sample.name.endswith("_sum"):
                    hist.sum += sample.value
            snap.histograms[quantity] = hist
        else:
            snap.values[quantity] = sum(s.value for s in family.samples
                                        if not s.name.endswith(("_created", "_bucket")))
    return snap


def scrape(base_url: str, *, path: str = "/metrics", timeout_s: float = 10.0) -> Snapshot | None:
    """GET `path` (the runtime's Prometheus text, see METRICS_PATHS); None when the server has no metrics
    endpoint there (not an error for the verdict)."""
    try:
        response = httpx.get(f"{base_url.rstrip('/')}{path}", timeout=timeout_s)
        response.raise_for_status()
        return parse(response.text)
    except (httpx.HTTPError, ValueError):
        return None


def window_summary(before: Snapshot | None, after: Snapshot | None) -> dict:
    """What happened on the server between two scrapes: request count, latency quantiles, queue."""
    if after is None:
        return {"available": False}
    out: dict = {"available": True, "metric_names": dict(after.names),
                 "missing": sorted(set(CANDIDATES) - set(after.names))}
    for quantity in ("e2e_latency", "ttft"):
        if quantity in after.histograms:
            delta = after.histograms[quantity].minus(before.histograms.get(quantity) if before else None)
            out[f"{quantity}_count"] = delta.count
            out[f"{quantity}_mean_s"] = delta.sum / delta.count if delta.count else None
            out[f"{quantity}_p50_s"] = delta.resolved_quantile(0.5)
            out[f"{quantity}_p95_s"] = delta.resolved_quantile(0.95)
    for quantity in ("requests", "generation_tokens"):
        if quantity in after.values:
            out[quantity] = after.values[quantity] - (before.values.get(quantity, 0.0) if before else 0.0)
    for quantity in ("waiting", "running"):
        if quantity in after.values:
            out[quantity] = after.values[quantity]
    return out


def promql_instant(base_url: str, query: str, *, timeout_s: float = 10.0, headers: dict | None = None) -> float | None:
    """One PromQL instant query (first series' value) against a Prometheus-compatible server (e.g. ARMS)."""
    response = httpx.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": query}, headers=headers or {},
                         timeout=timeout_s)
    response.raise_for_status()
    result = response.json().get("data", {}).get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def promql_window_queries(deployment: str, track: str, window_s: int, runtime: str = "vllm") -> dict[str, str]:
    """PromQL for the same quantities when a Prometheus connection is configured (ServiceMonitor labels)."""
    metrics_path(runtime)  # refuses an unknown runtime
    names = _PROMQL_NAMES[runtime]
    sel = f'service="{deployment}-{track}"'
    w = f"{int(window_s)}s"
    return {
        "e2e_latency_p95_s": f"histogram_quantile(0.95, sum by (le) (rate({names['e2e']}_bucket{{{sel}}}[{w}])))",
        "ttft_p95_s": f"histogram_quantile(0.95, sum by (le) (rate({names['ttft']}_bucket{{{sel}}}[{w}])))",
        "requests": f"sum(increase({names['success']}{{{sel}}}[{w}]))",
        "waiting": f"max({names['waiting']}{{{sel}}})",
    }
