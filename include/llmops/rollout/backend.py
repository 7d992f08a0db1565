"""The port the rollout driver acts through. Serving backends (`llmops.serving.local`, `.kubernetes`) implement it.

It lives in its own small module so that `serving` imports only this (never the driver): the driver
depends on the port, the backends implement it (import-linter checks the direction, see pyproject.toml).

Waiting is not part of the port. Where the driver must wait (canary ready, stable ready on the new
version) a backend names *what* to wait for as a `WaitTarget`: JSON-able identifiers (a URL and a PID
locally; a namespace, a Deployment name and a version id on Kubernetes). The check itself is a
module-level function of the backend's module that takes only those identifiers, so an Airflow trigger
(async, in the triggerer) and a blocking caller run the same check without the registry.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

Track = Literal["stable", "canary"]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: str
    fatal: bool = False  # no point waiting longer (the process exited, the Deployment is gone)


@dataclass(frozen=True)
class WaitTarget:
    """What to wait for: JSON-able identifiers only, enough for a trigger to check without the registry."""

    runtime: str
    track: Track
    identifiers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "track": self.track, "identifiers": dict(self.identifiers)}

    @classmethod
    def from_dict(cls, data: dict) -> WaitTarget:
        return cls(data["runtime"], data["track"], dict(data.get("identifiers") or {}))


class RolloutBackend(Protocol):
    """The effects of a rollout on one serving system. Every action is idempotent (a retry re-applies it)."""

    runtime: str

    def stable_version(self) -> str | None: ...
    def previous_version(self) -> str | None: ...
    def lock_holder(self) -> str | None: ...
    def acquire(self, run_id: str) -> bool: ...
    def release(self, run_id: str) -> None: ...
    def verify_artefact(self, store: Any, manifest: Any) -> Any:
        """The store's StoredCheck, or the paths that failed a verifying download (see preflight.check_checksums)."""
    def capacity_problems(self, facts: Any) -> list[Any]: ...
    def deploy_canary(self, manifest: Any, run_id: str, extra_args: list[str] | None = None) -> None: ...
    def wait_target(self, track: Track, manifest: Any) -> WaitTarget: ...
    def check_ready(self, target: WaitTarget) -> Readiness: ...
    def set_weights(self, canary_percent: int) -> None: ...
    def endpoints(self) -> tuple[str | None, str]: ...
    def canary_gone(self) -> str | None: ...
    def begin_promote(self, manifest: Any) -> bool: ...
    def finish_promote(self) -> None: ...
    def roll_back(self) -> None: ...


def verify_by_download(store: Any, manifest: Any, dest: Path | None = None) -> list[str]:
    """Fetch with verification (into `dest`, or a temporary directory); the paths that did not match."""
    from llmops.artefacts import ArtefactIntegrityError, ArtefactNotFoundError

    try:
        if dest is not None:
            store.fetch(manifest.prefix, dest, verify=True)
        else:
            with tempfile.TemporaryDirectory(prefix="llmops-verify-") as tmp:
                store.fetch(manifest.prefix, Path(tmp), verify=True)
    except ArtefactIntegrityError as exc:
        return [exc.path or str(exc)]
    except ArtefactNotFoundError as exc:
        return [str(exc)]
    return []
