"""Benchmark download + verify (llmops.hub.download_snapshot) against a plain snapshot_download.

    python bench/download.py                  # ~1 min: a 128 MiB two-shard model from a local olah mirror
    python bench/download.py --size-mib 1024

Both fetch the same repo at the same sha from the same olah mirror into fresh directories,
alternating. Ours adds the file listing, the weight-policy check, the config pre-check and the
sha256 / git-blob verification of every file. Ratio = baseline time / ours (target >= 0.85).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from huggingface_hub import snapshot_download  # noqa: E402

from _common import MiB, alternate, median, write_incompressible  # noqa: E402
from llmops.config.schema import ModelSpec  # noqa: E402
from llmops.hub import download_snapshot  # noqa: E402
from support.olah import olah_server, publish_repo  # noqa: E402

REPO = "bench/model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=128, help="total weight size (two shards)")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs per contender")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        work = Path(tmp)
        size = args.size_mib * MiB
        source = work / "source"
        write_incompressible(source / "model-00001-of-00002.safetensors", size // 2)
        write_incompressible(source / "model-00002-of-00002.safetensors", size - size // 2)
        (source / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (source / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {}}}))
        sha = publish_repo(work / "mirrors", REPO, source)
        shutil.rmtree(source)

        with olah_server(work / "mirrors", work_dir=work / "olah") as endpoint:
            spec = ModelSpec(name="bench", repo_id=REPO, revision=sha, endpoint=endpoint,
                             targets=[{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}],
                             validation={"golden_prompts": [{"prompt": "Hello"}]})

            def baseline(run: int) -> None:
                out = work / f"baseline-{run}"
                snapshot_download(REPO, revision=sha, local_dir=out, endpoint=endpoint,
                                  allow_patterns=spec.allow_patterns, ignore_patterns=spec.ignore_patterns or None)
                shutil.rmtree(out)

            def ours(run: int) -> None:
                out = work / f"ours-{run}"
                download_snapshot(spec, sha, out)
                shutil.rmtree(out)

            baseline(-1)  # olah's first read of each blob warms the page cache for both contenders
            times = alternate(args.runs, snapshot_download=baseline, download_and_verify=ours)

    base, mine = median(times["snapshot_download"]), median(times["download_and_verify"])
    print(f"download from olah, {args.size_mib} MiB in 2 shards + 2 JSON files, median of {args.runs}:")
    print(f"  snapshot_download      : {base:6.2f} s  {args.size_mib / base:7.1f} MiB/s  runs {times['snapshot_download']}")
    print(f"  download_snapshot+verify: {mine:6.2f} s  {args.size_mib / mine:7.1f} MiB/s  runs {times['download_and_verify']}")
    print(f"  ratio (ours/baseline throughput) = {base / mine:.2f}  (target >= 0.85)")


if __name__ == "__main__":
    main()
