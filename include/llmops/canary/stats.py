"""Small, dependency-free statistics used by probes and the verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) like numpy's default; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50.0)


def trimmed_geometric_mean(ratios: Sequence[float], share: float = 0.2) -> float | None:
    """The geometric mean of positive `ratios` without the lowest and highest `share` of them (at least one each side
    from three values on: the median of three), so a stalled or a lucky round cannot decide alone."""
    logs = sorted(math.log(r) for r in ratios if r > 0)
    if not logs:
        return None
    cut = max(1, int(len(logs) * share)) if len(logs) >= 3 else 0
    kept = logs[cut:len(logs) - cut]
    return math.exp(sum(kept) / len(kept))


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> float | None:
    """One-sided Mann-Whitney U test: p-value for "x tends to be larger than y" (normal approximation with
    tie correction and continuity correction). None when either sample is empty."""
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        return None
    pooled = sorted([(v, 0) for v in x] + [(v, 1) for v in y])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = rank
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r1 = sum(rank for rank, (_, group) in zip(ranks, pooled, strict=True) if group == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:
        return 0.5
    z = (u1 - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2))
