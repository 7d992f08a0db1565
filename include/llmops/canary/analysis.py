"""One analysis window: golden prompts on the canary, alternating bounded load, /metrics before and after.

The window ends early on decisive evidence: `stop_reason(observations so far)` is asked after the golden
prompts and after every probe round, so a canary failing its golden prompts, erroring, or gone is
judged within one round instead of after the whole window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from llmops.canary import metrics
from llmops.canary.probes import AlternatingProbe, run_golden
from llmops.canary.verdict import Observations

log = logging.getLogger(__name__)


def analyse(*, canary_url: str, stable_url: str | None, model: str, golden_prompts: Sequence, window_s: float,
            requests: int = 16, concurrency: int = 8, max_tokens: int = 16, pause_s: float = 0.5,
            min_rounds: int = 3, timeout_s: float = 30.0, max_consecutive_errors: int = 4,
            metrics_path: str = "/metrics",
            stop_reason: Callable[[Observations], str | None] | None = None) -> Observations:
    """Observe the canary (and stable) for `window_s` seconds; the golden prompts count into the window.
    `metrics_path`: where the serving runtime exposes Prometheus text (metrics.METRICS_PATHS)."""
    started = time.monotonic()
    before = _scrape(canary_url, stable_url, metrics_path)
    golden = run_golden(canary_url, model, golden_prompts, timeout_s=timeout_s)
    log.info("golden prompts on the canary: %d/%d passed", sum(g.passed for g in golden), len(golden))
    probe = AlternatingProbe(stable_url, canary_url, model, requests=requests, concurrency=concurrency,
                             max_tokens=max_tokens, pause_s=pause_s, min_rounds=min_rounds, timeout_s=timeout_s,
                             max_consecutive_errors=max_consecutive_errors)
    remaining = max(0.0, window_s - (time.monotonic() - started))
    observed = observe(golden, probe, remaining, stop_reason=stop_reason)
    return _finish(observed, canary_url, stable_url, before, metrics_path)


def observe(golden: list, probe: AlternatingProbe, remaining_s: float, *,
            stop_reason: Callable[[Observations], str | None] | None = None,
            clock: Callable[[], float] = time.monotonic) -> Observations:
    """The window after the golden prompts: `probe`'s rounds for `remaining_s` seconds, `stop_reason` asked
    after the golden prompts and after every round. The rollout runs it on live servers (`analyse`);
    bench/judge.py replays recorded rounds through it (a probe with `measure`, `sleep` and `clock` replaced)."""
    has_stable = probe.stable_url is not None
    observed = Observations(golden, has_stable=has_stable)
    reason = stop_reason(observed) if stop_reason else None
    if reason:
        log.warning("analysis stopped before the load rounds: %s", reason)
        return replace(observed, stopped_early=reason)
    state: dict = {"reason": None}

    def after_round(canary_rounds, stable_rounds, error_limit: str) -> bool:
        so_far = Observations(golden, list(canary_rounds), list(stable_rounds), {},
                              error_limit_reached=error_limit, has_stable=has_stable)
        state["reason"] = (stop_reason(so_far) if stop_reason else None) or error_limit or None
        return bool(state["reason"])

    canary_rounds, stable_rounds, error_limit = probe.run(remaining_s, after_round=after_round, clock=clock)
    errors = sum(1 for r in canary_rounds + stable_rounds if r.measurement_error)
    if state["reason"]:
        log.warning("analysis stopped early: %s", state["reason"])
    return Observations(golden, canary_rounds, stable_rounds, {}, measurement_errors=errors,
                        error_limit_reached=error_limit, has_stable=has_stable,
                        stopped_early=state["reason"] or "")


def _scrape(canary_url: str, stable_url: str | None, path: str) -> dict:
    return {"canary": metrics.scrape(canary_url, path=path),
            "stable": metrics.scrape(stable_url, path=path) if stable_url else None}


def _finish(observed: Observations, canary_url: str, stable_url: str | None,
            before: dict, metrics_path: str) -> Observations:
    after = _scrape(canary_url, stable_url, metrics_path)
    server_side = {track: metrics.window_summary(before[track], after[track])
                   for track in ("canary", "stable") if track == "canary" or stable_url}
    return replace(observed, metrics=server_side)
