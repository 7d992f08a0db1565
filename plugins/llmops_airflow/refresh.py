"""Airflow glue of model_refresh: the Asset it emits, the Hugging Face token, per-item step arguments.

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


def hf_token(conn_id: str | None) -> str | None:
    """The Hugging Face token from the model's Airflow Connection (password field), if there is one."""
    from llmops_airflow.steps import resolve_secret_env

    return resolve_secret_env({"HF_TOKEN": f"{conn_id}.password"}).get("HF_TOKEN") if conn_id else None


def _image_for(item: WorkItem, step: str) -> str | None:
    settings = get_settings()
    if step == "quantize" and item.recipe.startswith("trtllm-engine"):
        return getattr(settings, "trtllm_legacy_image", "llmops-trtllm-legacy:0.1.0")
    if step == "validate":
        if item.validation == VALIDATE_TRTLLM:
            return settings.trtllm_image if not item.recipe.startswith("trtllm-engine") else \
                getattr(settings, "trtllm_legacy_image", "llmops-trtllm-legacy:0.1.0")
        return getattr(settings, "serving_image", "llmops-vllm:0.1.0")
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
