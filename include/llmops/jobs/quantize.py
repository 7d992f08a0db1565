"""python -m llmops.jobs.quantize --item JSON: quantize one planned artefact version (worker environment).

The item comes from llmops.refresh (the plan task). Reads the downloaded snapshot at item.source_dir,
writes the checkpoint to item.work_dir/checkpoint with llmops_quantize.json (recipe, tool versions, source).
Rerunning reuses a finished checkpoint.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from llmops.errors import LlmopsError
from llmops.jobs._cli import emit_result, fail, fail_known, item_parser, parse_item, setup_logging

log = logging.getLogger("llmops.jobs.quantize")


def main(argv: list[str] | None = None) -> int:
    parser = item_parser(__doc__)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        item = parse_item(args.item)
    except LlmopsError as exc:
        return fail(exc, log)
    from llmops.hub.policy import weight_format
    from llmops.quantize.build import quantize
    from llmops.validate.golden import GoldenSet

    try:
        # A verdict belongs to the checkpoint it was made on: a (re)quantization invalidates the old one.
        Path(item.validation_file).unlink(missing_ok=True)
        metadata = quantize(
            item.recipe, Path(item.source_dir), Path(item.checkpoint_dir), golden=GoldenSet.from_dict(item.golden),
            trust_remote_code=item.trust_remote_code, max_model_len=item.max_model_len,
            tensor_parallel_size=item.tensor_parallel_size,
            source_meta={"repo_id": item.repo_id, "revision": item.revision, "sha": item.sha,
                         "weight_format": weight_format([p.name for p in Path(item.source_dir).glob("*")])},
        )
    except (LlmopsError, OSError) as exc:  # a domain error, or a full or read-only work directory: one line, not a traceback
        return fail_known(exc, log, f"quantize into {item.checkpoint_dir}")
    emit_result({"model": item.model, "recipe": item.artefact_recipe, "checkpoint": item.checkpoint_dir,
                 "scheme": metadata["scheme"], "seconds": metadata.get("seconds", 0.0)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
