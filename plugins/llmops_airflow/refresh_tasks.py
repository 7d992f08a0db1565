"""Airflow glue of model_refresh: the Asset it emits, the bodies of its resolve, plan and report tasks, and
the chain of heavy steps every (model, recipe) item runs in its own mapped task group.

The planning itself is `llmops.refresh` (pure). Here a planned WorkItem becomes one entry of the item
group's `expand_kwargs` list: the arguments of its download, quantize, validate and publish jobs, the
Connection whose token its download uses and, on runtime `kubernetes`, its GPU profile's node selector,
resources and tolerations and the images its steps need. Items are independent: one item failing (or one
model failing to resolve) never holds back another item's publication; the report then lists every item
and fails the run.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException

from llmops.refresh.plan import VALIDATE_TRTLLM, WorkItem
from llmops.refresh.report import FAILED, ITEM_STEPS, ItemOutcome, item_outcome, render_report
from llmops.settings import SIGNING_KEY_ENV, get_settings

#: One event per published artefact version; `extra` carries the manifest URI and lineage.
MODEL_ARTEFACTS = Asset(name="model_artefacts", uri="llmops://model-artefacts", group="model")

#: The mapped task group of one item and the keys of its `expand_kwargs` entries.
ITEM_GROUP = "item"
ITEM_FIELDS = ("key", "download", "quantize", "validate", "publish", "hf_token", "quantize_image",
               "validate_image", "node_selector", "gpu_resources", "download_pod", "gpu_pod")
#: Tries of a GPU step on runtime kubernetes (quantize, validate), which may run on spot nodes.
GPU_STEP_RETRIES = 4
#: Connection `llmops_signing` (password: the PEM private key; Secret `llmops-llmops-signing` key `password` in
#: pods) as the publish step's LLMOPS_SIGNING_PRIVATE_KEY. Optional: without it versions are published unsigned.
SIGNING_CONNECTION = "llmops_signing"
SIGNING_SECRET_ENV = {SIGNING_KEY_ENV: f"{SIGNING_CONNECTION}.password"}
#: The key of the XCom a failing step or resolve pushes: the first line of its error, for the report.
ERROR_XCOM = "error"

#: The report goes through the task's logging (what the UI's log view shows), one record per line.
log = logging.getLogger("llmops_airflow.refresh")


def log_lines(text: str, level: int = logging.INFO) -> None:
    for line in text.splitlines():
        log.log(level, "%s", line)


def hf_secret_ref(conn_id: str | None) -> str | None:
    return f"{conn_id}.password" if conn_id else None


def hf_connection(conn_id: str | None) -> tuple[str | None, str | None]:
    """(token, mirror URL) of the model's Hugging Face Connection; (None, None) when there is none."""
    from llmops_airflow.hooks.huggingface import HuggingFaceHook

    return HuggingFaceHook(conn_id).token_and_mirror()


def _image_for(item: WorkItem, step: str) -> str:
    settings = get_settings()
    if step == "validate":
        return settings.trtllm_image if item.validation == VALIDATE_TRTLLM else settings.serving_image
    return settings.worker_image


def item_entry(item: WorkItem, *, hf_connection_id: str | None, run: list[str], runtime: str | None = None,
               download_extra: list[str] | None = None, profiles: dict | None = None) -> dict[str, Any]:
    """The `expand_kwargs` entry of one item's group (keys: ITEM_FIELDS)."""
    payload = ["--item", item.to_json()]
    entry: dict[str, Any] = dict.fromkeys(ITEM_FIELDS)
    entry.update(key=item.key, quantize=payload, validate=payload, publish=[*payload, *run],
                 download=["--model", item.model, "--revision-sha", item.sha, "--out", item.source_dir,
                           *(download_extra or [])],
                 hf_token=hf_secret_ref(hf_connection_id))
    if (runtime or get_settings().runtime) != "kubernetes":
        return entry
    from kubernetes.client import ApiClient

    from llmops_airflow.steps import kubernetes_secret_name, pod_settings

    sanitize = ApiClient().sanitize_for_serialization  # XCom carries JSON, not client model objects
    profile = (profiles or {}).get(item.build_profile)
    # quantize and validate may run on the profile's spot pool: an evicted pod is retried and resumes from the
    # model cache (the download and a finished checkpoint are reused)
    pod = pod_settings(profile, interruptible=True)
    gpu_spec: dict[str, Any] = {"containers": [{"name": "base"}], "tolerations": sanitize(pod.get("tolerations", []))}
    if pod.get("affinity"):
        gpu_spec["affinity"] = pod["affinity"]
    entry.update(quantize_image=_image_for(item, "quantize"), validate_image=_image_for(item, "validate"),
                 node_selector=pod.get("node_selector", {}),
                 gpu_resources=sanitize(pod["container_resources"]),
                 # a pod template holds what the operator cannot template itself: the profile's tolerations
                 # and (spot) node affinity
                 gpu_pod={"spec": gpu_spec},
                 download_pod={"spec": {"containers": [{"name": "base", "env": []}]}})
    if hf_connection_id:
        # In pods the token comes from the Kubernetes Secret named after the model's Connection (optional:
        # a public model needs none), never from the pod spec itself.
        ref = hf_secret_ref(hf_connection_id)
        entry["download_pod"]["spec"]["containers"][0]["env"].append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": kubernetes_secret_name(ref), "key": "password", "optional": True}}})
    return entry


