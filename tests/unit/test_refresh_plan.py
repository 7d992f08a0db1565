"""llmops.refresh: which artefact versions a refresh builds. Pure: registry objects in, plan out."""

from __future__ import annotations

import itertools
import json

import pytest

from llmops.artefacts.manifest import artefact_prefix
from llmops.config import load_registry
from llmops.config.recipes import RECIPES
from llmops.config.schema import GpuProfile, ModelSpec
from llmops.errors import ConfigError
from llmops.jobs._cli import parse_item
from llmops.refresh.plan import (
    VALIDATE_SKIP,
    VALIDATE_TRTLLM,
    VALIDATE_VLLM,
    RefreshPlan,
    check_handoff,
    expand_targets,
    plan_refresh,
)
from llmops.refresh.report import FAILED, ITEM_STEPS, PUBLISHED, SKIPPED, ItemOutcome, item_outcome, render_report

SHA = "0123456789abcdef0123456789abcdef01234567"
GOLDEN = {"golden_prompts": [{"prompt": "Hello"}]}
PROFILES = {
    name: GpuProfile(name=name, gpu=name.upper(), compute_capability=cc, gpu_memory_gib=24, gpus_per_node=1)
    for name, cc in [("t4", 7.5), ("a10", 8.6), ("a100", 8.0), ("l20", 8.9), ("h20", 9.0), ("b200", 10.0)]
}


def model(name="m", recipes=tuple(RECIPES), profiles=tuple(PROFILES), **extra) -> ModelSpec:
    return ModelSpec(name=name, repo_id=f"org/{name}", targets=[
        {"recipe": r, "gpu_profiles": list(profiles)} for r in recipes], **{"validation": GOLDEN, **extra})


def expand(models, runtime="kubernetes", **kwargs) -> RefreshPlan:
    shas = {m.name: SHA for m in models}
    return expand_targets(models, shas, PROFILES, runtime=runtime, work_root="/work", **kwargs)


@pytest.mark.parametrize(("recipe", "profile"), list(itertools.product(sorted(RECIPES), sorted(PROFILES))))
def test_a_recipe_is_scheduled_for_a_profile_exactly_when_its_gpu_runs_the_format(recipe, profile):
    plan = expand([model(recipes=[recipe], profiles=[profile])])
    runs = PROFILES[profile].compute_capability >= RECIPES[recipe].min_compute_capability
    assert [i.gpu_profiles for i in plan.items] == ([[profile]] if runs else [])
    if not runs:
        (skip,) = plan.skipped
        assert profile in skip.reason and "compute capability" in skip.reason


def test_fp8_is_not_built_for_an_a10_but_is_for_the_l20_beside_it():
    plan = expand([model(recipes=["modelopt-fp8"], profiles=["a10", "l20", "h20"])])
    (item,) = plan.items
    assert item.gpu_profiles == ["l20", "h20"] and item.build_profile == "l20"
    assert item.min_compute_capability == 8.9
    assert any("a10 (compute capability 8.6 < 8.9)" in s.reason for s in plan.skipped)


def test_the_shipped_registry_plans_one_vllm_and_one_tensorrt_llm_checkpoint_locally():
    registry = load_registry()
    spec = registry.model("tiny-llama")
    plan = expand_targets([spec], {spec.name: SHA}, registry.gpu_profiles, runtime="local", work_root="/w")
    assert {(i.runtime, i.recipe, i.validation) for i in plan.items} == {
        ("vllm", "llmcompressor-w8a8", VALIDATE_VLLM), ("tensorrt-llm", "modelopt-fp8", VALIDATE_SKIP)}
    assert plan.skipped == []


def test_the_local_runtime_skips_recipes_that_need_a_gpu_to_build_and_says_why():
    local = expand([model(recipes=["optimum-gptq-int4", "llmcompressor-w4a16"], profiles=["h20"])], runtime="local")
    assert [i.recipe for i in local.items] == ["llmcompressor-w4a16"]
    reasons = {s.recipe: s.reason for s in local.skipped}
    assert set(reasons) == {"optimum-gptq-int4"}
    assert all("GPU" in r and "kubernetes" in r for r in reasons.values())
    cluster = expand([model(recipes=["optimum-gptq-int4"], profiles=["h20"])])
    assert sorted(i.recipe for i in cluster.items) == ["optimum-gptq-int4"]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("runtime", ["local", "kubernetes"])
