"""The ONNX export cache's publish step: two jobs exporting the same model at once both end with one export."""

from __future__ import annotations

import pytest

from llmops.kb.onnx_backend import DONE_FILE, publish


def _export(path, content: bytes):
    path.mkdir()
    (path / "model.onnx").write_bytes(content)
    (path / DONE_FILE).write_text("{}")
    return path


def test_first_rename_wins_and_the_twin_discards_its_copy(tmp_path):
    final = tmp_path / "minilm-onnx-abc"
    assert publish(_export(tmp_path / ".tmp-a", b"first"), final) is True
    twin = _export(tmp_path / ".tmp-b", b"second")
    assert publish(twin, final) is False
    assert not twin.exists() and (final / "model.onnx").read_bytes() == b"first"


def test_an_incomplete_directory_in_the_way_is_not_taken_for_an_export(tmp_path):
    final = tmp_path / "minilm-onnx-abc"
    final.mkdir()
    (final / "model.onnx").write_bytes(b"half")  # no export.json: not something publish() ever wrote
    with pytest.raises(OSError):
        publish(_export(tmp_path / ".tmp-a", b"whole"), final)
