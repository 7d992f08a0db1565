"""model_refresh: resolve -> plan -> download -> quantize -> validate -> publish -> Asset event.

Wiring only: the planning is `llmops.refresh`, the heavy steps are `llmops.jobs.*` (subprocesses on the
local runtime, GPU pods on Kubernetes), the per-item step arguments come from `llmops_airflow.refresh`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from llmops.quantize.recipes import RECIPES
from llmops_airflow.dag_defaults import START_DATE, default_args
from llmops_airflow.forms import chosen, one_or_all
from llmops_airflow.refresh import MODEL_ARTEFACTS, gpu_pool
from llmops_airflow.steps import heavy_step_partial

DOC = """
### model_refresh
For each model in `include/config/models.yaml` (or the one named in **model**):

1. **resolve** the tracked revision (branch or tag) to an immutable commit sha;
2. **plan** one artefact version per (model, sha, recipe): skip what is already published (the log says
   which and where), skip recipes a listed GPU cannot run (FP8 needs compute capability 8.9+) and, on the
   local runtime, recipes that need a GPU to build;
3. **download** the snapshot pinned to the sha (weight policy, sha256 checked against the hub);
4. **quantize** with the recipe (llm-compressor / optimum GPTQ for vLLM, ModelOpt for TensorRT-LLM);
5. **validate**: the serving runtime loads the checkpoint and answers the golden prompts; agreement with
   the unquantized model must reach `validation.min_agreement` (TensorRT-LLM: GPU pods only);
6. **publish** under `models/<model>/<sha>/<runtime>-<recipe>/`, manifest last;
7. **announce** an Asset event (`model_artefacts`) whose extra carries the manifest URI and lineage.

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

        registry = load_registry()
        wanted = chosen((params or {}).get("model"))
        return [registry.model(wanted).name] if wanted else list(registry.models)

    @task(map_index_template="{{ task.op_kwargs['model'] }}")
    def resolve(model: str) -> dict:
        from llmops_airflow.refresh import resolve_model

        return resolve_model(model)

    @task
    def plan(resolved: list[dict], params=None, dag_run=None) -> dict:
        from llmops_airflow.refresh import plan_run

        return plan_run(resolved, recipes=(params or {}).get("recipes") or None,
                        force=bool((params or {}).get("force")), run_id=dag_run.run_id if dag_run else "manual")

    @task
    def arguments_of(planned: dict, step: str) -> list[dict]:
        """The plan's `expand_kwargs` list for one step (Airflow maps only over a task's return value)."""
        return planned[step]

    @task(outlets=[MODEL_ARTEFACTS], map_index_template="{{ task.op_kwargs['published']['prefix'] }}")
    def announce(published: dict, outlet_events=None) -> str:
        outlet_events[MODEL_ARTEFACTS].extra = published["asset_extra"]
        print(f"published {published['manifest_uri']} (validation: {published['validation']})")
        return published["manifest_uri"]

    @task(trigger_rule="none_failed")
    def report(planned: dict, manifests: list[str] | None = None) -> str:
        manifests = [m for m in (manifests or []) if m]
        published = "\n".join(f"  {m}" for m in manifests) if manifests else "  nothing new"
        text = f"model_refresh plan: {planned['summary']}\npublished:\n{published}"
        print(text)
        return text

    planned = plan(resolve.expand(model=select_models()))

    def step_input(step: str):
        return arguments_of.override(task_id=f"{step}_arguments")(planned, step)

    # strict=False: on Kubernetes an item's pod settings (its GPU profile's resources, node selector,
    # tolerations, image) override the step's defaults.
    download = heavy_step_partial(task_id="download", job="download",
                                  secret_env={"HF_TOKEN": "huggingface_default.password"},
                                  ).expand_kwargs(step_input("download"))
    quantize = heavy_step_partial(task_id="quantize", job="quantize", pool=gpu_pool()).expand_kwargs(
        step_input("quantize"), strict=False)
    validate = heavy_step_partial(task_id="validate", job="validate", environment="serving",
                                  pool=gpu_pool()).expand_kwargs(step_input("validate"), strict=False)
    publish = heavy_step_partial(task_id="publish", job="publish").expand_kwargs(step_input("publish"), strict=False)
    announced = announce.expand(published=publish.output)
    download >> quantize >> validate >> publish
    report(planned, announced)


model_refresh()
