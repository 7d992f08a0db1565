"""The canary verdict: a pure function of what the probes observed.

(Not the refresh validation's `validate.golden.ValidationVerdict`, which compares a quantized checkpoint's
token ids with the original model's: this one judges a live canary against a stable deployment.)

Latency on shared CPUs (and on busy GPUs) is noisy: a single probe pair can make an identical canary
look 10x slower (see ENVIRONMENT.md). The latency check therefore compares *paired rounds* (stable and
canary probed one after the other, alternating who goes first, never simultaneously). Its ratio is the
geometric mean of the per-round p95 ratios with the lowest and highest 20 % of rounds left out (at least one
each side: the median of three rounds), so one stalled round cannot fail a healthy canary and one lucky round
cannot pass a slow one. On the recorded pairs of bench/judge.py this statistic separates an identical canary
from a 1.5x slower one better than the earlier geometric mean of the median paired ratio and the ratio of the
pooled p95s (wrong verdicts at the same decision ratio: 1.0 % / 2.4 % against 0.4 % / 6.1 %; the pooled p95
follows single stalled rounds, and a CI run's identical canary scored 3.17 on it, 1.78 on this one).
`max_p95_latency_ratio` is the slowdown the judge must catch; it rolls back
above the geometric midpoint between 1 and it (`Thresholds.latency_decision_ratio`, 1.22 for 1.5), so an
identical canary and one exactly that much slower are misjudged about equally rarely. bench/judge.py
measures both error rates on latencies recorded from real vLLM pairs (see the README). Errors and golden
prompts are counted over all rounds.

The ratio says *how much* slower; a one-sided Mann-Whitney rank test on the per-request latencies of all
rounds (as Netflix's Kayenta judge does) says whether the canary is slower *at all* rather than hit by a
few stalled requests. The latency check fails only when both agree: the ratio is above the
threshold and the rank test is significant (p < `latency_alpha`). Rounds recorded without samples fall
back to the ratio alone.

A verdict is `pass` only if every check passes. As in Argo Rollouts' analysis, the other outcomes are
distinct: `failed` (a check saw the canary break a threshold), `inconclusive` (not enough data to say,
e.g. too few comparable rounds; never a silent pass, the rollout does not continue), and `error` (the
probes could not measure: `max_consecutive_errors` rounds in a row got no response at all). A round
that got no response at all is a measurement error, retried rather than counted as canary errors;
HTTP errors and failures within a round that otherwise got answers count into the error rate.

`decisive_failure` is the early stop: evidence that cannot be outvoted by more rounds (golden
prompts failing, enough errors that the rate is over its threshold whatever comes next) ends the
analysis window at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from llmops.canary.stats import mann_whitney_greater, median, trimmed_geometric_mean
from llmops.config.schema import RolloutProbe, RolloutThresholds
from llmops.golden import GoldenOutcome

CheckStatus = Literal["pass", "fail", "inconclusive", "error", "skipped"]
Outcome = Literal["passed", "failed", "inconclusive", "error"]


_LIMITS, _PROBE = RolloutThresholds(), RolloutProbe()


@dataclass(frozen=True)
class Thresholds:
    """What the verdict needs: a deployment's `RolloutThresholds` (the registry's, as the trigger form may
    override them) plus the probe's round counts; its defaults are the registry's."""

    max_p95_latency_ratio: float = _LIMITS.max_p95_latency_ratio
    max_error_rate: float = _LIMITS.max_error_rate
    min_golden_pass_rate: float = _LIMITS.min_golden_pass_rate
    min_rounds: int = _PROBE.min_rounds
    latency_alpha: float = 0.05
    min_errors_to_stop: int = _PROBE.min_errors_to_stop

    @property
    def latency_decision_ratio(self) -> float:
        """Where the latency check rolls back: the geometric midpoint between an identical canary (1.0) and the
        slowdown it must catch (`max_p95_latency_ratio`), 1.22 for 1.5, so both are misjudged equally rarely."""
        return self.max_p95_latency_ratio ** 0.5

    @classmethod
    def of(cls, limits: RolloutThresholds, probe: RolloutProbe) -> Thresholds:
        return cls(**limits.model_dump(), min_rounds=probe.min_rounds, min_errors_to_stop=probe.min_errors_to_stop)


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
    measurement_error: str = ""  # no request got any response: the probe could not measure (not counted as errors)
    duration_s: float = 0.0  # wall time of the round (how much of the analysis window it used)


@dataclass(frozen=True)
class Observations:
    """Everything one analysis window recorded about the canary (and the stable it is compared with)."""

    golden: list[GoldenOutcome] = field(default_factory=list)
    canary_rounds: list[ProbeRound] = field(default_factory=list)
    stable_rounds: list[ProbeRound] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # parsed vLLM /metrics deltas, for the report
    stopped_early: str = ""  # why the window ended before its time (decisive evidence), empty if it ran out
    canary_gone: str = ""  # the canary process / pods disappeared during the window
    measurement_errors: int = 0  # rounds without any response
    error_limit_reached: str = ""  # max_consecutive_errors rounds in a row without any response
    has_stable: bool | None = None  # is there a stable to compare with? None: inferred from stable_rounds


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
    outcome: Outcome = "passed"

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


def _measured(rounds: list[ProbeRound]) -> list[ProbeRound]:
    return [r for r in rounds if not r.measurement_error]


def _error_check(obs: Observations, t: Thresholds) -> Check:
    rounds = _measured(obs.canary_rounds)
    requests = sum(r.requests for r in rounds)
    errors = sum(r.errors for r in rounds)
    if requests == 0:
        return Check("error_rate", "inconclusive", None, t.max_error_rate,
                     "the canary answered no probe request")
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
    if obs.has_stable is False or (obs.has_stable is None and not obs.stable_rounds):
        return Check("p95_latency_ratio", "skipped", None, t.max_p95_latency_ratio,
                     "no stable version to compare with (initial deployment)")
    ratios = paired_ratios(obs.canary_rounds, obs.stable_rounds)
    if len(ratios) < t.min_rounds:
        return Check("p95_latency_ratio", "inconclusive", median(ratios) if ratios else None,
                     t.max_p95_latency_ratio, f"only {len(ratios)} comparable round(s), need {t.min_rounds}")
    ratio = trimmed_geometric_mean(ratios)
    assert ratio is not None
    decision = t.latency_decision_ratio
    canary_samples = [v for r in obs.canary_rounds for v in r.e2e_samples]
    stable_samples = [v for r in obs.stable_rounds for v in r.e2e_samples]
    detail = (f"compared: p95 ratio {ratio:.2f} = the geometric mean of {len(ratios)} paired-round p95 ratios, "
              "the lowest and highest 20 % left out")
    detail += (f" (a canary {t.max_p95_latency_ratio:g}x slower must fail: rolled back above {decision:.2f}); "
               "per round " + ", ".join(f"{r:.2f}" for r in ratios))
    p_value = mann_whitney_greater(canary_samples, stable_samples)
    over = ratio > decision
    if p_value is not None:
        detail += (f"; rank test canary slower p={p_value:.3g} (alpha {t.latency_alpha:g}, "
                   f"{len(canary_samples)} vs {len(stable_samples)} requests)")
        significant = p_value < t.latency_alpha
        if over and not significant:
            detail += ": not significant, the ratio is treated as noise"
        elif significant and not over:
            detail += (": significant, but outvoted by the ratio (below the decision ratio): "
                       "the canary is measurably slower, by less than the judge acts on")
        over = over and significant
    return Check("p95_latency_ratio", "fail" if over else "pass", ratio, t.max_p95_latency_ratio, detail)


def _paired(rounds_a: list[ProbeRound], rounds_b: list[ProbeRound]) -> tuple[list[ProbeRound], list[ProbeRound]]:
    """Drop pairs where either side could not measure (a measurement error on stable says nothing of canary)."""
    pairs = [(c, s) for c, s in zip(rounds_a, rounds_b, strict=False)
             if not c.measurement_error and not s.measurement_error]
    return [c for c, _ in pairs], [s for _, s in pairs]


def _alive_check(obs: Observations) -> Check | None:
    if obs.canary_gone:
        return Check("canary_alive", "fail", None, None, f"the canary crashed or disappeared: {obs.canary_gone}")
    return None


def decisive_failure(obs: Observations, t: Thresholds) -> str | None:
    """Evidence more rounds cannot outvote: stop the analysis window now. Pure."""
    if obs.golden:
        golden = _golden_check(obs, t)
        if golden.status == "fail":
            return f"golden prompts failing ({golden.detail})"
    rounds = _measured(obs.canary_rounds)
    errors = sum(r.errors for r in rounds)
    requests = sum(r.requests for r in rounds)
    if errors >= t.min_errors_to_stop and requests and errors / requests > t.max_error_rate:
        return f"{errors} errors in {requests} canary requests ({errors / requests:.1%} > {t.max_error_rate:.1%})"
    if obs.error_limit_reached:
        return obs.error_limit_reached
    return None


def judge(obs: Observations, thresholds: Thresholds) -> Verdict:
    """Decide whether the canary may take more traffic. Pure: no clock, no I/O."""
    canary_rounds, stable_rounds = obs.canary_rounds, obs.stable_rounds
    if stable_rounds:
        canary_rounds, stable_rounds = _paired(canary_rounds, stable_rounds)
    measured = Observations(obs.golden, canary_rounds, stable_rounds, obs.metrics, has_stable=obs.has_stable)
    checks = [_golden_check(measured, thresholds), _error_check(measured, thresholds),
              _latency_check(measured, thresholds)]
    alive = _alive_check(obs)
    if alive is not None:
        checks.insert(0, alive)
    if obs.error_limit_reached:
        checks.append(Check("measurements", "error", float(obs.measurement_errors), None, obs.error_limit_reached))
    if obs.stopped_early:
        # a decisive failure ended the window: checks that lack data because of that are not the reason
        checks = [c if c.status != "inconclusive" else Check(c.name, "skipped", c.observed, c.threshold,
                                                              c.detail + " (window stopped early)")
                  for c in checks]
    statuses = {c.status for c in checks}
    outcome: Outcome = ("failed" if "fail" in statuses else "error" if "error" in statuses
                        else "inconclusive" if "inconclusive" in statuses else "passed")
    passed = outcome == "passed"
    if passed:
        summary = "canary healthy: " + "; ".join(f"{c.name} {c.status}" for c in checks)
    else:
        bad = [c for c in checks if c.status in ("fail", "error", "inconclusive")]
        summary = f"canary rejected ({outcome}): " + "; ".join(f"{c.name}: {c.detail}" for c in bad)
        if obs.stopped_early:
            summary += f" (analysis stopped early: {obs.stopped_early})"
    return Verdict(passed, checks, summary, outcome)
