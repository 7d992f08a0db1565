"""Two publishers of one version at the same moment, on every backend: one content wins, the other is told.

Each race starts two real threads (each with its own store object and client) at a barrier; random pauses
after each file vary the interleaving. Whatever happens, the published version must verify byte for byte
against the winner's files, the loser must get ImmutableArtefactError (different bytes) or the URI
(identical bytes: "already published"), and no object may be left under the version that its manifest
does not list (nobody deleted the winner's objects, nobody left half a loser behind).
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from artefact_helpers import make_manifest

from llmops.artefacts import ImmutableArtefactError, Manifest

RACES = 20


def _checkpoint(directory, weights: bytes):
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    (directory / "model.safetensors").write_bytes(weights)
    return directory


def _race(stores, dirs, manifests):
    """Publish manifests[i] from dirs[i] through stores[i] in two threads released together."""
    barrier = threading.Barrier(len(stores))
    outcomes: list[object] = [None] * len(stores)

    def jitter(path, done, size):
        time.sleep(random.random() * 0.004)

    def publish(i):
        barrier.wait()
        time.sleep(random.random() * 0.004)
        try:
            outcomes[i] = stores[i].publish(dirs[i], manifests[i].prefix, manifests[i], progress=jitter)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test asserts on
            outcomes[i] = exc

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def _assert_published_exactly(store, manifest: Manifest, source_dir, tmp_path):
    """The version verifies byte for byte against `source_dir`, and only its listed objects exist under it."""
    published = store.read_manifest(manifest.prefix)
    assert published.same_content(manifest)
    assert store.verify_stored(published).ok
    fetched = store.fetch(manifest.prefix, tmp_path)
    for entry in published.files:
        assert (fetched / entry.path).read_bytes() == (source_dir / entry.path).read_bytes()
    listed = {f"{manifest.prefix}/{entry.key}" for entry in published.files}
    assert set(store._list(f"{manifest.prefix}/data/")) == listed


@pytest.mark.parametrize("kind", ["file", "s3", "oss"])
def test_racing_publishers_of_different_bytes_one_wins_the_other_is_refused(kind, open_test_store, tmp_path):
    winners = {"a": 0, "b": 0}
    publishers, store = [open_test_store(kind), open_test_store(kind)], open_test_store(kind)  # clients cost ~1 s
    for race in range(RACES):
        sha = f"{race:040x}"
        dirs = [_checkpoint(tmp_path / f"{race}-{name}", os.urandom(4096)) for name in ("a", "b")]
        manifests = [make_manifest(d, source_sha=sha, built_by={"run_id": name})
                     for d, name in zip(dirs, ("a", "b"), strict=True)]
        outcomes = _race(publishers, dirs, manifests)
        won = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, str)]
        lost = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, ImmutableArtefactError)]
        assert len(won) == 1 and len(lost) == 1, f"race {race}: {outcomes!r}"
        assert "already published with different content" in str(outcomes[lost[0]])
        assert store.read_manifest(manifests[0].prefix).built_by.run_id == "ab"[won[0]]
        _assert_published_exactly(store, manifests[won[0]], dirs[won[0]], tmp_path / f"{race}-fetched")
        winners["ab"[won[0]]] += 1
    print(f"{kind}: winners over {RACES} races: {winners}")


@pytest.mark.parametrize("kind", ["file", "s3", "oss"])
def test_racing_publishers_of_identical_bytes_both_get_the_one_version(kind, open_test_store, tmp_path):
    publishers, store = [open_test_store(kind), open_test_store(kind)], open_test_store(kind)
    for race in range(RACES):
        sha = f"{race:040x}"
        weights = os.urandom(4096)
        dirs = [_checkpoint(tmp_path / f"{race}-{name}", weights) for name in ("a", "b")]
        manifests = [make_manifest(d, source_sha=sha, built_by={"run_id": name})
                     for d, name in zip(dirs, ("a", "b"), strict=True)]
        outcomes = _race(publishers, dirs, manifests)
        assert all(isinstance(outcome, str) for outcome in outcomes), f"race {race}: {outcomes!r}"
        assert outcomes[0] == outcomes[1]
        assert store.read_manifest(manifests[0].prefix).built_by.run_id in ("a", "b")  # exactly one winner
        _assert_published_exactly(store, manifests[0], dirs[0], tmp_path / f"{race}-fetched")


@pytest.mark.parametrize("kind", ["file", "s3", "oss"])
def test_the_manifest_cannot_be_written_twice(kind, open_test_store, tmp_path):
    """The worst interleaving, forced: B checks for a manifest, A publishes completely, then B tries to write
    its own. A manifest writable twice (an unconditional put, a rename over) would let B replace A's."""
    dirs = [_checkpoint(tmp_path / name, os.urandom(4096)) for name in ("a", "b")]
    first, second = (make_manifest(d, built_by={"run_id": name}) for d, name in zip(dirs, ("a", "b"), strict=True))
    store_a, store_b = open_test_store(kind), open_test_store(kind)
    done: list[str] = []

    def publish_a_meanwhile(path, size, total):
        if not done:
            done.append(store_a.publish(dirs[0], first.prefix, first))

    with pytest.raises(ImmutableArtefactError):
        store_b.publish(dirs[1], second.prefix, second, progress=publish_a_meanwhile)
    assert done and store_a.read_manifest(first.prefix).built_by.run_id == "a"
    _assert_published_exactly(open_test_store(kind), first, dirs[0], tmp_path / "fetched")
    # the primitive itself: a second create of an existing manifest is refused and changes nothing
    key = f"{first.prefix}/manifest.json"
    before = store_a._get_bytes(key)
    assert store_b._put_if_absent(key, second.to_json().encode()) is False
    assert store_a._get_bytes(key) == before


@pytest.mark.parametrize("kind", ["s3", "oss"])
def test_racing_publishers_of_one_multipart_file_share_its_key_safely(kind, open_test_store, tmp_path):
    """Identical bytes above the multipart threshold: both publishers may find and share one open upload of
    the (content-addressed) key; whoever completes it second must accept the twin's object, not crash."""
    weights = os.urandom(6 * 1024 * 1024)  # two 5 MiB parts
    publishers, store = [open_test_store(kind), open_test_store(kind)], open_test_store(kind)
    for race in range(3):
        dirs = [_checkpoint(tmp_path / f"{race}-{name}", weights) for name in ("a", "b")]
        manifests = [make_manifest(d, source_sha=f"{race:040x}", built_by={"run_id": name})
                     for d, name in zip(dirs, ("a", "b"), strict=True)]
        outcomes = _race(publishers, dirs, manifests)
        assert all(isinstance(outcome, str) for outcome in outcomes), f"race {race}: {outcomes!r}"
        _assert_published_exactly(store, manifests[0], dirs[0], tmp_path / f"{race}-fetched")
