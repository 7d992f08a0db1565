"""The rollout record: a rollout's lock, resolved request, progress and outcome in one stored object.

It lives beside the deployment (the ConfigMap `<deployment>-rollout-lock` on Kubernetes, `rollout.json` in the
local runtime's deployment folder) and is written at every transition of the plan with a compare-and-swap
(`RolloutBackend.write_record(data, version)`: the Kubernetes resourceVersion, or a generation number replaced
atomically under a file lock), so it is the one source of truth, as Argo Rollouts keeps an analysis's state in
one persisted object:

    status      active    a run owns the deployment and the rollout is under way (the lock is held)
                halted    a roll back or promotion failed MAX_ATTEMPTS times: the lock stays held (nothing else
                          may start on a broken state); clearing the run's task resumes it with fresh attempts
                finished  the run ended (promoted, rolled back, unchanged); the lock is free, and the record
                          stays until the next run replaces it, so a re-execution of this run returns the
                          same outcome instead of acting again
    run_id      the Airflow run that owns it
    resolved    the request as resolved against the registry when the rollout began (a retry does not
                re-read deployments.yaml or the form)
    progress    `driver.RolloutProgress` as of the last transition (None only for an `unchanged` run)
    owner       which execution is acting now: its token, Airflow try number, host and pid, and a lease

Who may act: the owner; or any execution of the same run once the owner is gone (lease expired; its pid dead on
this host; or a later Airflow try, since Airflow runs one try of a task at a time). Another live execution of
the same run waits for the owner instead of acting (`look_again` says when to look at the record again; the
Airflow operator waits deferred, on a trigger that asks it). An owner that lost the record (a write's CAS failed) stops
acting at once (`LostOwnership`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Literal

from llmops.rollout.errors import LostOwnership  # noqa: F401 - re-exported

Status = Literal["active", "halted", "finished"]


@dataclass(frozen=True)
class Execution:
    """One execution of a run's rollout task (an Airflow try, or a resumption of it after a deferral)."""

    token: str
    try_number: int | None = None
    host: str = ""
    pid: int | None = None

    @classmethod
    def new(cls, try_number: int | None = None, token: str | None = None) -> Execution:
        return cls(token or uuid.uuid4().hex, try_number, socket.gethostname(), os.getpid())


@dataclass(frozen=True)
class Owner:
    token: str
    try_number: int | None
    host: str
    pid: int | None  # None while the execution is deferred (no process of it runs)
    lease_until: float

    @classmethod
    def of(cls, me: Execution, lease_s: float, *, deferred: bool = False) -> Owner:
        return cls(me.token, me.try_number, me.host, None if deferred else me.pid, time.time() + lease_s)


@dataclass
class RolloutRecord:
    run_id: str
    status: Status
    resolved: dict
    progress: dict | None = None
    owner: Owner | None = None
    outcome: str | None = None
    reason: str = ""
    report: dict = field(default_factory=dict)
    updated_at: float = 0.0

    @property
    def holds_lock(self) -> bool:
        return self.status != "finished"

    def to_dict(self) -> dict:
        return {**asdict(self), "owner": asdict(self.owner) if self.owner else None}

    @classmethod
    def from_dict(cls, data: dict) -> RolloutRecord:
        owner = data.get("owner")
        return cls(run_id=data["run_id"], status=data["status"], resolved=data.get("resolved") or {},
                   progress=data.get("progress"), owner=Owner(**owner) if owner else None,
                   outcome=data.get("outcome"), reason=data.get("reason", ""), report=dict(data.get("report") or {}),
                   updated_at=data.get("updated_at", 0.0))


def owner_gone(owner: Owner | None, me: Execution, *, pid_alive, now: float | None = None) -> str | None:
    """Why `owner` no longer acts (a reason to take over), or None while it may still be acting.
    `pid_alive(pid) -> bool` checks a process on this host."""
    if owner is None:
        return "no owner recorded"
    if owner.token == me.token:
        return None
    now = time.time() if now is None else now
    if owner.lease_until < now:
        return f"its lease ended {now - owner.lease_until:.0f} s ago"
    if owner.try_number is not None and me.try_number is not None and me.try_number > owner.try_number:
        return f"this is try {me.try_number}, it was try {owner.try_number} (Airflow runs one try at a time)"
    if owner.pid is not None and owner.host == me.host and not pid_alive(owner.pid):
        return f"its process {owner.pid} on {owner.host} has exited"
    return None


def look_again(data: dict | None, run_id: str, owner_token: str, me: Execution, *, pid_alive,
               now: float | None = None) -> str | None:
    """Why an execution waiting for `owner_token`'s execution of `run_id` should read the record again (its
    rollout ended or halted, another execution took it, or the owner is gone), or None while it still acts.
    `data` is the stored record (`RolloutRecord.to_dict`)."""
    if data is None or data.get("run_id") != run_id:
        return "the record of this run is gone (replaced)"
    record = RolloutRecord.from_dict(data)
    if record.status != "active":
        return f"the rollout is {record.status}"
    if record.owner is None or record.owner.token != owner_token:
        return "another execution owns the rollout now"
    gone = owner_gone(record.owner, me, pid_alive=pid_alive, now=now)
    return f"the owner is gone: {gone}" if gone else None
