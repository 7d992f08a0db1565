"""Pre-flight checks, run before any object is created. Pure functions over facts gathered by the caller.

Each check returns a list of `Problem`s (`llmops.serving.port`; empty: fine); `raise_if_problems` turns them into one
`PreflightError` whose message names the input, the rule and the fix for every problem at once.
"""

from __future__ import annotations

from typing import Any

from llmops.artefacts.signing import PublicKey, SignatureCheck
from llmops.config.schema import Deployment, GpuProfile
from llmops.errors import InvalidValue
from llmops.rollout.errors import PreflightError, RolloutInProgressError
from llmops.serving.port import ArtefactFacts, Problem

# Weights are not all that a replica needs: KV cache, activations and the CUDA context take the rest.
WEIGHTS_SHARE_OF_GPU_MEMORY = 0.8
GIB = 1024**3


_RECIPE_HINT = {"vllm": "an llmcompressor-* or optimum-* target", "tensorrt-llm": "a modelopt-* target"}


def check_compatibility(artefact: ArtefactFacts, deployment: Deployment, profile: GpuProfile,
                        known_profiles: dict[str, GpuProfile] | None = None) -> list[Problem]:
    """Can `deployment` on `profile` serve the artefact? Serving runtime, the GPU it was built for (format's
    compute capability, GPU family), tensor parallelism, GPU memory. `known_profiles` (the registry's) gives
    the compute capability of the profiles the manifest says it was built for."""
    problems = []
    if artefact.serving_runtime and artefact.serving_runtime != deployment.serving_runtime:
        wanted = deployment.serving_runtime
        problems.append(Problem(
            "serving runtime",
            f"{artefact.uri} is a {artefact.serving_runtime} artefact ({artefact.recipe or 'unknown recipe'}) but "
            f"deployment {deployment.name!r} serves with {wanted}",
            f"roll out a version built for {wanted} ({_RECIPE_HINT.get(wanted, 'a ' + wanted + ' recipe')} of "
            f"model {deployment.model} in models.yaml; version=latest picks the newest {wanted} build), or "
            f"roll out to a deployment with serving_runtime: {artefact.serving_runtime}"))
    if artefact.min_compute_capability <= profile.compute_capability:  # else the problem below says it all
        problems += check_gpu_family(artefact, profile, known_profiles or {})
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


def check_gpu_family(artefact: ArtefactFacts, profile: GpuProfile,
                     known_profiles: dict[str, GpuProfile]) -> list[Problem]:
    """The version was built and validated for GPU profiles (recorded in its manifest); a profile of another
    GPU family (another compute capability, i.e. architecture) never ran it, whatever its format allows.
    A profile of the same family passes (e.g. a10-shared for a version built for a10). Versions whose
    manifest records no profiles, or only profiles the registry no longer has, are judged by the format's
    minimum compute capability alone."""
    if not artefact.built_for or profile.name in artefact.built_for:
        return []
    families = {known_profiles[name].compute_capability for name in artefact.built_for if name in known_profiles}
    if not families or profile.compute_capability in families:
        return []
    shown = ", ".join(f"{name} ({known_profiles[name].compute_capability:g})" for name in artefact.built_for
                      if name in known_profiles)
    return [Problem(
        "GPU family",
        f"{artefact.uri} was built and validated for GPU profiles {shown}, not for the compute capability "
        f"{profile.compute_capability:g} of profile {profile.name!r} ({profile.gpu})",
        f"add {profile.name} to the gpu_profiles of model {artefact.model or '?'}'s {artefact.recipe or ''} target "
        f"in models.yaml and rerun model_refresh (it builds and validates a version for it), or move the "
        f"deployment to one of those profiles")]


def check_backend_runtime(deployment: Deployment, backend_runtime: str) -> list[Problem]:
    """The local runtime serves with vLLM processes only: TensorRT-LLM has no CPU build."""
    if backend_runtime == "local" and deployment.serving_runtime != "vllm":
        return [Problem(
            "serving runtime",
            f"deployment {deployment.name!r} serves with {deployment.serving_runtime}, which the local runtime "
            "cannot run (it starts vLLM processes; TensorRT-LLM needs an NVIDIA GPU and has no CPU build)",
            "run model_rollout with LLMOPS_RUNTIME=kubernetes against a cluster with the deployment's GPU profile")]
    return []


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


def trusted_keys(deployment: Deployment) -> tuple[list[PublicKey], list[Problem]]:
    """The deployment's `signing.public_keys` (PEM text: the registry loader read the files) as keys."""
    keys, problems = [], []
    for index, pem in enumerate(deployment.signing.public_keys):
        where = f"deployments[{deployment.name}].signing.public_keys[{index}]"
        try:
            keys.append(PublicKey.from_pem(pem, where))
        except InvalidValue as exc:
            problems.append(Problem("signature", exc.what, exc.fix))
    return keys, problems


_SIGNATURE_FIX = {
    "unsigned": "publish versions with the signing key (Connection llmops_signing / Secret llmops-llmops-signing) "
                "and roll out one published since, or set signing.require_signature: false for {name}",
    "no trusted keys": "list the signer's public key under signing.public_keys of deployment {name}",
    "unknown key": "add that public key to signing.public_keys of deployment {name} if you trust it (rotation: list "
                   "the old and the new key), or roll out a version signed by a listed key",
    "invalid": "do not serve it: the signature or the manifest was changed after publish; republish the version "
               "from its source (model_refresh) and find out who wrote to the store",
    "manifest changed": "do not serve it: the manifest was changed after it was signed; republish the version from "
                        "its source (model_refresh) and find out who wrote to the store",
}


def check_signature(deployment: Deployment, check: SignatureCheck | None) -> list[Problem]:
    """The version's signature (`ArtefactStore.verify_signature` against `trusted_keys`) under the deployment's
    `signing.require_signature`: a signature that does not verify is refused always, an unsigned version (or one
    no key is configured for) only when a signature is required."""
    why = None if check is None else check.problem(require_signature=deployment.signing.require_signature)
    if why is None:
        return []
    return [Problem("signature", why, _SIGNATURE_FIX[check.status].format(name=deployment.name))]


def signature_checked(check: SignatureCheck | None) -> str:
    """What `check_signature` verified, for the pre-flight summary and the report."""
    if check is None:
        return "signature not checked"
    if check.ok:
        return check.summary()
    what = "unsigned" if check.status == "unsigned" else f"signed by key {str(check.key_id)[:16]}, not verified"
    return f"{what}: accepted (signing.require_signature is false)"


def raise_if_problems(subject: str, problems: list[Problem]) -> None:
    if not problems:
        return
    cls = RolloutInProgressError if any(p.check == "rollout lock" for p in problems) else PreflightError
    raise cls(subject, problems)
