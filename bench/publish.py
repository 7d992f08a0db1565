"""Benchmark the publish path against plain boto3 on the same SeaweedFS, and its peak memory.

    python bench/publish.py                       # ~1-2 min: 256 MiB throughput, 256 vs 1024 MiB memory
    python bench/publish.py --size-mib 1024 --mem-sizes-mib 1024,4096

1. Throughput: `store.publish()` (upload, verify, manifest) of a checkpoint directory vs
   `boto3.client.upload_file` of the same files (boto3's default TransferConfig: 8 MiB parts,
   10 threads), alternating, fresh keys each run. Ratio = baseline time / ours (target >= 0.9).
2. Memory: a child process publishes one file of each size; its peak RSS (wait4's ru_maxrss) must
   not grow with the file (target: within 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from _common import ROOT, MiB, alternate, median, write_incompressible
from llmops.artefacts import Manifest, open_store
from support.seaweed import make_bucket, seaweed_server

BUCKET = "bench"
SHA = "0" * 40
FIELDS = dict(model="bench", source_repo="bench/model", source_sha=SHA, recipe="bench",
              serving_runtime="vllm", quantization_format="none", min_compute_capability=7.0, max_model_len=512)

CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from llmops.artefacts import Manifest, open_store
args = json.loads(sys.argv[1])
store = open_store(args["uri"], credentials=args["credentials"])
manifest = Manifest.model_validate_json(Path(args["manifest"]).read_text())
store.publish(Path(args["dir"]), manifest.prefix, manifest)
"""


def make_checkpoint(directory: Path, size: int) -> Path:
    """A checkpoint-shaped directory: two shards holding `size` bytes plus the small JSON files."""
    directory.mkdir(parents=True, exist_ok=True)
    write_incompressible(directory / "model-00001-of-00002.safetensors", size // 2)
    write_incompressible(directory / "model-00002-of-00002.safetensors", size - size // 2)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (directory / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {}}}))
    return directory


def peak_rss_publishing(server, work: Path, size: int) -> int:
    data = work / f"mem-{size}"
    write_incompressible(data / "model.safetensors", size)
    manifest = Manifest.for_directory(data, **FIELDS)
    (work / "manifest.json").write_text(manifest.to_json())
    args = {"uri": f"s3://{BUCKET}/mem-{uuid.uuid4().hex[:8]}", "credentials": server.credentials,
            "manifest": str(work / "manifest.json"), "dir": str(data)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args), str(ROOT / "include")])
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"publishing {size} bytes failed in the child (status {status})")
    (data / "model.safetensors").unlink()
    return usage.ru_maxrss * 1024  # Linux reports KiB


def throughput(server, work: Path, size: int, runs: int) -> None:
    client = server.client()
    checkpoint = make_checkpoint(work / "checkpoint", size)
    manifest = Manifest.for_directory(checkpoint, **FIELDS)
    total = manifest.total_size

    def baseline(run: int) -> None:
        for entry in manifest.files:
            client.upload_file(str(checkpoint / entry.path), BUCKET, f"baseline-{run}/{entry.path}")

    def ours(run: int) -> None:
        store = open_store(f"s3://{BUCKET}/ours-{run}", credentials=server.credentials)
        store.publish(checkpoint, manifest.prefix, manifest)

    baseline(-1)  # warm up the server (volume allocation) before timing anything
    times = alternate(runs, boto3_upload_file=baseline, llmops_publish=ours)
    base, mine = median(times["boto3_upload_file"]), median(times["llmops_publish"])
    print(f"publish throughput, {total / MiB:.0f} MiB in {len(manifest.files)} files, median of {runs}:")
    print(f"  boto3 upload_file : {base:6.2f} s  {total / MiB / base:7.1f} MiB/s  runs {times['boto3_upload_file']}")
    print(f"  llmops publish    : {mine:6.2f} s  {total / MiB / mine:7.1f} MiB/s  runs {times['llmops_publish']}")
    print(f"  ratio (ours/baseline throughput) = {base / mine:.2f}  (target >= 0.90)")
    shutil.rmtree(checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256, help="checkpoint size for the throughput test")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs per contender")
    parser.add_argument("--mem-sizes-mib", default="256,1024",
                        help="two file sizes for the memory test (the issue asks for 1024,4096)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp, seaweed_server(Path(tmp) / "seaweed") as server:
        work = Path(tmp)
        make_bucket(server, BUCKET)
        if not args.skip_throughput:
            throughput(server, work, args.size_mib * MiB, args.runs)
        if not args.skip_memory:
            small, large = (int(s) for s in args.mem_sizes_mib.split(","))
            peaks = {size: peak_rss_publishing(server, work, size * MiB) for size in (small, large)}
            ratio = peaks[large] / peaks[small]
            print("peak RSS of a child process publishing one file:")
            for size, peak in peaks.items():
                print(f"  {size:6d} MiB file : {peak / MiB:7.1f} MiB")
            print(f"  ratio ({large} MiB / {small} MiB) = {ratio:.3f}  (target within 10%: 0.90-1.10)")


if __name__ == "__main__":
    main()
