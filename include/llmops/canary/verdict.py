"""The canary verdict: a pure function of what the probes observed.

Latency on shared CPUs (and on busy GPUs) is noisy: a single probe pair can make an identical canary
look 10x slower (see ENVIRONMENT.md). The latency check therefore compares *paired rounds* (stable and
canary probed one after the other, alternating who goes first, never simultaneously) and takes the
median of the per-round p95 ratios, so one stalled round cannot fail a healthy canary, and one lucky
round cannot pass a slow one. Errors and golden prompts are counted over all rounds.

The ratio says *how much* slower; a one-sided Mann-Whitney rank test on the per-request latencies of all
rounds (as Netflix's Kayenta judge does) says whether the canary is slower *at all* rather than hit by a
few stalled requests. The latency check fails only when both agree: the median ratio is above the
threshold and the rank test is significant (p < `latency_alpha`). Rounds recorded without samples fall
back to the ratio alone.

A verdict is `pass` only if every check passes; missing data (no stable to compare with is allowed
and marked `skipped`, but too few rounds or no successful requests) is `fail`, never a silent pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from llmops.canary.stats import mann_whitney_greater, median

CheckStatus = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True)
class Thresholds:
    max_p95_latency_ratio: float = 1.5
    max_error_rate: float = 0.01
    min_golden_pass_rate: float = 1.0
    min_rounds: int = 3
    latency_alpha: float = 0.05


@dataclass(frozen=True)
class ProbeRound:
    """One bounded load run against one backend."""

    target: Literal["stable", "canary"]
    requests: int
    errors: int
    p50_e2e_s: float | None = None
    p95_e2e_s: float | None = None
    p50_ttft_s: float | None = None
    p95_ttft_s: float | None = None
    started_at: float = 0.0
    e2e_samples: tuple[float, ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


@dataclass(frozen=True)
class GoldenOutcome:
    prompt: str
    passed: bool
    output: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Observations:
    """Everything one analysis window recorded about the canary (and the stable it is compared with)."""

    golden: list[GoldenOutcome] = field(default_factory=list)
    canary_rounds: list[ProbeRound] = field(default_factory=list)
    stable_rounds: list[ProbeRound] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # parsed vLLM /metrics deltas, for the report


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    observed: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[Check]
    summary: str

    def to_dict(self) -> dict:
        return asdict(self)


def _golden_check(obs: Observations, t: Thresholds) -> Check:
    if not obs.golden:
        if t.min_golden_pass_rate > 0:
            return Check("golden_prompts", "fail", None, t.min_golden_pass_rate,
                         "no golden prompt was evaluated but a minimum pass rate is required")
        return Check("golden_prompts", "skipped", None, t.min_golden_pass_rate, "no golden prompts configured")
    rate = sum(g.passed for g in obs.golden) / len(obs.golden)
    failed = [g.prompt for g in obs.golden if not g.passed]
    ok = rate >= t.min_golden_pass_rate
    detail = f"{sum(g.passed for g in obs.golden)}/{len(obs.golden)} passed"
    if failed:
        detail += "; failed: " + ", ".join(repr(p) for p in failed[:5])
    return Check("golden_prompts", "pass" if ok else "fail", rate, t.min_golden_pass_rate, detail)


def _error_check(obs: Observations, t: Thresholds) -> Check:
    requests = sum(r.requests for r in obs.canary_rounds)
    errors = sum(r.errors for r in obs.canary_rounds)
    if requests == 0:
        return Check("error_rate", "fail", None, t.max_error_rate, "the canary received no probe requests")
    rate = errors / requests
    return Check("error_rate", "pass" if rate <= t.max_error_rate else "fail", rate, t.max_error_rate,
                 f"{errors} errors in {requests} canary requests")


def paired_ratios(canary: list[ProbeRound], stable: list[ProbeRound], attr: str = "p95_e2e_s") -> list[float]:
    """Per-round canary/stable ratios of `attr`, pairing rounds in order; rounds lacking data are skipped."""
    ratios = []
    for c, s in zip(canary, stable, strict=False):
        cv, sv = getattr(c, attr), getattr(s, attr)
        if cv is not None and sv is not None and sv > 0:
            ratios.append(cv / sv)
    return ratios


def _latency_check(obs: Observations, t: Thresholds) -> Check:
    if not obs.stable_rounds:
        return Check("p95_latency_ratio", "skipped", None, t.max_p95_latency_ratio,
                     "no stable version to compare with (initial deployment)")
    ratios = paired_ratios(obs.canary_rounds, obs.stable_rounds)
    if len(ratios) < t.min_rounds:
        return Check("p95_latency_ratio", "fail", median(ratios) if ratios else None, t.max_p95_latency_ratio,
                     f"only {len(ratios)} comparable round(s), need {t.min_rounds}: inconclusive")
    ratio = median(ratios)
    assert ratio is not None
    detail = f"median of {len(ratios)} paired-round ratios " + ", ".join(f"{r:.2f}" for r in ratios)
    canary_samples = [v for r in obs.canary_rounds for v in r.e2e_samples]
    stable_samples = [v for r in obs.stable_rounds for v in r.e2e_samples]
    p_value = mann_whitney_greater(canary_samples, stable_samples)
    over = ratio > t.max_p95_latency_ratio
    if p_value is not None:
        detail += f"; rank test canary slower p={p_value:.3g} ({len(canary_samples)} vs {len(stable_samples)} requests)"
        if over and p_value >= t.latency_alpha:
            detail += ": not significant, treated as noise"
        over = over and p_value < t.latency_alpha
    return Check("p95_latency_ratio", "fail" if over else "pass", ratio, t.max_p95_latency_ratio, detail)


def judge(obs: Observations, thresholds: Thresholds) -> Verdict:
    """Decide whether the canary may take more traffic. Pure: no clock, no I/O."""
    checks = [_golden_check(obs, thresholds), _error_check(obs, thresholds), _latency_check(obs, thresholds)]
    failed = [c for c in checks if c.status == "fail"]
    passed = not failed
    if passed:
        summary = "canary healthy: " + "; ".join(f"{c.name} {c.status}" for c in checks)
    else:
        summary = "canary rejected: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
    return Verdict(passed, checks, summary)
