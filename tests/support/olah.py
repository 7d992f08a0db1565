"""olah, the Hugging Face mirror, serving local git repos offline to the real `huggingface_hub` client.

    mirrors = tmp_path / "mirrors"
    sha = publish_repo(mirrors, "org/tiny", model_dir, branch="main", tags=["v1"])
    with olah_server(mirrors) as endpoint:          # e.g. http://127.0.0.1:41234
        snapshot_download("org/tiny", revision=sha, endpoint=endpoint, ...)

Repos live at `<mirrors>/models/<org>/<name>` as non-bare git repos. Weight-like files (and any file
larger than `lfs_threshold`) are committed as Git LFS pointer files, their bytes written to
`.git/lfs/objects/<aa>/<bb>/<oid>` without git-lfs, exactly what olah reads; `get_paths_info` then
reports their sha256. `tamper_lfs_object` changes the served bytes behind the pointer's back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from llmops.hashing import sha256_file
from support._proc import STANDINS_BIN, free_port, http_ok, start_owned, stop, wait_until

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".gguf", ".onnx", ".h5", ".msgpack")
_GIT_ENV = {"GIT_AUTHOR_NAME": "llmops-tests", "GIT_AUTHOR_EMAIL": "tests@llmops.invalid",
            "GIT_COMMITTER_NAME": "llmops-tests", "GIT_COMMITTER_EMAIL": "tests@llmops.invalid"}


def repo_path(mirrors: Path, repo_id: str) -> Path:
    return Path(mirrors) / "models" / repo_id


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env)
    return done.stdout.strip()


def lfs_pointer(oid: str, size: int) -> str:
    # olah recognises exactly this form (and only between 120 and 150 bytes: true for any sha256 pointer)
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


def _iter_files(files: Path | Mapping[str, Path | bytes | str]) -> Iterator[tuple[str, Path | bytes]]:
    if isinstance(files, Mapping):
        for name, content in files.items():
            yield name, content.encode() if isinstance(content, str) else content
        return
    root = Path(files)
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".git" not in path.relative_to(root).parts:
            yield path.relative_to(root).as_posix(), path


def publish_repo(
    mirrors: Path,
    repo_id: str,
    files: Path | Mapping[str, Path | bytes | str],
    *,
    branch: str = "main",
    tags: Iterable[str] = (),
    message: str = "publish",
    replace: bool = True,
    lfs_threshold: int = 10 * 1024 * 1024,
) -> str:
    """Commit `files` (a directory or {path: Path | bytes | str}) to `branch`; return the commit sha.

    A new branch starts from the current HEAD. With `replace` the branch's tree becomes exactly `files`.
    Files with a weight suffix or above `lfs_threshold` bytes become LFS pointers.
    """
    repo = repo_path(mirrors, repo_id)
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", branch)
    else:
        branches = _git(repo, "branch", "--format=%(refname:short)").split()
        if branch in branches:
            _git(repo, "checkout", "-q", branch)
        else:
            _git(repo, "checkout", "-q", "-b", branch)
    if replace:
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    for name, content in _iter_files(files):
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        if name.endswith(LFS_SUFFIXES) or size > lfs_threshold:
            if isinstance(content, Path):
                oid, size = sha256_file(content)
            else:
                oid = hashlib.sha256(content).hexdigest()
            obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            if not obj.exists():
                if isinstance(content, Path):
                    shutil.copyfile(content, obj)
                else:
                    obj.write_bytes(content)
            target.write_text(lfs_pointer(oid, size))
        elif isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)
    for tag in tags:
        _git(repo, "tag", "-f", tag)
    return _git(repo, "rev-parse", "HEAD")


def lfs_object_path(mirrors: Path, repo_id: str, path: str, revision: str = "HEAD") -> Path:
    """Where olah reads the bytes of LFS file `path` at `revision`."""
    repo = repo_path(mirrors, repo_id)
    pointer = _git(repo, "show", f"{revision}:{path}")
    oid = pointer.split("oid sha256:")[1].split()[0]
    return repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def tamper_lfs_object(mirrors: Path, repo_id: str, path: str, revision: str = "HEAD") -> Path:
    """Flip one byte of the stored LFS object (same size): the pointer's sha256 no longer matches."""
    obj = lfs_object_path(mirrors, repo_id, path, revision)
    with open(obj, "r+b") as handle:
        handle.seek(obj.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return obj


@contextlib.contextmanager
def olah_server(mirrors: Path, *, work_dir: Path | None = None, timeout: float = 60) -> Iterator[str]:
    """Start `olah-cli` offline over `mirrors`; yield its base URL (an HF_ENDPOINT); stop it by PID."""
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="olah-")))
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        Path(mirrors, "models").mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = work_dir / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {port}\n"
            f'repos-path = "{work_dir / "repos"}"\n'
            f'mirrors-path = ["{Path(mirrors).resolve()}"]\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\n"
            "offline = true\n"
        )
        log = work_dir / "olah.log"
        with open(log, "ab") as log_file:
            proc = start_owned([str(STANDINS_BIN / "olah-cli"), "-c", str(config)], stdout=log_file,
                               stderr=subprocess.STDOUT, cwd=work_dir)
        stack.callback(stop, proc)
        endpoint = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(endpoint + "/api/models/none/none"), timeout=timeout, what="olah", proc=proc,
                   log=log)
        yield endpoint
