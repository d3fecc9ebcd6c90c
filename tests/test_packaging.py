"""A wheel built from the repository trains from any folder and installs only `palm`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_palm_only_and_trains_from_another_folder(tmp_path, palm_root):
    dist, target, work = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    # a copy, so the build's build/ and egg-info never land in (or come from) the checkout
    source = shutil.copytree(REPO, tmp_path / "source", ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", "runs", "demo_data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(source), "-w", str(dist)], check=True, cwd=tmp_path, timeout=600)
    (wheel,) = dist.glob("palm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "palm/configs/lenet.yaml" in names
    assert "palm/engine/program_ops.json" in names  # the allowlist export loads need
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=600)
    top_level = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".data"))}
    assert top_level == {"palm", "bin"} or top_level == {"palm"}, top_level
    assert not {"tools", "configs", "data_tools"} & top_level

    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-m", "palm", "train", "--model", "lenet", "--image-size", "32",
         "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--cache-dir", "none",
         "--no-progress",
         "--data-root", str(palm_root), "--output", str(work / "run")],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (work / "run" / "best.pdparams").is_file()
    # the run used the installed package, not this checkout
    where = subprocess.run([sys.executable, "-c", "import palm; print(palm.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target)
