"""How long a server may take to become ready, and what an expired wait is.

A start that outlasts its limit on a busy machine is usually just slow (a vLLM CPU start: ~40 s idle, 10-15 min
under load 20-40), so an expired wait is transient ONCE: the next try waits twice as long. A second expiry is
permanent (retrying the same wait again only burns the machine) and its message names the setting to raise.

Between tries of a job (an Airflow retry: a new process, maybe a new pod) a marker file in the item's work
directory remembers the first expiry; a caller without one (a fixture, the benchmark) gets the longer second
wait in-process. The limits are settings (`LLMOPS_VLLM_READY_TIMEOUT_S`, `LLMOPS_TRTLLM_READY_TIMEOUT_S`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmops.serving.errors import ReadyTimeout  # noqa: F401 - re-exported
from llmops.settings import get_settings

log = logging.getLogger(__name__)

VLLM_SETTING = "LLMOPS_VLLM_READY_TIMEOUT_S"
TRTLLM_SETTING = "LLMOPS_TRTLLM_READY_TIMEOUT_S"


@dataclass(frozen=True)
class ReadyLimit:
    setting: str
    """The environment variable that sets `seconds` (named in every expiry message)."""
    seconds: float
    marker: Path | None = None
    """A file that outlives this process and records a first expiry (None: the second wait is in-process)."""

    @classmethod
    def vllm(cls, marker: Path | None = None) -> ReadyLimit:
        return cls(VLLM_SETTING, get_settings().vllm_ready_timeout_s, marker)

    @classmethod
    def trtllm(cls, marker: Path | None = None) -> ReadyLimit:
        return cls(TRTLLM_SETTING, get_settings().trtllm_ready_timeout_s, marker)

    @property
    def retried(self) -> bool:
        """An earlier try of this job already waited the whole limit in vain."""
        return self.marker is not None and self.marker.is_file()

    @property
    def limit(self) -> float:
        return self.seconds * (2 if self.retried else 1)

    def expired(self, what: str, detail: str = "", *, waited: float | None = None) -> ReadyTimeout:
        """The error of a wait that outlasted the limit: transient (and remembered) the first time."""
        waited = self.limit if waited is None else waited
        setting = f"{self.setting}={self.seconds:.0f}"
        tail = f"; {detail}" if detail else ""
        if not self.retried:
            if self.marker is not None:
                self.marker.parent.mkdir(parents=True, exist_ok=True)
                self.marker.write_text(json.dumps({"setting": self.setting, "seconds": self.seconds,
                                                   "expired_at": time.time(), "what": what}))
            error = ReadyTimeout(f"{what} was not ready within {waited:.0f} s ({setting})", fix=(
                f"none needed if the machine was only busy: the next try waits {2 * self.seconds:.0f} s; if it is "
                f"routinely this slow, raise {self.setting}{tail}"))
            error.transient = True
            return error
        return ReadyTimeout(f"{what} was not ready within {waited:.0f} s, twice the limit ({setting}), after an "
                            "earlier try had expired too", fix=f"raise {self.setting} (e.g. to "
                            f"{4 * self.seconds:.0f}) or run when the machine is less busy{tail}")

    def succeeded(self) -> None:
        """A wait ended in time: forget an earlier expiry."""
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)


def wait_until_ready(check: Callable[[], tuple[bool, str]], limit: ReadyLimit, what: str, *,
                     poll_s: float = 1.0) -> float:
    """Poll `check` (-> (ready, detail); it raises when waiting is pointless, e.g. the process died) until ready;
    return the seconds waited. Expiry: `limit.expired` (raised; without a marker the one transient expiry is
    absorbed here by waiting a second, longer time)."""
    started = time.monotonic()
    deadline = limit.limit
    detail = ""
    while True:
        ready, detail = check()
        if ready:
            limit.succeeded()
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited > deadline:
            if limit.marker is None and deadline == limit.seconds:
                log.warning("%s not ready within %.0f s (%s); waiting once more, up to %.0f s in all", what,
                            waited, limit.setting, 2 * limit.seconds)
                deadline = 2 * limit.seconds
                limit = ReadyLimit(limit.setting, limit.seconds, None)
                continue
            raise _final(limit, what, detail, waited, deadline)
        time.sleep(poll_s)


def _final(limit: ReadyLimit, what: str, detail: str, waited: float, deadline: float) -> ReadyTimeout:
    if limit.marker is None and deadline > limit.seconds:
        return ReadyTimeout(f"{what} was not ready within {waited:.0f} s, twice the limit ({limit.setting}="
                            f"{limit.seconds:.0f})", fix=f"raise {limit.setting} (e.g. to {4 * limit.seconds:.0f}) "
                            f"or run when the machine is less busy" + (f"; {detail}" if detail else ""))
    return limit.expired(what, detail, waited=waited)
