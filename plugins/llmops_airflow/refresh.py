"""Airflow glue of model_refresh: the Asset it emits, the bodies of its resolve and plan tasks, and the
per-item arguments of its heavy steps.

The planning itself is `llmops.refresh` (pure). Here a planned WorkItem becomes the keyword arguments of
one mapped heavy step: `--item <json>` always, and on runtime `kubernetes` the GPU profile's resources,
node selector and tolerations plus the image the step needs (one mapped task serves items for
different GPUs and runtimes).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

from llmops.refresh import VALIDATE_TRTLLM, WorkItem
from llmops.settings import get_settings

#: One event per published artefact version; `extra` carries the manifest URI and lineage.
MODEL_ARTEFACTS = Asset(name="model_artefacts", uri="llmops://model-artefacts", group="model")


def hf_connection(conn_id: str | None) -> tuple[str | None, str | None]:
    """(token, mirror URL) of the model's Hugging Face Connection; (None, None) when there is none."""
    from llmops_airflow.hooks.huggingface import HuggingFaceHook

    return HuggingFaceHook(conn_id).token_and_mirror()


def _image_for(item: WorkItem, step: str) -> str | None:
    settings = get_settings()
    if step == "quantize" and item.recipe.startswith("trtllm-engine"):
        return settings.trtllm_legacy_image
    if step == "validate":
        if item.validation == VALIDATE_TRTLLM:
            return settings.trtllm_legacy_image if item.recipe.startswith("trtllm-engine") else settings.trtllm_image
        return settings.serving_image
    return None


def step_kwargs(item: WorkItem, step: str, extra_arguments: list[str] | None = None,
                runtime: str | None = None, profiles: dict | None = None) -> dict[str, Any]:
    """`expand_kwargs` entry for one item's `step` (quantize, validate, publish)."""
    kwargs: dict[str, Any] = {"arguments": ["--item", item.to_json(), *(extra_arguments or [])]}
    if (runtime or get_settings().runtime) != "kubernetes":
        return kwargs
    from kubernetes.client import ApiClient

    from llmops_airflow.steps import pod_settings

    profile = (profiles or {}).get(item.build_profile) if step != "publish" else None
    pod = pod_settings(profile)
    sanitize = ApiClient().sanitize_for_serialization  # XCom carries JSON, not client model objects
    kwargs["container_resources"] = sanitize(pod["container_resources"])
    if profile is not None:
        kwargs["node_selector"] = pod["node_selector"]
        kwargs["tolerations"] = sanitize(pod["tolerations"])
    image = _image_for(item, step)
    if image:
        kwargs["image"] = image
    return kwargs


def gpu_pool() -> str:
    """GPU steps take a slot of the `gpu` pool on Kubernetes; local subprocesses use the default pool."""
    from llmops_airflow.steps import GPU_POOL

    return GPU_POOL if get_settings().runtime == "kubernetes" else "default_pool"


def work_root() -> str:
    """Where downloads and checkpoints live: the model-cache volume in pods, $LLMOPS_HOME/work locally."""
    from llmops_airflow.steps import MODEL_CACHE_MOUNT

    settings = get_settings()
    return f"{MODEL_CACHE_MOUNT}/refresh" if settings.runtime == "kubernetes" else str(settings.home / "work")


def _mirror_argument(spec) -> list[str]:
    """`--mirror URL` for the download job when the model's Hugging Face Connection names a host."""
    mirror = hf_connection(spec.hf_connection_id)[1]
    return ["--mirror", mirror] if mirror else []


def resolve_model(model: str) -> dict[str, str]:
    """The `resolve` task: the model's tracked revision -> commit sha, with the token from its Connection."""
    from llmops.config import load_registry
    from llmops.hub import resolve_revision

    spec = load_registry().model(model)
    token, mirror = hf_connection(spec.hf_connection_id)
    sha = resolve_revision(spec, token, mirror=mirror)
    print(f"{model}: {spec.repo_id}@{spec.revision} -> {sha}")
    return {"model": model, "sha": sha}


def plan_run(resolved: list[dict], *, recipes: list[str] | None, force: bool, run_id: str) -> dict[str, Any]:
    """The `plan` task: every candidate version, minus those the store already has; per-step mapping lists."""
    from llmops.config import load_registry
    from llmops.refresh import expand_targets, plan_refresh
    from llmops_airflow.hooks.artefacts import ArtefactStoreHook

    settings = get_settings()
    registry = load_registry()
    shas = {r["model"]: r["sha"] for r in resolved}
    candidates = expand_targets([registry.model(m) for m in shas], shas, registry.gpu_profiles,
                                runtime=settings.runtime, work_root=work_root(), recipes=recipes)
    store = ArtefactStoreHook().get_conn()
    published = {}
    for item in candidates.items:
        manifest = store.read_manifest(item.prefix)
        if manifest is not None:
            published[item.prefix] = manifest.uri
    refresh = plan_refresh(candidates, published, force=force)
    print(refresh.summary())
    run = ["--dag-id", "model_refresh", "--run-id", run_id, "--task-id", "publish"]
    profiles = registry.gpu_profiles
    return {
        "download": [{"arguments": ["--model", d["model"], "--revision-sha", d["sha"], "--out", d["out"],
                                    *_mirror_argument(registry.model(d["model"]))]}
                     for d in refresh.downloads],
        "quantize": [step_kwargs(i, "quantize", profiles=profiles) for i in refresh.items],
        "validate": [step_kwargs(i, "validate", profiles=profiles) for i in refresh.items],
        "publish": [step_kwargs(i, "publish", run, profiles=profiles) for i in refresh.items],
        "summary": refresh.summary(),
    }
