"""Pre-flight checks, run before any object is created. Pure functions over facts gathered by the caller.

Each check returns a list of `Problem`s (`llmops.serving.port`; empty: fine); `raise_if_problems` turns them into one
`PreflightError` whose message names the input, the rule and the fix for every problem at once.
"""

from __future__ import annotations

from typing import Any

from llmops.config.schema import Deployment, GpuProfile
from llmops.errors import LlmopsError
from llmops.serving.port import ArtefactFacts, Problem

# Weights are not all that a replica needs: KV cache, activations and the CUDA context take the rest.
WEIGHTS_SHARE_OF_GPU_MEMORY = 0.8
GIB = 1024**3


class PreflightError(LlmopsError):
    """The rollout was refused before anything changed."""

    def __init__(self, subject: str, problems: list[Problem]):
        self.subject = subject
        self.problems = problems
        lines = [f"pre-flight refused {subject}: {len(problems)} problem(s)"]
        for p in problems:
            lines.append(f"  - {p.check}: {p.what}\n    fix: {p.fix}")
        super().__init__("\n".join(lines))


class RolloutInProgressError(PreflightError):
    """Another rollout of the same deployment holds the lock."""


def check_compatibility(artefact: ArtefactFacts, deployment: Deployment, profile: GpuProfile) -> list[Problem]:
    problems = []
    if artefact.serving_runtime and artefact.serving_runtime != deployment.serving_runtime:
        problems.append(Problem(
            "serving runtime",
            f"{artefact.uri} is built for {artefact.serving_runtime!r} but deployment {deployment.name!r} "
            f"serves with {deployment.serving_runtime!r}",
            f"pick the version built for {deployment.serving_runtime} (a {deployment.serving_runtime} recipe target)"))
    if artefact.min_compute_capability > profile.compute_capability:
        problems.append(Problem(
            "compute capability",
            f"{artefact.quantization_format} ({artefact.recipe or artefact.uri}) needs compute capability "
            f"{artefact.min_compute_capability}+, but GPU profile {profile.name!r} ({profile.gpu}) has "
            f"{profile.compute_capability}",
            "roll out a format this GPU runs (e.g. W8A8 or W4A16) or move the deployment to a newer GPU profile"))
    if profile.shared and artefact.tensor_parallel_size > 1:
        problems.append(Problem(
            "tensor parallel",
            f"tensor_parallel_size {artefact.tensor_parallel_size} cannot run on shared-GPU profile {profile.name!r}",
            "use a whole-GPU profile or an artefact built with tensor_parallel_size 1"))
    elif artefact.tensor_parallel_size > profile.gpus_per_node:
        problems.append(Problem(
            "tensor parallel",
            f"tensor_parallel_size {artefact.tensor_parallel_size} exceeds the {profile.gpus_per_node} GPU(s) per "
            f"node of profile {profile.name!r}",
            "use a profile with more GPUs per node or an artefact with a smaller tensor_parallel_size"))
    memory_gib = (profile.resource_per_replica if profile.shared
                  else profile.gpu_memory_gib * max(1, artefact.tensor_parallel_size))
    budget = memory_gib * WEIGHTS_SHARE_OF_GPU_MEMORY * GIB
    if artefact.weights_bytes > budget:
        problems.append(Problem(
            "GPU memory",
            f"weights of {artefact.weights_bytes / GIB:.1f} GiB exceed {WEIGHTS_SHARE_OF_GPU_MEMORY:.0%} of the "
            f"{memory_gib:g} GiB a replica gets on profile {profile.name!r}",
            "use a smaller quantization (e.g. W4A16), a larger tensor_parallel_size or a larger GPU profile"))
    return problems


def check_not_in_progress(deployment: str, lock_holder: str | None, this_run: str) -> list[Problem]:
    if lock_holder and lock_holder != this_run:
        return [Problem(
            "rollout lock",
            f"deployment {deployment!r} is already being rolled out by run {lock_holder!r}",
            "wait for that run to finish (or fail and roll back), then trigger again; "
            "this run is refused, not queued")]
    return []


def check_checksums(uri: str, verification: Any) -> list[Problem]:
    """`verification` is the store's `StoredCheck` (size and server-kept checksum of every file against the
    manifest, from the store's metadata) or, from a backend that downloads the version to verify it, the list
    of files whose size or sha256 did not match. A manifest that records no server checksums is refused."""
    if isinstance(verification, list):
        mismatches, unverifiable = verification, None
    else:
        mismatches, unverifiable = verification.mismatches, verification.unverifiable
    if unverifiable:
        return [Problem("checksums", unverifiable,
                        "roll out a version published since checksums are recorded, or have an operator remove "
                        "this version's manifest.json and rerun model_refresh to publish it again with them")]
    if not mismatches:
        return []
    shown = "; ".join(mismatches[:5]) + (" ..." if len(mismatches) > 5 else "")
    what = "" if isinstance(verification, list) else f" (compared: {verification.verified})"
    return [Problem("checksums", f"{uri}: {len(mismatches)} file(s) do not match the manifest{what}: {shown}",
                    "republish the version (model_refresh) or pick another version")]


def checksums_checked(verification: Any) -> str:
    """What `check_checksums` verified, for the pre-flight summary and the report."""
    if verification is None:
        return "checksums not checked"
    if isinstance(verification, list):
        return "checksums verify (size and sha256 of every file, downloaded and re-hashed)"
    return f"checksums verify ({verification.verified})"


def raise_if_problems(subject: str, problems: list[Problem]) -> None:
    if not problems:
        return
    cls = RolloutInProgressError if any(p.check == "rollout lock" for p in problems) else PreflightError
    raise cls(subject, problems)
