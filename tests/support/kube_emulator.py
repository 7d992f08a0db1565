"""kmock's Kubernetes emulator on a real HTTP port, in a background thread, for the official (sync) client.

kmock is asyncio; the kubernetes client and KubernetesHook are synchronous. Running the emulator's
loop in its own thread lets test code call the real client over real HTTP without blocking it.
The emulator has no controllers: tests advance Deployment status and create Pods themselves.

kmock keeps no resourceVersion. `_Emulator` adds what the rollout record needs of the API server's optimistic
concurrency: every create and patch stamps a new `metadata.resourceVersion`, and a patch that carries one is
refused with 409 unless it is the stored one (a compare-and-swap).
"""

from __future__ import annotations

import asyncio
import itertools
import threading

import kmock
from kmock._internal.k8s import KubernetesObjectConflictError


class _Emulator(kmock.KubernetesEmulator):
    _versions = itertools.count(1)

    @property
    def _patches(self) -> asyncio.Lock:  # created in the emulator's own event loop
        if self.__dict__.get("_patch_lock") is None:
            self.__dict__["_patch_lock"] = asyncio.Lock()
        return self.__dict__["_patch_lock"]

    async def _handle(self, request):
        if request.resource is None or not isinstance(request.data, dict):
            return await super()._handle(request)
        method = str(getattr(request.method, "value", request.method)).upper()
        if method == "PATCH" and request.name is not None:
            async with self._patches:  # the check and kmock's own patch, one patch at a time: atomic
                key = (request.resource, request.namespace, request.name)
                sent = request.data.get("metadata", {}).get("resourceVersion")
                if sent is not None and key in self._objects and not self._objects[key].deleted and \
                        sent != self._objects[key].get("metadata", {}).get("resourceVersion"):
                    raise KubernetesObjectConflictError()
                request.data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
                return await super()._handle(request)
        if method == "POST":
            request.data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)


RESOURCES = ["v1/pods", "v1/nodes", "v1/services", "v1/configmaps", "v1/namespaces", "apps/v1/deployments",
             "autoscaling/v2/horizontalpodautoscalers",
             "policy/v1/poddisruptionbudgets", "gateway.networking.k8s.io/v1/httproutes",
             "monitoring.coreos.com/v1/servicemonitors"]


class KubeEmulator:
    def __init__(self):
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.emulator: _Emulator | None = None
        self.url = ""

    def _run(self):
        self._loop = asyncio.new_event_loop()

        async def main():
            self._stop = asyncio.Event()
            async with _Emulator() as emulator, kmock.Server(emulator) as server:
                for resource in RESOURCES:
                    emulator.resources[resource] = {}
                # the official client asks for `/version/` (VersionApi.get_code); kmock serves `/version`
                emulator.fallback['get /version/'] << emulator._serve_server_version  # noqa: SLF001
                self.emulator, self.url = emulator, str(server.url).rstrip("/")
                self._ready.set()
                await self._stop.wait()

        self._loop.run_until_complete(main())

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("kmock did not start")
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def kubeconfig(self) -> dict:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}]}

    def live_objects(self) -> list[tuple[str, str | None, str]]:
        return [(f"{key[0].plural}", key[1], key[2]) for key, obj in self.emulator.objects.items() if not obj.deleted]

    def writes(self) -> list[str]:
        """Every mutating request the emulator received (method and path)."""
        return [f"{r.method.value} {r.url.path}" for r in list(self.emulator)
                if r.method.value in ("POST", "PATCH", "PUT", "DELETE")]
