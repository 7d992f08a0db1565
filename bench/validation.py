"""Calibrate refresh validation: a confusion matrix of good and bad candidates judged by the validate job's own
code (reference and candidate served by real vLLM on CPU, teacher-forced verdict, the recipes' thresholds).

    python bench/validation.py            # ~15-25 min on 2 idle cores: about 17 vLLM starts
    python bench/validation.py --work DIR # keep the models and references in DIR (reruns reuse them)

Models: the tiny trained Llama (llmops.demo.tiny_model) and a random Qwen2 whose byte-level BPE emits multi-byte
text (tests/support/validation_models.py). Good candidates, which must pass: the Llama served in float32 against
its bfloat16 reference, and W8A8, W4A16 and FP8-dynamic (llm-compressor) of both models. Bad ones, which must
fail: weights of another seed, the first layer zeroed, the W8A8 checkpoint's quantization scales x4, the
embedding rows permuted. A candidate vLLM on CPU cannot load (FP8) is listed as not servable and left out of the
counts. Prints `validation calibration: good passed G/G, bad failed B/B` and the margin between the classes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from _common import ROOT

SHA = "ca1b000000000000000000000000000000000000"
GOLDEN = {"golden_prompts": [{"prompt": "The capital of France is"}, {"prompt": "One, two, three,"},
                             {"prompt": "Kubernetes schedules"}, {"prompt": "東京は"}, {"prompt": "🙂"}],
          "max_new_tokens": 12}
RECIPES = ["llmcompressor-w8a8", "llmcompressor-w4a16", "llmcompressor-fp8-dynamic"]
BAD_RECIPE = "llmcompressor-w8a8"  # whose thresholds judge the bad candidates


def _python(name: str) -> str:
    sys.path.insert(0, str(ROOT / "include"))
    from llmops.settings import get_settings

    settings = get_settings()
    return settings.worker_python if name == "worker" else settings.serving_python


def _run(python: str, *args: str, timeout: float = 3600) -> str:
    env = {**__import__("os").environ, "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'tests'}"}
    done = subprocess.run([python, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"[bench] {' '.join(args[:3])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _items(name: str, work: Path, source: Path):
    from llmops.config import load_registry
    from llmops.config.schema import ModelSpec
    from llmops.refresh.plan import expand_targets

    spec = ModelSpec(name=name, repo_id=f"bench/{name}", max_model_len=512, validation=GOLDEN,
                     targets=[{"recipe": r, "gpu_profiles": ["h20"]} for r in RECIPES])
    plan = expand_targets([spec], {name: SHA}, load_registry().gpu_profiles, runtime="local", work_root=str(work))
    items = {i.recipe: i for i in plan.items}
    for item in items.values():
        link = Path(item.source_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(source, target_is_directory=True)
    return items


def build(work: Path) -> dict:
    """Models, quantized checkpoints and broken copies (worker environment); the judging plan."""
    worker = _python("worker")
    support = str(ROOT / "tests" / "support" / "validation_models.py")
    models = {"tiny-llama": work / "models" / "tiny-llama", "random-qwen2": work / "models" / "random-qwen2"}
    others = {"tiny-llama": work / "models" / "tiny-llama-seed1", "random-qwen2": work / "models" / "random-qwen2-seed1"}
    for seed, paths in ((0, models), (1, others)):
        if not (paths["tiny-llama"] / "config.json").is_file():
            _run(worker, "-m", "llmops.jobs.make_tiny_model", "--out", str(paths["tiny-llama"]), "--seed", str(seed))
        if not (paths["random-qwen2"] / "config.json").is_file():
            _run(worker, support, "qwen2", "--out", str(paths["random-qwen2"]), "--seed", str(seed))
    plan = {"models": []}
    for name, source in models.items():
        items = _items(name, work / "refresh", source)
        good, bad = [], []
        if name == "tiny-llama":
            good.append({"name": "same weights, float32 vs the bfloat16 reference", "path": str(source),
                         "dtype": "float32", "recipe": BAD_RECIPE})
        for recipe, item in items.items():
            print(f"[bench] quantize {name} {recipe}", flush=True)
            _run(worker, "-m", "llmops.jobs.quantize", "--item", item.to_json())
            good.append({"name": recipe, "path": item.checkpoint_dir, "recipe": recipe})
        w8a8 = items[BAD_RECIPE].checkpoint_dir
        broken = work / "broken" / name
        for kind, src in (("zero-layer", str(source)), ("scales-x4", w8a8), ("permute-embeddings", w8a8)):
            if not (broken / kind / "config.json").is_file():
                _run(worker, support, "break", "--kind", kind, "--src", src, "--out", str(broken / kind))
            bad.append({"name": kind, "path": str(broken / kind), "recipe": BAD_RECIPE})
        bad.insert(0, {"name": "weights of another seed", "path": str(others[name]), "recipe": BAD_RECIPE})
        plan["models"].append({"name": name, "item": items[BAD_RECIPE].to_json(), "good": good, "bad": bad})
    return plan


def judge(plan_path: Path, out_path: Path) -> None:
    """Serving environment: each model's reference once, then every candidate, with the validate job's code."""
    from llmops.config.recipes import RECIPES as CATALOGUE
    from llmops.jobs.validate import judge_candidate, record_reference, runtime_for, vocab_size
    from llmops.validate.errors import ValidationFailed
    from llmops.validate.golden import GoldenSet
    from llmops.validate.reference_store import obtain_reference, reference_key

    plan = json.loads(plan_path.read_text())
    # a rerun (same --work) resumes: candidates judged before are not served again
    results = json.loads(out_path.read_text()) if out_path.is_file() else []
    done = {(r["model"], r["class"], r["candidate"]) for r in results}
    for model in plan["models"]:
        from llmops.jobs._cli import parse_item

        item = parse_item(model["item"])
        golden = GoldenSet.from_dict(item.golden)
        runtime = runtime_for(item)
        key = reference_key(repo_id=item.repo_id, sha=item.sha, runtime=runtime.name,
                            runtime_versions=runtime.versions, flags=runtime.flags, golden=item.golden,
                            top_k=runtime.top_k)
        started = time.monotonic()
        reference, _ = obtain_reference(Path(item.reference_dir), key,
                                        partial(record_reference, runtime, Path(item.source_dir), golden))
        print(f"[bench] {model['name']}: reference ready ({time.monotonic() - started:.0f} s)", flush=True)
        for kind in ("good", "bad"):
            for candidate in model[kind]:
                if (model["name"], kind, candidate["name"]) in done:
                    continue
                started = time.monotonic()
                row = {"model": model["name"], "class": kind, "candidate": candidate["name"],
                       "recipe": candidate["recipe"]}
                thresholds = CATALOGUE[candidate["recipe"]].validation
                served = runtime_for(item, dtype=candidate.get("dtype"))
                try:
                    result, free = judge_candidate(served, Path(candidate["path"]), golden, reference["prompts"],
                                                   thresholds, vocab=vocab_size(Path(item.source_dir)))
                except ValidationFailed as exc:
                    row.update(servable=False, reason=exc.what.splitlines()[0])
                else:
                    row.update(servable=True, passed=result.passed, mean_kl=result.mean_kl, max_kl=result.max_kl,
                               relative_kl=result.relative_kl,
                               confident_top1=result.confident_top1, confident=result.confident_positions,
                               positions=result.positions, greedy_agreement=free.agreement,
                               max_mean_kl=thresholds.max_mean_kl, min_confident_top1=thresholds.min_confident_top1)
                row["seconds"] = round(time.monotonic() - started, 1)
                print(f"[bench] {json.dumps(row)}", flush=True)
                results.append(row)
                out_path.write_text(json.dumps(results, indent=1))
    out_path.write_text(json.dumps(results, indent=1))


def verdicts(results: list[dict]) -> list[dict]:
    """Each served candidate's verdict under the catalogue's current thresholds, from its recorded numbers (the
    bench golden set has no expectations, so the numbers alone decide, as in llmops.validate.teacher_forced)."""
    from llmops.config.recipes import RECIPES as CATALOGUE

    for row in results:
        if row["servable"]:
            t = CATALOGUE[row["recipe"]].validation
            relative = row.get("relative_kl")
            row.update(max_mean_kl=t.max_mean_kl, min_confident_top1=t.min_confident_top1,
                       max_relative_kl=t.max_relative_kl,
                       passed=row["mean_kl"] <= t.max_mean_kl and row["positions"] > 0
                       and (relative is None or relative <= t.max_relative_kl)
                       and (row["confident_top1"] is None or row["confident_top1"] >= t.min_confident_top1))
    return results


def _budget(row: dict) -> float:
    """How much of its tightest KL bound a candidate uses (1.0: exactly at a threshold)."""
    used = row["mean_kl"] / row["max_mean_kl"]
    if row.get("relative_kl") is not None:
        used = max(used, row["relative_kl"] / row["max_relative_kl"])
    return used


def report(results: list[dict]) -> None:
    served = [r for r in results if r["servable"]]
    good = [r for r in served if r["class"] == "good"]
    bad = [r for r in served if r["class"] == "bad"]
    print(f"\n{'model':<13} {'class':<5} {'candidate':<48} {'mean KL':>9} {'rel. KL':>8} {'top-1':>6} {'greedy':>6}"
          "  verdict")
    for r in results:
        if not r["servable"]:
            print(f"{r['model']:<13} {r['class']:<5} {r['candidate']:<48} not servable by vLLM on CPU, not counted: "
                  f"{r['reason'][:100]}")
            continue
        top1 = "-" if r["confident_top1"] is None else f"{r['confident_top1']:.0%}"
        relative = "-" if r.get("relative_kl") is None else f"{r['relative_kl']:.1%}"
        right = r["passed"] == (r["class"] == "good")
        print(f"{r['model']:<13} {r['class']:<5} {r['candidate']:<48} {r['mean_kl']:>9.6f} {relative:>8} {top1:>6} "
              f"{r['greedy_agreement']:>6.0%}  {'PASS' if r['passed'] else 'FAIL'}{'' if right else '  <- WRONG'}")
    worst_good = max((_budget(r) for r in good), default=float("nan"))
    best_bad = min((_budget(r) for r in bad), default=float("nan"))
    print(f"\nmargin: the worst good candidate uses {worst_good:.0%} of its tightest KL bound (absolute or relative), "
          f"the best bad one {best_bad:.0%}: the classes are x{best_bad / worst_good:.1f} apart")
    print(f"validation calibration: good passed {sum(r['passed'] for r in good)}/{len(good)}, "
          f"bad failed {sum(not r['passed'] for r in bad)}/{len(bad)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="keep models and references here (reused)")
    parser.add_argument("--judge", nargs=2, type=Path, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.judge:
        judge(*args.judge)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-validation-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        plan = build(work)
        (work / "plan.json").write_text(json.dumps(plan, indent=1))
        print(f"[bench] models and candidates ready ({time.monotonic() - started:.0f} s); judging with real vLLM",
              flush=True)
        serving = _python("serving")
        done = subprocess.run([serving, str(Path(__file__).resolve()), "--judge", str(work / "plan.json"),
                               str(work / "results.json")], env={**__import__("os").environ,
                              "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'tests'}"})
        if done.returncode != 0:
            sys.exit(f"[bench] judging failed (exit {done.returncode})")
        results = verdicts(json.loads((work / "results.json").read_text()))
        report(results)
        good = [r for r in results if r["servable"] and r["class"] == "good"]
        bad = [r for r in results if r["servable"] and r["class"] == "bad"]
        return 0 if all(r["passed"] for r in good) and not any(r["passed"] for r in bad) else 1


if __name__ == "__main__":
    sys.exit(main())
