"""One analysis window: golden prompts on the canary, alternating bounded load, /metrics before and after."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from llmops.canary import metrics
from llmops.canary.probes import AlternatingProbe, run_golden
from llmops.canary.verdict import Observations

log = logging.getLogger(__name__)


def analyse(*, canary_url: str, stable_url: str | None, model: str, golden_prompts: Sequence, window_s: float,
            requests: int = 8, concurrency: int = 2, max_tokens: int = 16, pause_s: float = 0.5,
            min_rounds: int = 3, timeout_s: float = 30.0) -> Observations:
    """Observe the canary (and stable) for `window_s` seconds; the golden prompts count into the window."""
    started = time.monotonic()
    before = {"canary": metrics.scrape(canary_url), "stable": metrics.scrape(stable_url) if stable_url else None}
    golden = run_golden(canary_url, model, golden_prompts, timeout_s=timeout_s)
    log.info("golden prompts on the canary: %d/%d passed", sum(g.passed for g in golden), len(golden))
    probe = AlternatingProbe(stable_url, canary_url, model, requests=requests, concurrency=concurrency,
                             max_tokens=max_tokens, pause_s=pause_s, min_rounds=min_rounds, timeout_s=timeout_s)
    remaining = max(0.0, window_s - (time.monotonic() - started))
    canary_rounds, stable_rounds = probe.run(remaining)
    after = {"canary": metrics.scrape(canary_url), "stable": metrics.scrape(stable_url) if stable_url else None}
    server_side = {track: metrics.window_summary(before[track], after[track])
                   for track in ("canary", "stable") if track == "canary" or stable_url}
    return Observations(golden, canary_rounds, stable_rounds, server_side)
