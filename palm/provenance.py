"""What produced a result: palm and Paddle versions, git commit, device and data fingerprint.

Read without importing paddle (the installed wheel's metadata), so recording it costs nothing
before paddle loads; written to config.yaml, metrics.json and the report.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

from palm.version import __version__

GIT_TIMEOUT_SECONDS = 5


def git_commit(folder: str | os.PathLike = Path(__file__).resolve().parent) -> str | None:
    """The commit checked out at `folder` (palm's source by default), with `-dirty` when files
    differ from it; None outside a git checkout or without git."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=GIT_TIMEOUT_SECONDS)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=GIT_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return None
    dirty = "-dirty" if status.returncode == 0 and status.stdout.strip() else ""
    return head.stdout.strip() + dirty


def paddle_version() -> str | None:
    """The installed Paddle wheel's version, read without importing paddle."""
    for dist in ("paddlepaddle", "paddlepaddle-gpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def data_fingerprint(paths: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """{files, sha256}: the number of files and the SHA-256 of their sorted paths relative to
    their common folder, so the same files elsewhere on disk give the same fingerprint."""
    paths = [os.path.abspath(p) for p in paths]
    if not paths:
        return {"files": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    names = sorted(Path(os.path.relpath(p, root)).as_posix() for p in paths)
    return {"files": len(names), "sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}


def provenance(device: str, data_files: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """What produced a result: palm version, git commit (in a checkout), Paddle version,
    device and a fingerprint of the data; recorded in config.yaml, metrics.json, the report."""
    record = {"palm_version": __version__, "paddle_version": paddle_version(), "device": device,
              "data": data_fingerprint(data_files)}
    commit = git_commit()
    if commit:
        record["git_commit"] = commit
    return record
