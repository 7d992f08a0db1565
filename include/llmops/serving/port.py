"""The port the rollout driver acts through. Serving backends (`llmops.serving.local`, `.kubernetes`) implement it.

It lives below the driver, in `serving`, so that the dependency runs one way: the driver (`llmops.rollout`)
depends on this port, the backends beside it implement it, and nothing in `serving` imports `rollout`
(the `layers` contract in pyproject.toml checks it). `Problem` and `ArtefactFacts` are the pre-flight
vocabulary a backend answers `capacity_problems` in; the pure checks themselves are `llmops.rollout.preflight`.

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

from llmops.artefacts import ArtefactIntegrityError, ArtefactNotFoundError

Track = Literal["stable", "canary", "previous"]  # previous: the warm copy kept after a promotion


@dataclass(frozen=True)
class Problem:
    check: str
    what: str
    fix: str


@dataclass(frozen=True)
class ArtefactFacts:
    """What pre-flight needs from a manifest (decoupled from the manifest class's field names)."""

    uri: str
    model: str
    serving_runtime: str
    quantization_format: str
    min_compute_capability: float
    tensor_parallel_size: int
    max_model_len: int | None
    weights_bytes: int
    recipe: str = ""
    built_for: tuple[str, ...] = ()
    """GPU profiles model_refresh built (and validated) the version for, as its manifest records them."""

    @classmethod
    def from_manifest(cls, manifest: Any, uri: str, model: str = "") -> ArtefactFacts:
        def field(*names, default=None):
            for name in names:
                value = manifest.get(name) if isinstance(manifest, dict) else getattr(manifest, name, None)
                if value is not None:
                    return value
            return default

        files = field("files", default=[]) or []
        weights = 0
        for f in files:
            path = f.get("path") if isinstance(f, dict) else f.path
            size = f.get("size") if isinstance(f, dict) else f.size
            if str(path).endswith((".safetensors", ".bin", ".pt", ".engine")):
                weights += int(size or 0)
        source = field("source", default=None)
        name = model or field("model", "name", default="") or (getattr(source, "repo_id", "") if source else "")
        return cls(
            uri=uri,
            model=str(name),
            serving_runtime=str(field("serving_runtime", "runtime", default="")),
            quantization_format=str(field("quantization_format", "quantization", default="none")),
            min_compute_capability=float(field("min_compute_capability", default=0.0)),
            tensor_parallel_size=int(field("tensor_parallel_size", default=1)),
            max_model_len=field("max_model_len", default=None),
            weights_bytes=weights,
            recipe=str(field("recipe", default="")),
            built_for=tuple(str(p) for p in field("gpu_profiles", default=()) or ()),
        )


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


@dataclass(frozen=True)
class WarmCopy:
    """The previous stable version kept running after a promotion (warm roll back), as the backend sees it."""

    version: str  # manifest URI
    until: float  # epoch seconds: after this it is released by the next rollout of the deployment
    replicas: int
    url: str  # where its golden prompts are sent before it takes traffic again
    target: WaitTarget  # its readiness check (the same check as the canary's)

    def expired(self, now: float) -> bool:
        return now >= self.until


class RolloutBackend(Protocol):
    """The effects of a rollout on one serving system. Every action is idempotent (a retry re-applies it)."""

    runtime: str

    def stable_version(self) -> str | None: ...
    def previous_version(self) -> str | None: ...
    def read_record(self) -> tuple[dict | None, str | None]:
        """The rollout record (`llmops.rollout.record`) stored beside the deployment, and its version token."""
    def record_identifiers(self) -> dict:
        """Where the record is, for a trigger that reads it without the backend: `runtime` and the identifiers
        of the backend module's `read_record_at`."""
    def write_record(self, data: dict, version: str | None) -> str | None:
        """Compare-and-swap: create the record (`version` None; it must not exist) or replace the one read at
        `version`. The new version token, or None when another writer got there first (nothing written)."""
    def lock_holder(self) -> str | None:
        """The run whose record holds the lock (status active or halted), if any."""
    def verify_artefact(self, store: Any, manifest: Any) -> Any:
        """The store's StoredCheck, or the paths that failed a verifying download (see preflight.check_checksums)."""
    def capacity_problems(self, facts: ArtefactFacts) -> list[Problem]: ...
    def deploy_canary(self, manifest: Any, run_id: str, extra_args: list[str] | None = None) -> None: ...
    def wait_target(self, track: Track, manifest: Any) -> WaitTarget: ...
    def check_ready(self, target: WaitTarget) -> Readiness: ...
    def set_weights(self, canary_percent: int) -> None: ...
    def endpoints(self) -> tuple[str | None, str]: ...
    def canary_gone(self) -> str | None: ...
    def begin_promote(self, manifest: Any, keep: tuple[int, float] | None = None) -> bool:
        """Move the stable track to `manifest`; with `keep` (replicas, until) the replaced version stays warm.
        True: the stable track must be waited for (`wait_target("stable")`), then `finish_promote`."""
    def finish_promote(self) -> None: ...
    def roll_back(self) -> None: ...
    def warm_copy(self) -> WarmCopy | None:
        """The kept previous version (expired or not), or None."""
    def restore_warm(self, version: str) -> None:
        """Traffic to the warm copy of `version` (no new server); `begin_promote` then makes it the stable one."""
    def release_warm(self) -> str | None:
        """Stop (local) or delete (Kubernetes) the warm copy; what was released, or None. Idempotent."""


def verify_by_download(store: Any, manifest: Any, dest: Path | None = None) -> list[str]:
    """Fetch with verification (into `dest`, or a temporary directory); the paths that did not match."""
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
