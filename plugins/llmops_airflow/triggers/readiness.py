"""Readiness triggers: wait, without holding a worker slot, until a vLLM track really generates.

A pod (or local process) counts as ready only after a real completion succeeded: vLLM's /health stays
green on a broken GPU (vLLM issue 36960). The check is the backend module's own function over
identifiers (`llmops.serving.local.process_ready`, `llmops.serving.kubernetes.check_ready`), the same
one the driver's blocking wait runs. A trigger carries only identifiers and the rollout's serialised
progress (handed back unchanged in its one event), builds its client once, and never reads the
registry. Blocking checks run in a thread, so the triggerer's event loop stays free.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class _ReadinessTrigger(BaseTrigger):
    def __init__(self, *, identifiers: dict, timeout_s: float, poll_s: float = 5.0, progress: dict | None = None,
                 started_at: float | None = None):
        super().__init__()
        self.identifiers = identifiers
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.progress = progress
        self.started_at = started_at or time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"identifiers": self.identifiers, "timeout_s": self.timeout_s, "poll_s": self.poll_s,
                 "progress": self.progress, "started_at": self.started_at})

    def check(self):  # -> llmops.serving.port.Readiness
        raise NotImplementedError

    def _event(self, status: str, detail: str) -> TriggerEvent:
        return TriggerEvent({"status": status, "detail": detail, "track": self.identifiers.get("track"),
                             "ready_s": round(time.time() - self.started_at, 1), "progress": self.progress})

    async def run(self):
        deadline = time.monotonic() + self.timeout_s
        detail = "not checked yet"
        last_log = 0.0
        while time.monotonic() < deadline:
            try:
                ready = await asyncio.to_thread(self.check)
            except Exception as exc:  # an API hiccup is "not ready yet", not a failed rollout
                detail = f"{type(exc).__name__}: {exc}"
            else:
                detail = ready.detail
                if ready.ready:
                    yield self._event("ready", detail)
                    return
                if ready.fatal:
                    yield self._event("not_ready", detail)
                    return
            if time.monotonic() - last_log >= 30:  # progress, not a line per poll
                self.log.info("%s not ready yet: %s", self.identifiers.get("name") or self.identifiers.get("url"),
                              detail)
                last_log = time.monotonic()
            await asyncio.sleep(self.poll_s)
        yield self._event("not_ready", f"not ready after {self.timeout_s:.0f} s: {detail}")


class LocalVllmReadyTrigger(_ReadinessTrigger):
    """A local vLLM process: it runs, and a real generation succeeds (identifiers: url, pid, port, model)."""

    def check(self):
        from llmops.serving.local import process_ready

        return process_ready(self.identifiers)


class KubernetesVllmReadyTrigger(_ReadinessTrigger):
    """A Deployment track of one version: replicas updated and ready, every Ready pod generates.

    Identifiers: namespace, name, deployment, track, version_id, model, pod_url_template, port,
    kubernetes_conn_id (and optionally config_dict, for a cluster given inline)."""

    _client = None

    def check(self):
        from llmops.serving.kubernetes import check_ready

        if self._client is None:  # built once per trigger run
            from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

            self._client = VllmKubernetesHook(self.identifiers.get("kubernetes_conn_id") or "kubernetes_default",
                                              config_dict=self.identifiers.get("config_dict"))
        return check_ready(self._client, self.identifiers)


def readiness_trigger(target: dict, *, timeout_s: float, poll_s: float, progress: dict) -> _ReadinessTrigger:
    """The trigger for a `llmops.serving.port.WaitTarget` (as a dict)."""
    cls = LocalVllmReadyTrigger if target["runtime"] == "local" else KubernetesVllmReadyTrigger
    return cls(identifiers={**target["identifiers"], "track": target["track"]}, timeout_s=timeout_s, poll_s=poll_s,
               progress=progress)
