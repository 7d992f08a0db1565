"""A test seam: named points where a test holds a process so it can kill it exactly there.

Unset in production (then `pause_point` returns at once). With `LLMOPS_PAUSE_DIR` set (tests/airflow's stack
sets it for every process it starts), `pause_point(name)` looks for `<dir>/<name>.pause`; if it is there, this
process takes it (an atomic rename: one process pauses per file, so Airflow's retry passes the same point),
writes its pid to `<dir>/<name>.reached` and waits while that file exists. The test SIGKILLs the pid's process
group there (or removes the file to let it go on). Points:

    analyse   in a traffic step's analysis window, after the golden prompts (driver.analyse_step)
    promote   the local runtime recorded the canary as the stable track; the old stable is not stopped yet
              and the rollout record still says `promote` (llmops.serving.local.LocalRuntime.promote)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from llmops.settings import get_settings


def pause_point(name: str) -> None:
    folder = get_settings().pause_dir
    if not folder:
        return
    claimed = Path(folder) / f"{name}.{os.getpid()}.claimed"
    try:
        os.rename(Path(folder) / f"{name}.pause", claimed)
    except FileNotFoundError:  # no test waits here (or another process took it)
        return
    reached = Path(folder) / f"{name}.reached"
    claimed.write_text(str(os.getpid()))
    os.replace(claimed, reached)
    while reached.exists():
        time.sleep(0.1)
