"""python -m llmops validate [--config-dir DIR]: check the registry files a user edited."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmops.config import load_registry
from llmops.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmops")
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="validate include/config/*.yaml and their cross-references")
    validate.add_argument("--config-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    try:
        registry = load_registry(args.config_dir)
    except ConfigError as exc:
        print(f"invalid registry\n{exc}", file=sys.stderr)
        return 1
    print(f"registry OK ({registry.config_dir}): {len(registry.models)} model(s), "
          f"{len(registry.gpu_profiles)} GPU profile(s), {len(registry.deployments)} deployment(s), "
          f"{len(registry.knowledge_bases)} knowledge base(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
