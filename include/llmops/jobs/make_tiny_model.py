"""python -m llmops.jobs.make_tiny_model --out DIR [--seed N] [--facts FILE]: build the demo/test model.

--facts: a JSON list of sentences to train on instead of the built-in English ones (e.g. CJK text, whose
characters the tiny byte-level vocabulary splits into several tokens)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llmops.jobs._cli import emit_result, setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--facts", type=Path, default=None, help="JSON list of training sentences")
    args = parser.parse_args(argv)
    facts = json.loads(args.facts.read_text(encoding="utf-8")) if args.facts else None
    setup_logging()
    from llmops.demo.tiny_model import build_tiny_model

    started = time.monotonic()
    out = build_tiny_model(args.out, seed=args.seed, train_steps=args.train_steps, facts=facts)
    emit_result({"path": str(out), "seconds": round(time.monotonic() - started, 1)})


if __name__ == "__main__":
    main()
