"""python -m llmops.jobs.make_tiny_model [--seed N] [--train-steps N] [--facts FILE]: the demo/test model.

Prints (last line, JSON) the folder of the accepted build, from the machine's cache
(`$LLMOPS_HOME/cache/demo-models`, see llmops.demo.tiny_model) or built now. Every caller (make ui, make demo,
the tests, the benches) goes through here, so the model is trained at most once per machine.

--facts: a JSON list of sentences to train on instead of the built-in English ones (e.g. CJK text, whose
characters the tiny byte-level vocabulary splits into several tokens); such a build is not the demo model
and its golden prompts are not checked. --train-steps 0: an untrained model (fails every golden prompt).
--out DIR: build into DIR, bypassing the cache.
--check DIR: check an existing build's golden answers and margins (float32 and bfloat16), print them."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from llmops.jobs._cli import EXIT_PERMANENT, emit_result, setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=None, help="minimum training steps (default 200)")
    parser.add_argument("--max-train-steps", type=int, default=None,
                        help="training goes on until the model is accepted, at most this long (default 1500)")
    parser.add_argument("--facts", type=Path, default=None, help="JSON list of training sentences")
    parser.add_argument("--cache", type=Path, default=None,
                        help="the machine's cache of builds (default $LLMOPS_HOME/cache/demo-models)")
    parser.add_argument("--out", type=Path, default=None, help="build here instead of the cache")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch threads (default 1: as fast for this tiny model, and on a busy 2-core machine "
                             "(load 28) 600 steps took 107 s on one thread and over 20 min on two)")
    parser.add_argument("--check", type=Path, default=None, help="only check the build in this folder")
    args = parser.parse_args(argv)
    facts = json.loads(args.facts.read_text(encoding="utf-8")) if args.facts else None
    setup_logging()
    import torch

    from llmops.demo import tiny_model as tm

    torch.set_num_threads(args.torch_threads)
    started = time.monotonic()
    if args.check:
        emit_result(check(args.check))
        return
    options = {"seed": args.seed, "train_steps": tm.TRAIN_STEPS if args.train_steps is None else args.train_steps,
               "max_train_steps": args.max_train_steps or tm.MAX_TRAIN_STEPS, "facts": facts}

    def progress(message: str) -> None:
        with contextlib.suppress(OSError):  # whoever read our stderr went away: the build others wait for goes on
            print(f"[demo model] {message}", file=sys.stderr, flush=True)

    try:
        if args.out:
            path, built = tm.build_tiny_model(args.out, progress=progress, **options), True
        else:
            path, built = tm.ensure_demo_model(root=args.cache, progress=progress, **options)
    except tm.DemoModelError as exc:  # permanent: the same inputs give the same refusal
        print(f"[demo model] {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PERMANENT)
    accepted = json.loads((path / tm.ACCEPTED).read_text())
    emit_result({"path": str(path), "built": built, "seconds": round(time.monotonic() - started, 1), **accepted})


def check(model_dir: Path) -> dict:
    """The golden answers and margins of an existing build, checked here (this process's thread count)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from llmops.demo import tiny_model as tm

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    problems, margins = tm.check_answers(model, tokenizer, tm.golden_expectations(tm.FACTS))
    return {"problems": problems, "margins": margins, "min_margin_required": tm.MIN_MARGIN,
            "torch_threads": torch.get_num_threads()}


if __name__ == "__main__":
    main()