def item_chain(*, download, quantize, validate, publish, hf_token, quantize_image, validate_image,
               node_selector, gpu_resources, download_pod, gpu_pod, runtime: str | None = None, **_):
    """One item's download -> quantize -> validate -> publish inside its mapped task group.

    The arguments are the group's mapped arguments (resolved per item at run time); returns the publish
    operator, whose XCom is the published manifest.
    """
    from llmops_airflow.steps import heavy_step

    runtime = runtime or get_settings().runtime
    gpu: dict[str, Any] = {"pool": gpu_pool(runtime), "runtime": runtime}
    fetch: dict[str, Any] = {"runtime": runtime}
    if runtime == "kubernetes":
        # more tries than the DAG's default: a spot reclaim costs one, and a permanent error fails at once anyway
        gpu.update(node_selector=node_selector, container_resources=gpu_resources, pod_template_dict=gpu_pod,
                   retries=GPU_STEP_RETRIES)
        fetch["pod_template_dict"] = download_pod
        quantize_kwargs = {**gpu, "image": quantize_image}
        validate_kwargs = {**gpu, "image": validate_image}
    else:
        fetch["secret_env"] = {"HF_TOKEN": hf_token}
        quantize_kwargs = validate_kwargs = gpu
    steps = [
        heavy_step(task_id="download", job="download", arguments=download, **fetch),
        heavy_step(task_id="quantize", job="quantize", arguments=quantize, **quantize_kwargs),
        heavy_step(task_id="validate", job="validate", environment="serving", arguments=validate,
                   **validate_kwargs),
        # the signing key reaches this step only (locally from the Connection, in pods from its Secret)
        heavy_step(task_id="publish", job="publish", arguments=publish, runtime=runtime, secret_env=SIGNING_SECRET_ENV),
    ]
    for upstream, downstream in zip(steps, steps[1:], strict=False):
        upstream >> downstream
    return steps[-1]


def gpu_pool(runtime: str | None = None) -> str:
    """GPU steps take a slot of the `gpu` pool on Kubernetes; local subprocesses use the default pool."""
    from llmops_airflow.steps import GPU_POOL

    return GPU_POOL if (runtime or get_settings().runtime) == "kubernetes" else "default_pool"


def work_root() -> str:
    """Where downloads and checkpoints live: the model-cache volume in pods, $LLMOPS_HOME/work locally."""
    from llmops_airflow.steps import MODEL_CACHE_MOUNT

    settings = get_settings()
    return f"{MODEL_CACHE_MOUNT}/refresh" if settings.runtime == "kubernetes" else str(settings.home / "work")


def _mirror_argument(spec) -> list[str]:
    """`--mirror URL` for the download job when the model's Hugging Face Connection names a host."""
    mirror = hf_connection(spec.hf_connection_id)[1]
    return ["--mirror", mirror] if mirror else []


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def resolve_model(model: str, ti=None) -> dict[str, str]:
    """The `resolve` task: the model's tracked revision -> commit sha, with the token (and mirror) from its
    Connection. A permanent error (unknown repo or revision) fails at once; the report shows its first line."""
    from llmops.config import load_registry
    from llmops.hub import resolve_revision
    from llmops_airflow.failures import permanent_errors_fail_at_once

    try:
        with permanent_errors_fail_at_once():
            spec = load_registry().model(model)
            token, mirror = hf_connection(spec.hf_connection_id)
            sha = resolve_revision(spec, token, mirror=mirror)
    except Exception as exc:
        if ti is not None:
            ti.xcom_push(key=ERROR_XCOM, value=first_line(exc))
        raise
    print(f"{model}: {spec.repo_id}@{spec.revision} -> {sha}")
    return {"model": model, "sha": sha}


