"""The canary judge's error rates, on real latencies: bench/judge.py replays analysis windows resampled from rounds
recorded on real vLLM CPU pairs (bench/judge_data.json: identical, 1.5x slower, queueing, golden-failing) through
the rollout's own probe loop, early stop and verdict with the default thresholds, 200 windows from each of 3
independent random streams (one stream's rate moves by a few percent with any change in the draws). A change to
the judge that promotes fewer identical canaries, or rolls back fewer 1.5x slower, queueing or golden-failing ones,
than 95 % fails here. (The 1.5x slower canary is the stable server itself behind a delaying proxy, probed alternately with
it: see bench/judge.py's docstring.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_judge_meets_its_error_budget_on_the_recorded_pairs():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "judge.py"), "--windows", "200", "--seeds", "3"],
                          capture_output=True, text=True, timeout=600)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("judge calibration: ")]
    counts = {name: (int(right), int(total)) for name, right, total in
              re.findall(r"(identical|slower|queueing|golden-failing) \w+(?: \w+)? (\d+)/(\d+)", line)}
    assert set(counts) == {"identical", "slower", "queueing", "golden-failing"}, line
    for name in ("identical", "slower", "queueing", "golden-failing"):
        right, total = counts[name]
        assert total == 600 and right >= 0.95 * total, f"{name}: {right}/{total} judged right\n{done.stdout}"
    assert done.returncode == 0, done.stdout
