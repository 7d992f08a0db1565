"""A file-store publish SIGKILLed in the middle of copying a file leaves nothing a reader could mistake for data,
and the next attempt cleans up after it. Real processes: the publisher is a child process killed with SIGKILL
while its copy is half done (it stops itself there through the progress callback, so the kill always lands
mid-file, whatever the machine's speed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from artefact_helpers import make_manifest

from llmops.artefacts.local import STAGING, FileStore
from llmops.hashing import CHUNK

PUBLISHER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from artefact_helpers import make_manifest
    from llmops.artefacts.local import FileStore

    def halfway(path, done, size):
        if done < size:
            print("copying", flush=True)
            time.sleep(600)

    source = Path(sys.argv[2])
    manifest = make_manifest(source)
    FileStore(Path(sys.argv[1])).publish(source, manifest.prefix, manifest, progress=halfway)
""")


def test_a_killed_publish_leaves_nothing_in_the_version_and_the_retry_cleans_it(tmp_path):
    root, source = tmp_path / "store", tmp_path / "checkpoint"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}')
    (source / "model.safetensors").write_bytes(os.urandom(3 * CHUNK))
    helpers = os.path.dirname(__file__)
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(root), str(source), helpers],
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert publisher.stdout.readline().strip() == "copying"
        os.kill(publisher.pid, signal.SIGKILL)
        publisher.wait(timeout=60)
    finally:
        publisher.kill()
    manifest = make_manifest(source)
    store = FileStore(root)
    version = root / manifest.prefix
    partial = [p for p in (root / STAGING).rglob("*") if p.is_file() and p.name != "lock"]
    assert partial and partial[0].stat().st_size >= CHUNK, "the killed attempt had copied part of the file"
    assert store.read_manifest(manifest.prefix) is None
    big = [p for p in version.rglob("*") if p.is_file() and p.stat().st_size >= CHUNK] if version.exists() else []
    assert big == [], f"a partial copy is inside the version's folder: {big}"

    uri = store.publish(source, manifest.prefix, manifest)  # the retry
    assert uri.endswith(f"{manifest.prefix}/manifest.json")
    assert store.verify_stored(store.read_manifest(manifest.prefix)).ok
    left = [p for p in (root / STAGING).rglob("*") if p.is_file() and p.name != "lock" and p.stat().st_size]
    assert left == [], f"the retry left the killed attempt's partial copy: {left}"
    files = sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file())
    assert files == sorted(["manifest.json", *(f"{e.key}" for e in store.read_manifest(manifest.prefix).files)])
