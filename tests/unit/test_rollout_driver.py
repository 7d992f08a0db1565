"""The driver's persisted progress travels through a trigger (JSON) and comes back unchanged: nothing is replayed."""

from __future__ import annotations

import json

from llmops.canary.verdict import Observations, ProbeRound, Thresholds, judge
from llmops.golden import GoldenOutcome
from llmops.rollout.driver import RolloutProgress
from llmops.rollout.plan import Observation, advance, start
from llmops.rollout.report import StepReport


def test_progress_round_trips_through_json():
    state, action = start([50, 100], has_stable=True, at=1.0)
    for obs in (Observation("canary_deployed", 2.0), Observation("canary_ready", 3.0, "generated")):
        state, action = advance(state, obs)
    rounds = [ProbeRound("canary", 16, 0, 0.1, 0.2, 0.01, 0.02, 4.0, (0.1, 0.2))]
    verdict = judge(Observations([GoldenOutcome("a", True, "b")], rounds, rounds), Thresholds(min_rounds=1))
    progress = RolloutProgress("file:///m/manifest.json", "file:///s/manifest.json", state, action, 1.0,
                        canary_extra_args=["--max-num-seqs", "1"],
                        steps=[StepReport(50, verdict, rounds, rounds, [GoldenOutcome("a", True, "b")], {}, 5.0,
                                          "golden prompts failing")],
                        timings={"canary_ready_s": 2.0}, attempts={"roll_back": 1}, wait_deadline=99.0)
    again = RolloutProgress.from_dict(json.loads(json.dumps(progress.to_dict())))
    assert again == progress
    assert again.action.kind == "set_weights" and again.action.canary_percent == 50
