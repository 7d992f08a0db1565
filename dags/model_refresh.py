"""model_refresh: resolve -> plan -> download -> quantize -> validate -> publish -> Asset event.

Wiring only: the planning is `llmops.refresh`, the heavy steps are `llmops.jobs.*` (subprocesses on the
local runtime, GPU pods on Kubernetes), the per-item step arguments come from `llmops_airflow.refresh_tasks`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task, task_group

from llmops.config.recipes import RECIPES
from llmops_airflow.dag_defaults import START_DATE, default_args
from llmops_airflow.forms import chosen, one_or_all
from llmops_airflow.refresh_tasks import ITEM_GROUP, MODEL_ARTEFACTS, item_chain

DOC = """
### model_refresh
For each model in `include/config/models.yaml` (or the one named in **model**):

1. **resolve** the tracked revision (branch or tag) to an immutable commit sha;
2. **plan** one artefact version per (model, sha, recipe): skip what is already published (the log says
   which and where), skip recipes a listed GPU cannot run (FP8 needs compute capability 8.9+) and, on the
   local runtime, recipes that need a GPU to build;
Then each (model, recipe) item runs its own chain, a mapped task group `item` (one failing item, or a model
that failed to resolve, never holds back another item):

3. **download** the snapshot pinned to the sha (weight policy, sha256 checked against the hub), with the
   token of the model's own Connection (`hf_connection_id`);
4. **quantize** with the recipe (llm-compressor / optimum GPTQ for vLLM, ModelOpt for TensorRT-LLM);
5. **validate**: the serving runtime loads the unquantized checkpoint (the reference, recorded once per commit)
   and the quantized one the same way; the candidate scores the reference's answers to the golden prompts
   teacher-forced: mean KL and top-1 agreement where the reference is confident, against the recipe's
   thresholds (`validation.thresholds` overrides them; TensorRT-LLM: GPU pods only);
6. **publish** under `models/<model>/<sha>/<runtime>-<recipe>/`, manifest last;
7. **announce** an Asset event (`model_artefacts`) whose extra carries the manifest URI and lineage.

Last, **report** always runs: every item published / skipped (why) / failed (step and first error line).
The run fails when any item failed.

Params: **model** (`all`, the default: every model), **recipes** (none selected: every target), **force**
(rebuild even if published).
"""


@dag(
    dag_id="model_refresh",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    tags=["llmops", "models"],
    doc_md=DOC,
    params={
        "model": one_or_all("models.yaml", "models", title="Model", description="one model from models.yaml, or all"),
        "recipes": Param(None, type=["null", "array"], items={"type": "string", "enum": sorted(RECIPES)},
                         examples=sorted(RECIPES), uniqueItems=True, title="Recipes",
                         description="only these recipes (e.g. llmcompressor-w8a8); none selected: every target"),
        "force": Param(False, type="boolean", title="Force rebuild",
                       description="rebuild and re-validate versions that are already published"),
    },
)
def model_refresh():
    @task
    def select_models(params=None) -> list[str]:
        from llmops.config import load_registry
        from llmops_airflow.failures import permanent_errors_fail_at_once

        with permanent_errors_fail_at_once():
            registry = load_registry()
            wanted = chosen((params or {}).get("model"))
            return [registry.model(wanted).name] if wanted else list(registry.models)

    @task(map_index_template="{{ task.op_kwargs['model'] }}")
    def resolve(model: str, ti=None) -> dict:
        from llmops_airflow.refresh_tasks import resolve_model

        return resolve_model(model, ti)

    @task(trigger_rule="all_done")  # models that resolved go ahead when others did not
    def plan(models: list[str], resolved: list[dict], params=None, dag_run=None) -> dict:
        from llmops_airflow.failures import permanent_errors_fail_at_once
        from llmops_airflow.refresh_tasks import plan_run

        with permanent_errors_fail_at_once():
            # a slice reads the models that resolved in one call (iterating would probe one past the end)
            return plan_run(list(models), list(resolved[:]), recipes=(params or {}).get("recipes") or None,
                            force=bool((params or {}).get("force")), run_id=dag_run.run_id if dag_run else "manual")

    @task
    def items(planned: dict) -> list[dict]:
        """The plan's items as the item group's `expand_kwargs` list (Airflow maps only over a return value)."""
        return planned["items"]

    @task(outlets=[MODEL_ARTEFACTS])
    def announce(published: dict, outlet_events=None) -> str:
        outlet_events[MODEL_ARTEFACTS].extra = published["asset_extra"]
        print(f"published {published['manifest_uri']} (validation: {published['validation']})")
        return published["manifest_uri"]

    # One mapped group per (model, recipe): its steps depend on its own earlier steps only, so one item
    # failing never holds back another's publication.
    @task_group(group_id=ITEM_GROUP)
    def item(key, download, quantize, validate, publish, hf_token, quantize_image, validate_image,
             node_selector, gpu_resources, download_pod, gpu_pod):
        announce(item_chain(**locals()).output)

    @task(trigger_rule="all_done")  # always runs; fails the run (no retry) when any item failed
    def report(ti=None, dag_run=None) -> str:
        from llmops_airflow.refresh_tasks import refresh_report

        return refresh_report(ti, dag_run)

    models = select_models()
    planned = plan(models, resolve.expand(model=models))
    chains = item.expand_kwargs(items(planned))
    [planned, chains] >> report()


model_refresh()