def test_validation_uses_the_serving_runtime_where_it_can_run_and_records_why_not_elsewhere(recipe, runtime):
    plan = expand([model(recipes=[recipe], profiles=["b200"])], runtime=runtime)
    if runtime == "local" and not RECIPES[recipe].cpu_ok:
        assert plan.items == []
        return
    (item,) = plan.items
    if runtime == "kubernetes":
        assert item.validation == (VALIDATE_VLLM if item.runtime == "vllm" else VALIDATE_TRTLLM)
        assert item.validation_skip_reason is None
    elif RECIPES[recipe].cpu_servable:
        assert item.validation == VALIDATE_VLLM
    else:
        assert item.validation == VALIDATE_SKIP
        assert "GPU pod" in item.validation_skip_reason and "local runtime" in item.validation_skip_reason


def test_tensorrt_llm_recipes_publish_modelopt_checkpoints_and_no_engine_build_recipe_remains():
    trt = {name: r for name, r in RECIPES.items() if r.runtime == "tensorrt-llm"}
    assert trt and all(r.tool == "modelopt" for r in trt.values())
    assert not [name for name in RECIPES if name.startswith("trtllm-engine")]


def test_prefixes_are_the_artefact_store_prefixes_and_paths_are_keyed_by_model_sha_and_recipe():
    plan = expand([model("a", recipes=["llmcompressor-w8a8"]), model("b", recipes=["modelopt-int4-awq"])])
    for item in plan.items:
        assert item.prefix == artefact_prefix(item.model, SHA, item.runtime, item.artefact_recipe)
        assert item.source_dir == f"/work/{item.model}/{SHA}/source"
        assert item.checkpoint_dir == f"/work/{item.model}/{SHA}/{item.runtime}-{item.artefact_recipe}/checkpoint"


def test_already_published_versions_are_skipped_with_their_manifest_unless_forced():
    candidates = expand([model(recipes=["llmcompressor-w8a8", "modelopt-int4-awq"], profiles=["h20"])])
    done = candidates.items[0]
    published = {done.prefix: f"file:///store/{done.prefix}/manifest.json"}
    plan = plan_refresh(candidates, published)
    assert [i.recipe for i in plan.items] == ["modelopt-int4-awq"]
    (skip,) = plan.skipped
    assert (skip.recipe, skip.reason, skip.manifest_uri) == ("llmcompressor-w8a8", "already published",
                                                             published[done.prefix])
    assert "skip  m/llmcompressor-w8a8: already published" in plan.summary()
    assert plan_refresh(candidates, published, force=True).items == candidates.items
    assert plan_refresh(candidates, {p.prefix: None for p in candidates.items}).items == []


def test_downloads_are_one_per_model_and_only_for_models_with_work():
    candidates = expand([model("a", recipes=["llmcompressor-w8a8", "modelopt-fp8"], profiles=["h20"]),
                         model("b", recipes=["llmcompressor-w8a8"], profiles=["h20"])])
    assert [d["model"] for d in candidates.downloads] == ["a", "b"]
    published = {i.prefix: "uri" for i in candidates.items if i.model == "b"}
    assert plan_refresh(candidates, published).downloads == [{"model": "a", "sha": SHA, "out": f"/work/a/{SHA}/source"}]


def test_the_recipes_filter_limits_the_run_and_unknown_names_fail_before_anything_runs():
    plan = expand([model(recipes=["llmcompressor-w8a8", "modelopt-int4-awq"], profiles=["h20"])],
                  recipes=["modelopt-int4-awq"])
    assert [i.recipe for i in plan.items] == ["modelopt-int4-awq"]
    assert [(s.recipe, s.reason) for s in plan.skipped] == [("llmcompressor-w8a8", "not in this run's recipes filter")]
    with pytest.raises(ConfigError, match=r"llmcompressor-w9a9 is not a known recipe[\s\S]*fix: use names from"):
        expand([model()], recipes=["llmcompressor-w9a9"])


def test_a_model_without_a_resolved_sha_cannot_be_planned():
    with pytest.raises(ValueError, match="has no resolved sha"):
        expand_targets([model()], {}, PROFILES, runtime="local", work_root="/w")


def test_items_carry_the_golden_set_and_survive_the_trip_through_a_command_line():
    spec = model(recipes=["llmcompressor-w8a8"], profiles=["a10"], max_model_len=1024, validation={
        "golden_prompts": [{"prompt": "2+2=", "expect_substring": "4"}], "max_new_tokens": 4, "min_agreement": 0.75})
    (item,) = expand([spec]).items
    assert item.golden == {"prompts": [{"prompt": "2+2=", "expect_substring": "4"}],
                           "max_new_tokens": 4, "min_agreement": 0.75}
    assert parse_item(item.to_json()) == item  # what every job does with its --item argument
    assert json.loads(item.to_json())["max_model_len"] == 1024