def plan_run(models: list[str], resolved: list[dict], *, recipes: list[str] | None, force: bool,
             run_id: str) -> dict[str, Any]:
    """The `plan` task: every candidate version of the resolved models, minus those the store already has.

    Runs when some models failed to resolve (they are listed as `unresolved`; the others go ahead).
    """
    from llmops.config import load_registry
    from llmops.refresh.plan import check_handoff, expand_targets, plan_refresh
    from llmops_airflow.hooks.artefacts import ArtefactStoreHook

    settings = get_settings()
    check_handoff(settings.runtime, settings.model_cache_pvc)
    registry = load_registry()
    shas = {r["model"]: r["sha"] for r in resolved if r}
    unresolved = [m for m in models if m not in shas]
    candidates = expand_targets([registry.model(m) for m in shas], shas, registry.gpu_profiles,
                                runtime=settings.runtime, work_root=work_root(), recipes=recipes)
    store = ArtefactStoreHook().get_conn()
    published = {}
    for item in candidates.items:
        manifest = store.read_manifest(item.prefix)
        if manifest is not None:
            published[item.prefix] = manifest.uri
    refresh = plan_refresh(candidates, published, force=force)
    summary = refresh.summary()
    if unresolved:
        summary += "\n" + "\n".join(f"  fail  {m}: its revision did not resolve (see the resolve task)"
                                    for m in unresolved)
    print(summary)
    run = ["--dag-id", "model_refresh", "--run-id", run_id, "--task-id", f"{ITEM_GROUP}.publish"]
    return {
        "items": [item_entry(i, hf_connection_id=registry.model(i.model).hf_connection_id, run=run,
                             download_extra=_mirror_argument(registry.model(i.model)), profiles=registry.gpu_profiles)
                  for i in refresh.items],
        "skipped": [{"key": f"{s.model}/{s.recipe}", "reason": s.reason + (f" ({s.manifest_uri})" if s.manifest_uri
                                                                             else "")} for s in refresh.skipped],
        "unresolved": unresolved,
        "summary": summary,
    }


def refresh_report(ti, dag_run) -> str:
    """The `report` task: every item's outcome from the run's task states; fails the run if any item failed.

    Reads only what exists: the plan (absent when planning failed), the states of each item's steps, the
    first error line of a failed step and the manifest of a published one.
    """
    from llmops.refresh.report import SKIPPED

    planned = ti.xcom_pull(task_ids="plan") if _state(ti, dag_run, "plan") == "success" else None
    if not planned:
        text = "model_refresh: nothing was planned (the select_models, resolve or plan task failed; see its log)"
        log_lines(text, logging.ERROR)
        raise AirflowFailException(text)
    states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id],
                                task_group_id=ITEM_GROUP).get(dag_run.run_id, {})
    outcomes = [ItemOutcome(s["key"], SKIPPED, s["reason"]) for s in planned["skipped"]]
    for model in planned["unresolved"]:
        error = _error(ti, "resolve", _model_index(ti, dag_run, model)) or "see the resolve task's log"
        outcomes.append(ItemOutcome(model, FAILED, f"resolve: {error}"))
    for index, entry in enumerate(planned["items"]):
        step_states = {step: states.get(f"{ITEM_GROUP}.{step}_{index}") for step in ITEM_STEPS}
        failed = next((s for s in ITEM_STEPS if step_states[s] == "failed"), None)
        error = _error(ti, f"{ITEM_GROUP}.{failed}", index) if failed else None
        manifest = None
        if step_states["publish"] == "success":
            manifest = (ti.xcom_pull(task_ids=f"{ITEM_GROUP}.publish", map_indexes=index) or {}).get("manifest_uri")
        outcomes.append(item_outcome(entry["key"], step_states, error=error, manifest_uri=manifest))
    text = render_report(planned["summary"], outcomes)
    log_lines(text)
    failed = [o for o in outcomes if o.status == FAILED]
    if failed:
        # the failure message itself names each failed item and its error, wherever it is shown
        raise AirflowFailException(f"{len(failed)} of {len(outcomes)} item(s) failed:\n" + "\n".join(
            render_report("", failed).splitlines()[1:-1]))
    return text


def _state(ti, dag_run, task_id: str) -> str | None:
    states = ti.get_task_states(dag_id=dag_run.dag_id, run_ids=[dag_run.run_id], task_ids=[task_id])
    return states.get(dag_run.run_id, {}).get(task_id)


def _model_index(ti, dag_run, model: str) -> int | None:
    models = ti.xcom_pull(task_ids="select_models") or []
    return models.index(model) if model in models else None


def _error(ti, task_id: str, map_index: int | None) -> str | None:
    if map_index is None:
        return None
    return ti.xcom_pull(task_ids=task_id, key=ERROR_XCOM, map_indexes=map_index)
