"""A user's bad command lines (issue 23 hostile pass): each ends in one line naming the flag,
before anything is written."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from palm.cli.common import cli


def _cli_error(name: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli(name, argv)
    return str(stop.value.code)


def _class_folders(root: Path, per_class: int = 3) -> Path:
    for name in ("normal", "PM"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_cv_without_data_names_the_flags():
    assert _cli_error("cv", ["--folds", "2"]) == \
        "error: no training data: give --data-root (PALM), --train-dir or --train-csv"


@pytest.mark.parametrize("argv, flag", [(["--folds", "1"], "--folds"),
                                        (["--folds", "2", "--repeats", "0"], "--repeats"),
                                        (["--folds", "2", "--jobs", "0"], "--jobs")])
def test_cv_refuses_a_bad_count_by_its_flag_before_writing(tmp_path, argv, flag):
    out = tmp_path / "cv"
    line = _cli_error("cv", ["--train-dir", str(_class_folders(tmp_path / "d")),
                             "--output", str(out), *argv])
    assert line.startswith(f"error: {flag} must be")
    assert not out.exists()


def test_sweep_refuses_jobs_0_by_its_flag_before_writing(tmp_path):
    out = tmp_path / "sweep"
    line = _cli_error("sweep", ["--train-dir", str(_class_folders(tmp_path / "d")),
                                "--vary", "lr=0.1", "--jobs", "0", "--output", str(out)])
    assert line == "error: --jobs must be >= 1, got 0"
    assert not out.exists()
