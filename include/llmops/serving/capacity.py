"""GPU capacity of a serving pool: what one replica requests and whether the canary's replicas fit. Pure.

The Kubernetes backend gathers the pool's nodes (`llmops.serving.kubernetes.node_capacity`) and answers the
rollout pre-flight's `capacity_problems` with `check_capacity`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmops.config.schema import GpuProfile
from llmops.serving.port import ArtefactFacts, Problem


@dataclass(frozen=True)
class NodeCapacity:
    """One schedulable node of the deployment's pool: allocatable and already requested amounts."""

    name: str
    allocatable: float
    requested: float

    @property
    def free(self) -> float:
        return max(0.0, self.allocatable - self.requested)


def replica_request(profile: GpuProfile, artefact: ArtefactFacts | None = None) -> float:
    """What one replica asks for of `profile.resource_name` (GPUs, or GiB on cGPU)."""
    if profile.shared:
        return float(profile.resource_per_replica)
    tp = artefact.tensor_parallel_size if artefact else 1
    return float(max(profile.resource_per_replica, tp))


def check_capacity(nodes: list[NodeCapacity], *, profile: GpuProfile, per_replica: float,
                   replicas: int) -> list[Problem]:
    """Enough free GPU on the pool's nodes for `replicas` canary replicas (each must fit on one node)."""
    fit = 0
    for node in nodes:
        if per_replica > 0:
            fit += int(node.free // per_replica)
    if fit >= replicas:
        return []
    free = ", ".join(f"{n.name}: {n.free:g}" for n in nodes) or "no matching nodes"
    return [Problem(
        "GPU capacity",
        f"the canary needs {replicas} replica(s) x {per_replica:g} {profile.resource_name} on nodes matching "
        f"{profile.node_selector}, but only {fit} fit (free per node: {free})",
        "free GPUs (scale down other workloads), add nodes to the pool, or lower rollout.canary_replicas")]
