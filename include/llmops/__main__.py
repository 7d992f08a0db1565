"""python -m llmops COMMAND: the project's command line.

    validate [--config-dir DIR] [--only FILE ...]   check the registry files a user edited
    verify MANIFEST_URI [--public-key KEY ...] [--deployment NAME]
                                                    check a published version's signature and files
    keygen DIR                                      create a signing key pair once (DIR/llmops-signing.pem, .pub)

validate: every problem of every file is reported in one pass, entries named by their `name`. `--only` checks
just the named files (e.g. `--only knowledge_bases.yaml` for a team that owns only that file).

verify: the manifest's signature against the given public keys (default: those of the deployment named, or of
every deployment in deployments.yaml), then every file's size and checksum in the store against the manifest.
Prints what it verified; exits 1 unless the signature verifies and every file matches (an unsigned version
fails too), 2 when the version cannot be read. file://, s3:// and oss:// URIs; store credentials from AWS_* / OSS_* variables."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from llmops.config.loader import REGISTRY_FILES, check_registry, load_registry
from llmops.errors import LlmopsError


def _validate(args) -> int:
    only = [Path(name).name for name in args.only] if args.only else None
    registry, errors = check_registry(args.config_dir, only=only)
    if registry is not None and (not only or "knowledge_bases.yaml" in only):
        errors += offline_kb_errors(registry)
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


def _trusted_keys(args):
    """(keys, where they came from) for `verify`."""
    from llmops.artefacts.signing import load_public_keys, public_keys_from_text

    if args.public_key:
        return load_public_keys(args.public_key, Path.cwd()), "--public-key"
    registry = load_registry(args.config_dir)
    deployments = [registry.deployment(args.deployment)] if args.deployment else list(registry.deployments.values())
    keys, seen = [], set()
    for deployment in deployments:
        for index, pem in enumerate(deployment.signing.public_keys):
            for key in public_keys_from_text(pem, f"deployments[{deployment.name}].signing.public_keys[{index}]"):
                if key.key_id not in seen:
                    seen.add(key.key_id)
                    keys.append(key)
    where = f"deployment {args.deployment}" if args.deployment else f"every deployment in {registry.config_dir}"
    return keys, where


def _verify(args) -> int:
    from llmops.artefacts import open_store, split_manifest_uri
    from llmops.artefacts.credentials import credentials_from_env

    try:
        keys, where = _trusted_keys(args)
        root, prefix = split_manifest_uri(args.manifest_uri)
        store = open_store(root, credentials=credentials_from_env(root))
        manifest = store.read_manifest(prefix)
        if manifest is None:
            print(f"{args.manifest_uri}: no manifest there (not a published version)", file=sys.stderr)
            return 2
        signature = store.verify_signature(manifest, keys)
        stored = store.verify_stored(manifest)
    except LlmopsError as exc:
        print(f"cannot verify {args.manifest_uri}: {exc}", file=sys.stderr)
        return 2
    built = manifest.built_by
    print(f"{manifest.uri}")
    print(f"  manifest   sha256 {signature.manifest_sha256}")
    revision = f" ({manifest.source_revision})" if manifest.source_revision else ""
    print(f"             {manifest.model} from {manifest.source_repo}@{manifest.source_sha}{revision}, "
          f"recipe {manifest.recipe}, {manifest.serving_runtime} {manifest.quantization_format}")
    run = (f"by Airflow run {built.dag_id}/{built.run_id}/{built.task_id}" if built.run_id
           else "outside Airflow (no run recorded)")
    print(f"             built {manifest.created_at.isoformat(timespec='seconds')} {run}")
    print(f"  keys       {len(keys)} trusted, from {where}: "
          f"{', '.join(k.key_id[:16] for k in keys) or 'none'}")
    if signature.ok:
        print(f"  signature  OK: key {signature.key_id} ({signature.key_source})")
        print(f"             {signature.signature_uri}")
    else:
        print(f"  signature  {signature.status.upper()}: {signature.detail}")
        for change in signature.changed:
            print(f"               changed: {change}")
    print(f"  files      {'OK' if stored.ok else 'MISMATCH'}: {stored.verified}")
    for entry in manifest.files:
        print(f"               {entry.sha256[:16]}  {entry.size:>12,d}  {entry.path}")
    for mismatch in stored.mismatches:
        print(f"             mismatch: {mismatch}")
    if stored.unverifiable:
        print(f"             {stored.unverifiable}")
    failed = [what for what, ok in (("signature", signature.ok), ("files", stored.ok)) if not ok]
    print(f"FAILED ({' and '.join(failed)}): {manifest.uri}" if failed else f"verified: {manifest.uri}")
    return 1 if failed else 0


def _keygen(args) -> int:
    from llmops.artefacts.signing import SigningKey, generate_key_pair

    private, public, created = generate_key_pair(args.directory)
    key_id = SigningKey.from_pem(private.read_bytes(), str(private)).key_id
    print(f"{'created' if created else 'kept the existing'} signing key {key_id}")
    print(f"  private  {private}  (the password of Connection llmops_signing; never share it)")
    print(f"  public   {public}  (list it under signing.public_keys in deployments.yaml)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmops")
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="validate include/config/*.yaml and their cross-references")
    validate.add_argument("--config-dir", type=Path, default=None)
    validate.add_argument("--only", action="append", metavar="FILE", default=None,
                          help=f"check only this file (repeatable): one of {', '.join(REGISTRY_FILES)}")
    verify = sub.add_parser("verify", help="verify a published version's signature and files")
    verify.add_argument("manifest_uri", metavar="MANIFEST_URI")
    verify.add_argument("--public-key", action="append", default=None, metavar="KEY",
                        help="a trusted public key: a .pub file or the PEM (repeatable; default: deployments.yaml)")
    verify.add_argument("--deployment", default=None, help="trust this deployment's public keys (default: every deployment's)")
    verify.add_argument("--config-dir", type=Path, default=None)
    keygen = sub.add_parser("keygen", help="create a signing key pair once (ECDSA P-256, PEM)")
    keygen.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    return {"validate": _validate, "verify": _verify, "keygen": _keygen}[args.command](args)


def offline_kb_errors(registry) -> list:
    """The knowledge bases' embedders, checked offline (llmops.kb.embedders.offline_problems): a model name that
    no run could load, a declared dimension the model's files contradict."""
    from llmops.errors import ConfigError
    from llmops.kb.embedders import offline_problems

    problems = [problem for kb in registry.knowledge_bases.values() for problem in offline_problems(kb)]
    return [ConfigError(str(registry.config_dir / "knowledge_bases.yaml"), problems)] if problems else []


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... verify URI | head` ends quietly, as a Unix tool does
    sys.exit(main())
