"""python -m llmops validate [--config-dir DIR] [--only FILE ...]: check the registry files a user edited.

Every problem of every file is reported in one pass, entries named by their `name`. `--only` checks just
the named files (e.g. `--only knowledge_bases.yaml` for a team that owns only that file)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmops.config.loader import REGISTRY_FILES, check_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmops")
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="validate include/config/*.yaml and their cross-references")
    validate.add_argument("--config-dir", type=Path, default=None)
    validate.add_argument("--only", action="append", metavar="FILE", default=None,
                          help=f"check only this file (repeatable): one of {', '.join(REGISTRY_FILES)}")
    args = parser.parse_args(argv)

    only = [Path(name).name for name in args.only] if args.only else None
    registry, errors = check_registry(args.config_dir, only=only)
    if errors:
        total = sum(len(e.problems) for e in errors)
        print(f"invalid registry: {total} problem(s) in {len(errors)} file(s)", file=sys.stderr)
        for error in errors:
            print(error, file=sys.stderr)
        return 1
    if only:
        print(f"{', '.join(only)} OK")
        return 0
    assert registry is not None
    print(f"registry OK ({registry.config_dir}): {len(registry.models)} model(s), "
          f"{len(registry.gpu_profiles)} GPU profile(s), {len(registry.deployments)} deployment(s), "
          f"{len(registry.knowledge_bases)} knowledge base(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
