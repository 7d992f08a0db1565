"""model_refresh planning: which artefact versions to build, pure and exhaustively testable.

    items = expand_targets(models, shas, profiles, runtime="local", work_root=...)   # every candidate
    published = {prefix: store.read_manifest(prefix).uri for ...}                     # I/O, in the DAG task
    plan = plan_refresh(items, published, recipes=None, force=False)

One work item is one artefact version: (model, source sha, recipe) -> `models/<m>/<sha>/<runtime>-<recipe>`.
A profile whose GPU cannot run a recipe's format never
gets it (FP8 below compute capability 8.9: A10, A100). On the local runtime, recipes that need a GPU to
build are skipped with the reason, and validations that need a GPU are recorded as skipped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from llmops.artefacts.manifest import artefact_prefix
from llmops.config.recipes import RECIPES
from llmops.errors import ConfigError, InvalidValue

VALIDATE_VLLM = "vllm"
VALIDATE_TRTLLM = "tensorrt-llm"
VALIDATE_SKIP = "skip"


@dataclass(frozen=True)
class WorkItem:
    """Everything the quantize, validate and publish jobs need about one artefact version."""

    model: str
    repo_id: str
    revision: str
    sha: str
    recipe: str
    artefact_recipe: str  # the recipe as it appears in the prefix
    runtime: str  # serving runtime that loads the checkpoint
    prefix: str
    gpu_profiles: list[str]  # profiles this artefact serves
    build_profile: str | None  # the profile a GPU pod for quantize / validate asks for
    min_compute_capability: float
    validation: str  # vllm | tensorrt-llm | skip
    validation_skip_reason: str | None
    source_dir: str
    work_dir: str
    golden: dict[str, Any]
    max_model_len: int
    tensor_parallel_size: int
    trust_remote_code: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    """Teacher-forced validation thresholds: the recipe's (config.recipes) with the model's overrides applied."""

    @property
    def checkpoint_dir(self) -> str:
        return f"{self.work_dir}/checkpoint"

    @property
    def validation_file(self) -> str:
        return f"{self.work_dir}/validation.json"

    @property
    def reference_dir(self) -> str:
        """References of this source commit, shared by all its recipes (llmops.validate.reference_store)."""
        return f"{self.work_dir.rsplit('/', 1)[0]}/references"

    @property
    def key(self) -> str:
        return f"{self.model}/{self.artefact_recipe}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Skipped:
    model: str
    recipe: str
    reason: str
    manifest_uri: str | None = None


@dataclass
class RefreshPlan:
    items: list[WorkItem] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def downloads(self) -> list[dict[str, str]]:
        """One download per (model, sha) that still has work, in plan order."""
        seen: dict[tuple[str, str], dict[str, str]] = {}
        for item in self.items:
            seen.setdefault((item.model, item.sha), {"model": item.model, "sha": item.sha, "out": item.source_dir})
        return list(seen.values())

    def summary(self) -> str:
        lines = [f"{len(self.items)} artefact version(s) to build, {len(self.skipped)} skipped"]
        for item in self.items:
            note = f"validate with {item.validation}" if item.validation != VALIDATE_SKIP else \
                f"validation skipped: {item.validation_skip_reason}"
            lines.append(f"  build {item.prefix} for {', '.join(item.gpu_profiles)} ({note})")
        for skip in self.skipped:
            where = f" ({skip.manifest_uri})" if skip.manifest_uri else ""
            lines.append(f"  skip  {skip.model}/{skip.recipe}: {skip.reason}{where}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"items": [asdict(i) for i in self.items], "skipped": [asdict(s) for s in self.skipped],
                "downloads": self.downloads}


def _validation(recipe, runtime: str) -> tuple[str, str | None]:
    if runtime == "kubernetes":
        return (VALIDATE_VLLM if recipe.runtime == "vllm" else VALIDATE_TRTLLM), None
    if recipe.runtime == "vllm":
        if recipe.cpu_servable:
            return VALIDATE_VLLM, None
        return VALIDATE_SKIP, (f"vLLM on CPU has no kernels for {recipe.scheme}; the local runtime cannot load it, "
                               "a GPU pod (runtime kubernetes) validates it")
    return VALIDATE_SKIP, ("TensorRT-LLM runs only on NVIDIA GPUs; the local runtime skips its validation, "
                           "a GPU pod (runtime kubernetes) validates it")


def check_handoff(runtime: str, model_cache_pvc: str) -> None:
    """Refuse runtime kubernetes without a shared model cache, before anything runs.

    Each step is its own pod: the download hands the snapshot to quantize, quantize the checkpoint to
    validate and publish, through the volume at /models. Without a PersistentVolumeClaim that volume is an
    emptyDir, which vanishes with each pod: every later step would find nothing.
    """
    if runtime == "kubernetes" and not model_cache_pvc:
        raise ConfigError("setting LLMOPS_MODEL_CACHE_PVC", [(
            "LLMOPS_MODEL_CACHE_PVC", "is empty, but on runtime kubernetes each step runs in its own pod and hands "
            "the download and the checkpoint to the next one through the model cache volume",
            "create a ReadWriteMany PersistentVolumeClaim in the job namespace (NAS or CPFS on ACK) and set "
            "LLMOPS_MODEL_CACHE_PVC to its name")])


def expand_targets(models: list, shas: dict[str, str], profiles: dict, *, runtime: str, work_root: str,
                   recipes: list[str] | None = None) -> RefreshPlan:
    """Every artefact version the registry asks for, before looking at the store.

    `models`: ModelSpec list; `shas`: model name -> resolved commit sha; `profiles`: name -> GpuProfile.
    `recipes` (the run's filter) must name known recipes; models without a sha are an error.
    """
    if recipes:
        unknown = sorted(set(recipes) - set(RECIPES))
        if unknown:
            raise ConfigError("run parameter recipes", [(
                "recipes", f"{', '.join(unknown)} is not a known recipe",
                f"use names from {', '.join(sorted(RECIPES))} or leave it empty for all targets")])
    plan = RefreshPlan()
    for spec in models:
        if spec.name not in shas:
            raise InvalidValue(f"model {spec.name!r} has no resolved sha", fix="resolve its revision before planning")
        sha = shas[spec.name]
        golden = {"prompts": [p.model_dump(exclude_none=True) for p in spec.validation.golden_prompts],
                  "max_new_tokens": spec.validation.max_new_tokens,
                  "min_agreement": spec.validation.min_agreement}
        for target in spec.targets:
            recipe = RECIPES[target.recipe]
            if recipes and recipe.name not in recipes:
                plan.skipped.append(Skipped(spec.name, recipe.name, "not in this run's recipes filter"))
                continue
            runnable, refused = [], []
            for name in target.gpu_profiles:
                profile = profiles.get(name)
                if profile is None:
                    refused.append(f"{name} (unknown GPU profile)")
                elif recipe.runs_on(profile.compute_capability):
                    runnable.append(profile)
                else:
                    refused.append(f"{name} (compute capability {profile.compute_capability} < "
                                   f"{recipe.min_compute_capability})")
            if refused:
                plan.skipped.append(Skipped(spec.name, recipe.name, f"not built for {', '.join(refused)}"))
            if not runnable:
                continue
            if runtime == "local" and not recipe.cpu_ok:
                plan.skipped.append(Skipped(spec.name, recipe.name, (
                    f"{recipe.tool} needs an NVIDIA GPU to build; the local runtime cannot run it, "
                    "runtime kubernetes builds it in a GPU pod")))
                continue
            mode, reason = _validation(recipe, runtime)
            prefix = artefact_prefix(spec.name, sha, recipe.runtime, recipe.name)
            plan.items.append(WorkItem(
                model=spec.name, repo_id=spec.repo_id, revision=spec.revision, sha=sha, recipe=recipe.name,
                artefact_recipe=recipe.name, runtime=recipe.runtime, prefix=prefix,
                gpu_profiles=[p.name for p in runnable], build_profile=runnable[0].name,
                min_compute_capability=recipe.min_compute_capability,
                validation=mode, validation_skip_reason=reason,
                source_dir=f"{work_root}/{spec.name}/{sha}/source",
                work_dir=f"{work_root}/{spec.name}/{sha}/{recipe.runtime}-{recipe.name}",
                golden=golden, max_model_len=spec.max_model_len,
                tensor_parallel_size=spec.tensor_parallel_size, trust_remote_code=spec.trust_remote_code,
                thresholds=dict(recipe.validation.replace(**spec.validation.thresholds.model_dump()).__dict__),
            ))
    return plan


def plan_refresh(candidates: RefreshPlan, published: dict[str, str | None], *, force: bool = False) -> RefreshPlan:
    """Drop the candidates already published (prefix -> manifest URI), unless `force` rebuilds them."""
    plan = RefreshPlan(skipped=list(candidates.skipped))
    for item in candidates.items:
        if item.prefix in published and not force:
            plan.skipped.append(Skipped(item.model, item.artefact_recipe, "already published",
                                        published[item.prefix]))
        else:
            plan.items.append(item)
    return plan