def test_items_carry_the_recipes_thresholds_with_the_models_overrides():
    plain = model(recipes=["llmcompressor-w8a8", "llmcompressor-w4a16"], profiles=["a10"])
    items = {i.recipe: i for i in expand([plain]).items}
    for recipe, item in items.items():
        assert item.thresholds == dict(RECIPES[recipe].validation.__dict__)
    assert items["llmcompressor-w4a16"].thresholds["max_mean_kl"] >= items["llmcompressor-w8a8"].thresholds["max_mean_kl"]
    tuned = model(recipes=["llmcompressor-w8a8"], profiles=["a10"], validation={
        "golden_prompts": [{"prompt": "a"}], "thresholds": {"max_mean_kl": 0.2}})
    (item,) = expand([tuned]).items
    assert item.thresholds == {**dict(RECIPES["llmcompressor-w8a8"].validation.__dict__), "max_mean_kl": 0.2}
    assert parse_item(item.to_json()) == item


@pytest.mark.parametrize(("thresholds", "message"), [
    ({"max_mean_kl": 0}, "greater than 0"), ({"min_confident_top1": 1.5}, "less than or equal to 1"),
    ({"max_mean_kl": float("nan")}, "finite number"), ({"max_kl": 0.1}, "Extra inputs are not permitted")])
def test_threshold_overrides_are_checked(thresholds, message):
    with pytest.raises(ValueError, match=message):
        model(validation={"golden_prompts": [{"prompt": "a"}], "thresholds": thresholds})


def test_an_items_outcome_is_published_or_the_first_failed_step_with_its_error():
    done = dict.fromkeys(ITEM_STEPS, "success")
    assert item_outcome("m/r", done, manifest_uri="file:///s/manifest.json") == ItemOutcome(
        "m/r", PUBLISHED, "file:///s/manifest.json")
    failed = {"download": "success", "quantize": "success", "validate": "failed", "publish": "upstream_failed"}
    assert item_outcome("m/r", failed, error="agreement 33% (needs 50%)") == ItemOutcome(
        "m/r", FAILED, "validate: agreement 33% (needs 50%)")
    assert item_outcome("m/r", {"download": "failed"}).detail == "download: see the task log"
    assert item_outcome("m/r", {"download": "success", "quantize": None}).status == FAILED  # never finished


def test_the_report_lists_every_item_failures_first_with_counts():
    text = render_report("1 artefact version(s) to build, 1 skipped", [
        ItemOutcome("a/w8a8", PUBLISHED, "file:///a"), ItemOutcome("b/fp8", SKIPPED, "already published"),
        ItemOutcome("c/w8a8", FAILED, "validate: lacks 'Berlin'"), ItemOutcome("d", FAILED, "resolve: not found")])
    lines = text.splitlines()
    assert lines[0] == "model_refresh: 1 published, 1 skipped, 2 failed"
    assert [line.split()[:2] for line in lines[1:5]] == [
        ["failed", "c/w8a8"], ["failed", "d"], ["published", "a/w8a8"], ["skipped", "b/fp8"]]
    assert "validate: lacks 'Berlin'" in lines[1] and lines[5] == "plan:"


def test_runtime_kubernetes_without_a_shared_model_cache_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as refused:
        check_handoff("kubernetes", "")
    assert "LLMOPS_MODEL_CACHE_PVC" in str(refused.value) and "PersistentVolumeClaim" in str(refused.value)
    check_handoff("kubernetes", "llmops-model-cache")
    check_handoff("local", "")


def test_report_lines_are_wrapped_between_words_and_keep_the_whole_fix():
    fix = ("check repo_id in models.yaml, the model's endpoint / HF_ENDPOINT, and that the Hugging Face "
           "connection's token has access to it")
    detail = f"resolve: repo 'llmops-demo/no-such-repo' was not found on http://127.0.0.1:1 ; fix: {fix}"
    uri = "file:///" + "very-long-folder/" * 10 + "manifest.json"
    text = render_report("1 artefact version(s) to build, 0 skipped", [
        ItemOutcome("no-such-model", FAILED, detail), ItemOutcome("m/r", PUBLISHED, uri)], width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines if uri not in line)
    assert " ".join(text.split()).count(" ".join(fix.split())) == 1  # every word of the fix, in order
    words = set(text.split())
    assert set(detail.split()) <= words and uri in words  # no word cut in two, the long URI kept whole
    continuation = lines[2]
    assert continuation.startswith(" " * len("  failed    no-such-model  ")) and continuation.strip()
