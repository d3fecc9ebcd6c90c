"""palm.provenance: the record of what produced a result, and the one version of palm."""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import palm
from palm import provenance as P
from palm.version import __version__

REPO = Path(__file__).resolve().parents[1]
PROVENANCE_KEYS = {"palm_version", "paddle_version", "device", "data"}


def test_data_fingerprint_is_the_file_list_not_the_location(tmp_path):
    a = [tmp_path / "a" / "x" / n for n in ("1.jpg", "2.jpg")]
    b = [tmp_path / "b" / "x" / n for n in ("2.jpg", "1.jpg")]
    assert P.data_fingerprint(a) == P.data_fingerprint(b)
    assert P.data_fingerprint(a)["files"] == 2
    assert P.data_fingerprint(a[:1]) != P.data_fingerprint(a)
    record = P.provenance("cpu", a)
    assert PROVENANCE_KEYS <= set(record) and record["palm_version"]


def test_the_record_names_the_one_version():
    assert P.provenance("cpu", [])["palm_version"] == __version__ == palm.__version__


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def test_git_commit_clean_dirty_and_outside_a_checkout(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("1")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert P.git_commit(repo) == head
    (repo / "a.txt").write_text("2")
    assert P.git_commit(repo) == head + "-dirty"
    (tmp_path / "plain").mkdir()
    assert P.git_commit(tmp_path / "plain") is None


def test_paddle_version_is_read_without_importing_paddle():
    code = ("import sys; from palm.provenance import paddle_version; "
            "print(paddle_version(), 'paddle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    assert out == [importlib.metadata.version("paddlepaddle"), "False"]


def test_setup_py_reads_palm_version_py_without_importing_palm(tmp_path):
    """setup.py takes the version from palm/version.py's text: change it there, and only there."""
    shutil.copy(REPO / "setup.py", tmp_path)
    shutil.copy(REPO / "README.md", tmp_path)
    (tmp_path / "palm").mkdir()
    (tmp_path / "palm" / "version.py").write_text('"""v"""\n__version__ = "9.8.7"\n')
    (tmp_path / "palm" / "__init__.py").write_text("raise ImportError('setup.py imported palm')\n")
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "9.8.7"
