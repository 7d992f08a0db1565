"""The hub path against a real olah mirror through the real huggingface_hub client."""

from __future__ import annotations

import logging

import pytest

from llmops.artefacts import open_store
from llmops.hub import (
    ChecksumMismatchError,
    HubError,
    RepoNotFoundError,
    RevisionNotFoundError,
    WeightPolicyError,
    download_snapshot,
    resolve_revision,
)


@pytest.mark.parametrize("revision", ["v1", "main", "dev"])
def test_branch_and_tag_resolve_to_their_commit(mirror, revision):
    assert resolve_revision(mirror.spec("tiny", revision)) == mirror.shas[f"tiny@{revision}"]


def test_sha_resolves_to_itself(mirror):
    sha = mirror.shas["tiny@v1"]
    assert resolve_revision(mirror.spec("tiny", sha)) == sha


def test_endpoint_falls_back_to_hf_endpoint(mirror, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", mirror.endpoint)
    spec = mirror.spec("tiny", "main").model_copy(update={"endpoint": None})
    assert resolve_revision(spec) == mirror.shas["tiny@main"]


def test_unknown_repo_is_named_with_the_fix(mirror):
    with pytest.raises(RepoNotFoundError) as caught:
        resolve_revision(mirror.spec("no-such-model"))
    message = str(caught.value)
    assert "llmops-test/no-such-model" in message and mirror.endpoint in message and "fix:" in message


def test_unknown_revision_lists_known_branches_and_tags(mirror):
    with pytest.raises(RevisionNotFoundError) as caught:
        resolve_revision(mirror.spec("tiny", "release-9"))
    message = str(caught.value)
    assert "'release-9'" in message and "llmops-test/tiny" in message
    assert "dev, main, v1" in message and "fix:" in message


def test_download_is_pinned_to_the_sha_and_filtered(mirror, tmp_path):
    v1 = mirror.shas["tiny@v1"]
    out = download_snapshot(mirror.spec("tiny", "main"), v1, tmp_path / "src")
    assert (out / "model.safetensors").read_bytes() == mirror.weights[f"tiny@{v1}"]
    assert '"version": 1' in (out / "config.json").read_text()
    assert not (out / "README.md").exists()  # not in allow_patterns
    # idempotent: a second run leaves the same verified files
    download_snapshot(mirror.spec("tiny", "main"), v1, out)
    assert (out / "model.safetensors").read_bytes() == mirror.weights[f"tiny@{v1}"]


def test_download_into_a_used_directory_drops_the_old_revisions_files(mirror, tmp_path):
    spec = mirror.spec("tiny", allow_patterns=["*.json", "*.safetensors", "*.md"])
    download_snapshot(spec, mirror.shas["tiny@v1"], tmp_path)
    assert (tmp_path / "README.md").read_text() == "tiny v1\n"
    dev = mirror.shas["tiny@dev"]
    download_snapshot(spec.model_copy(update={"allow_patterns": ["*.json", "*.safetensors"]}), dev, tmp_path)
    assert not (tmp_path / "README.md").exists()
    assert (tmp_path / "model.safetensors").read_bytes() == mirror.weights[f"tiny@{dev}"]


def test_branch_name_instead_of_sha_is_refused(mirror, tmp_path):
    with pytest.raises(HubError, match="not a 40-hex commit sha"):
        download_snapshot(mirror.spec("tiny"), "main", tmp_path)
    assert not any(tmp_path.iterdir())


def test_pickle_only_repo_is_refused_before_download(mirror, tmp_path):
    with pytest.raises(WeightPolicyError) as caught:
        download_snapshot(mirror.spec("pickle-only"), mirror.shas["pickle-only@main"], tmp_path / "src")
    message = str(caught.value)
    assert "pytorch_model.bin" in message and "allow_pickle" in message
    assert not (tmp_path / "src").exists()


def test_pickle_only_repo_downloads_when_the_registry_allows_it(mirror, tmp_path):
    spec = mirror.spec("pickle-only", allow_pickle=True, allow_patterns=["*.json", "*.bin"])
    out = download_snapshot(spec, mirror.shas["pickle-only@main"], tmp_path)
    assert (out / "pytorch_model.bin").stat().st_size == 4096


@pytest.mark.parametrize("repo", ["custom-code", "auto-map"])
def test_custom_code_is_refused_without_trust_remote_code(mirror, tmp_path, repo):
    with pytest.raises(WeightPolicyError, match="trust_remote_code: true"):
        download_snapshot(mirror.spec(repo), mirror.shas[f"{repo}@main"], tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_custom_code_downloads_with_trust_remote_code(mirror, tmp_path):
    spec = mirror.spec("custom-code", trust_remote_code=True)
    out = download_snapshot(spec, mirror.shas["custom-code@main"], tmp_path)
    assert (out / "modeling_custom.py").exists() and (out / "model.safetensors").exists()


def test_tampered_blob_fails_naming_the_file_and_nothing_is_published(mirror, tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    src = tmp_path / "src"
    sha = mirror.shas["tampered@main"]
    with pytest.raises(ChecksumMismatchError) as caught:
        download_snapshot(mirror.spec("tampered"), sha, src)
    error = caught.value
    assert error.path == "model.safetensors" and error.expected != error.actual
    lfs_oid = error.expected.split()[0]
    assert lfs_oid in str(error) and error.actual.split()[0] in str(error) and sha in str(error)
    assert not (src / "model.safetensors").exists()  # the bad bytes are not left for a later step
    assert store.list_versions("test-model") == []


def test_token_never_reaches_logs(mirror, tmp_path, caplog, capfd):
    token = "hf_llmops_secret_token_do_not_log"
    caplog.set_level(logging.DEBUG)
    resolve_revision(mirror.spec("tiny"), token=token)
    download_snapshot(mirror.spec("tiny"), mirror.shas["tiny@main"], tmp_path, token=token)
    with pytest.raises(HubError) as caught:
        resolve_revision(mirror.spec("no-such-model"), token=token)
    captured = capfd.readouterr()
    assert token not in caplog.text and token not in captured.out + captured.err and token not in str(caught.value)
