"""The rollout record trigger: a second live execution of a rollout's run waits, without holding a worker slot,
until the execution that owns the rollout is done with it.

It reads the record where the backend keeps it (`record_identifiers()`: the local runtime's rollout.json, or
the `<deployment>-rollout-lock` ConfigMap) with the backend module's own `read_record_at`, and fires once
`llmops.rollout.record.look_again` gives a reason: the rollout finished or halted, another execution took it,
or its owner is gone (lease over; process exited on this host; a later Airflow try). The operator then runs
the driver again, which returns the recorded outcome, takes over, or defers again. A failed read is "still
owned" (an API hiccup must not start a second actor); the owner's lease bounds the wait.
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class RolloutRecordTrigger(BaseTrigger):
    def __init__(self, *, identifiers: dict, run_id: str, owner_token: str, try_number: int | None,
                 poll_s: float = 5.0):
        super().__init__()
        self.identifiers = identifiers
        self.run_id = run_id
        self.owner_token = owner_token
        self.try_number = try_number
        self.poll_s = poll_s
        self._client = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"identifiers": self.identifiers, "run_id": self.run_id, "owner_token": self.owner_token,
                 "try_number": self.try_number, "poll_s": self.poll_s})

    def read(self) -> dict | None:
        if self.identifiers["runtime"] == "local":
            from llmops.serving.local import read_record_at

            return read_record_at(self.identifiers)[0]
        from llmops.serving.kubernetes import read_record_at

        if self._client is None:  # built once per trigger run
            from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

            self._client = VllmKubernetesHook(self.identifiers.get("kubernetes_conn_id") or "kubernetes_default",
                                              config_dict=self.identifiers.get("config_dict"))
        return read_record_at(self._client, self.identifiers)[0]

    async def run(self):
        from llmops.rollout.record import Execution, look_again
        from llmops.serving.processes import process_alive

        me = Execution.new(self.try_number)  # this host: an owner's pid is checked only where it ran
        while True:
            try:
                data = await asyncio.to_thread(self.read)
            except Exception as exc:  # an API hiccup: the owner may still act
                self.log.warning("reading the rollout record failed: %s: %s", type(exc).__name__, exc)
            else:
                reason = look_again(data, self.run_id, self.owner_token, me, pid_alive=process_alive)
                if reason:
                    yield TriggerEvent({"status": "look_again", "detail": reason})
                    return
            await asyncio.sleep(self.poll_s)
