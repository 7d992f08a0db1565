"""python -m llmops.jobs.publish --item JSON: publish a validated checkpoint under its immutable prefix.

Runs where the checkpoint is (the worker environment locally, a pod with the model-cache volume on
Kubernetes). Refuses a checkpoint whose validation failed or never ran. The manifest records the
source, recipe, tool versions, serving runtime, format, minimum compute capability, the GPU profiles
it was built for, the validation verdict (or why it was skipped) and the Airflow run; it is written
last by the store. Publishing the same content again is a no-op.

Signing: with LLMOPS_SIGNING_PRIVATE_KEY set (the step factory passes Connection `llmops_signing`'s password
to this step only; in pods the Secret `llmops-llmops-signing`), the manifest is signed (llmops.artefacts.signing)
and the signature written beside it just before it. Without a key the version is published unsigned, with a
warning: deployments with signing.require_signature refuse it.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from llmops.errors import LlmopsError
from llmops.jobs._cli import emit_result, fail, fail_known, item_parser, parse_item, setup_logging
from llmops.jobs.errors import NotValidated
from llmops.refresh.plan import WorkItem

log = logging.getLogger("llmops.jobs.publish")

# Timings differ between two builds of the same version; the manifest records what the version is.
_VOLATILE = ("seconds",)


def build_manifest(item: WorkItem, built_by: dict):
    from llmops.artefacts.manifest import Manifest
    from llmops.quantize.build import load_metadata

    checkpoint = Path(item.checkpoint_dir)
    metadata = load_metadata(checkpoint)
    if metadata is None:
        raise NotValidated(f"{checkpoint} holds no quantized checkpoint (no llmops_quantize.json)",
                           fix="run the quantize step for this item first")
    validation_path = Path(item.validation_file)
    if not validation_path.is_file():
        raise NotValidated(f"{item.prefix}: no validation record at {validation_path}",
                           fix="run the validate step for this item first")
    validation = {k: v for k, v in json.loads(validation_path.read_text()).items() if k not in _VOLATILE}
    if validation.get("status") not in ("passed", "skipped"):
        raise NotValidated(f"{item.prefix}: validation {validation.get('status')} "
                           f"({'; '.join(validation.get('problems') or []) or 'no verdict recorded'})",
                           fix="see the validate task's log; a failed checkpoint is never published")
    return Manifest.for_directory(
        checkpoint,
        model=item.model, source_repo=item.repo_id, source_sha=item.sha, source_revision=item.revision,
        recipe=item.artefact_recipe, recipe_params=metadata.get("params", {}),
        tool_versions={**metadata.get("tool_versions", {}), **validation.get("runtime_versions", {})},
        serving_runtime=item.runtime, quantization_format=metadata["scheme"],
        min_compute_capability=item.min_compute_capability, tensor_parallel_size=item.tensor_parallel_size,
        max_model_len=item.max_model_len, built_by=built_by,
        gpu_profiles=item.gpu_profiles, quantization=metadata.get("quantization", {}), validation=validation,
        # how the source was trusted: its weights' format (pickle only with allow_pickle) and remote code
        source_weight_format=metadata.get("source", {}).get("weight_format", "unknown"),
        trust_remote_code=bool(metadata.get("trust_remote_code", item.trust_remote_code)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = item_parser(__doc__)
    parser.add_argument("--dag-id", default=None)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--task-id", default=None)
    parser.add_argument("--store-uri", default=None, help="default: LLMOPS_STORE_URI / settings")
    args = parser.parse_args(argv)
    setup_logging()
    from llmops.artefacts import open_store
    from llmops.artefacts.credentials import access_error, credentials_from_env
    from llmops.artefacts.signing import signing_key_from_env
    from llmops.settings import SIGNING_KEY_ENV, get_settings

    store_uri = args.store_uri or get_settings().store_uri
    try:
        signer = signing_key_from_env()  # a bad key fails here, before anything is sent
        if signer is None:
            log.warning("no signing key (%s, from Connection llmops_signing): publishing unsigned; deployments with "
                        "signing.require_signature refuse unsigned versions", SIGNING_KEY_ENV)
        item = parse_item(args.item)
        manifest = build_manifest(item, {"dag_id": args.dag_id, "run_id": args.run_id, "task_id": args.task_id})
        # The step factory hands over the llmops_artefacts credentials as AWS_* / OSS_* variables.
        store = open_store(store_uri, credentials=credentials_from_env(store_uri))
        uri = store.publish(Path(item.checkpoint_dir), item.prefix, manifest, signer=signer)
    except (LlmopsError, OSError) as exc:  # a domain error, or a full or read-only store: one line, not a traceback
        return fail_known(exc, log, f"publish to {store_uri}")
    except Exception as exc:
        denied = access_error(exc, store_uri)
        if denied is None:
            raise  # a crash or a network error: the traceback goes to the log, the step retries
        return fail(denied, log)
    published = store.read_manifest(item.prefix)
    log.info("published %s (%d files, %.1f MiB)", uri, len(published.files), published.total_size / 2**20)
    emit_result({"manifest_uri": uri, "prefix": item.prefix, "asset_extra": published.asset_extra(),
                 "validation": published.model_extra.get("validation", {}).get("status")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
