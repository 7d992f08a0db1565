"""VllmReadyTrigger: waits, without holding a worker slot, until a vLLM track really generates.

A pod (or local process) counts as ready only after a real completion succeeded: vLLM's /health
stays green on a broken GPU (vLLM issue 36960). On Kubernetes the Deployment must also report all
replicas updated and ready; every Ready pod of the expected version must then generate.
The blocking checks run in a thread (`asyncio.to_thread`), so the triggerer's event loop stays free.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class VllmReadyTrigger(BaseTrigger):
    def __init__(self, *, runtime: str, deployment: str, track: str, timeout_s: float, poll_s: float = 5.0,
                 url: str | None = None, pid: int | None = None, port: int | None = None, model: str = "",
                 version_id: str | None = None, kubernetes_conn_id: str | None = None, config_dir: str | None = None,
                 pod_url_template: str = "http://{pod_ip}:{port}", config_dict: dict | None = None,
                 started_at: float | None = None):
        super().__init__()
        self.runtime = runtime
        self.deployment = deployment
        self.track = track
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.url = url
        self.pid = pid
        self.port = port
        self.model = model
        self.version_id = version_id
        self.kubernetes_conn_id = kubernetes_conn_id
        self.config_dir = config_dir
        self.pod_url_template = pod_url_template
        self.config_dict = config_dict
        self.started_at = started_at or time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("llmops_airflow.triggers.readiness.VllmReadyTrigger", {
            "runtime": self.runtime, "deployment": self.deployment, "track": self.track,
            "timeout_s": self.timeout_s, "poll_s": self.poll_s, "url": self.url, "pid": self.pid, "port": self.port,
            "model": self.model, "version_id": self.version_id, "kubernetes_conn_id": self.kubernetes_conn_id,
            "config_dir": self.config_dir, "pod_url_template": self.pod_url_template,
            "config_dict": self.config_dict, "started_at": self.started_at})

    def _kubernetes_check(self) -> tuple[bool, str]:
        from llmops.canary.probes import generation_ok
        from llmops.config import load_registry
        from llmops.serving.kubernetes import KubernetesBackend, check_ready
        from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

        registry = load_registry(self.config_dir)
        deployment = registry.deployment(self.deployment)
        hook = VllmKubernetesHook(self.kubernetes_conn_id or deployment.kubernetes_connection_id,
                                  config_dict=self.config_dict)
        backend = KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile),
                                    pod_url_template=self.pod_url_template)
        return check_ready(hook, deployment, self.track, self.version_id or "", pod_url=backend.pod_url,
                           generate=lambda url, model: generation_ok(url, model, timeout_s=30))

    async def _check(self) -> tuple[bool, str, bool]:
        """(ready, detail, fatal)."""
        if self.runtime == "local":
            from llmops.canary.probes import generation_ok_async
            from llmops.serving.local import process_alive

            if self.pid and not process_alive(self.pid, self.port):
                return False, f"the {self.track} vLLM process {self.pid} exited", True
            ok, detail = await generation_ok_async(self.url or "", self.model, timeout_s=10)
            return ok, detail, False
        ok, detail = await asyncio.to_thread(self._kubernetes_check)
        return ok, detail, False

    async def run(self):
        deadline = time.monotonic() + self.timeout_s
        detail = "not checked yet"
        last_log = 0.0
        while time.monotonic() < deadline:
            try:
                ok, detail, fatal = await self._check()
            except Exception as exc:  # an API hiccup is "not ready yet", not a failed rollout
                ok, detail, fatal = False, f"{type(exc).__name__}: {exc}", False
            if ok:
                yield TriggerEvent({"status": "ready", "detail": detail, "started_at": self.started_at,
                                    "ready_s": round(time.time() - self.started_at, 1)})
                return
            if fatal:
                break
            if time.monotonic() - last_log >= 30:  # progress, not a line per poll
                self.log.info("%s %s not ready yet: %s", self.deployment, self.track, detail)
                last_log = time.monotonic()
            await asyncio.sleep(self.poll_s)
        yield TriggerEvent({"status": "not_ready", "detail": detail, "started_at": self.started_at,
                            "ready_s": round(time.time() - self.started_at, 1)})
