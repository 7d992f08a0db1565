"""python -m llmops.jobs.make_tiny_model --out DIR [--seed N]: build the demo/test model."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from llmops.jobs._cli import emit_result, setup_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=600)
    args = parser.parse_args(argv)
    setup_logging()
    from llmops.demo.tiny_model import build_tiny_model

    started = time.monotonic()
    out = build_tiny_model(args.out, seed=args.seed, train_steps=args.train_steps)
    emit_result({"path": str(out), "seconds": round(time.monotonic() - started, 1)})


if __name__ == "__main__":
    main()
