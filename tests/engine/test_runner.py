"""palm.engine.runner: run folders, resume and what a training run refuses before any work."""
from __future__ import annotations

import pytest
import yaml

from palm.cli import train as train_tool


TINY_TRAINING = ["--model", "lenet", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                 "--num-workers", "0", "--cache-dir", "none", "--device", "cpu", "--no-progress"]


def test_resume_of_a_missing_run_folder_creates_nothing(palm_root, tmp_path):
    missing = tmp_path / "nope" / "run"
    with pytest.raises(FileNotFoundError, match=f"^{missing}: no such run folder; nothing to resume$"):
        train_tool.parse_and_run([*TINY_TRAINING, "--data-root", str(palm_root),
                                  "--resume", str(missing)])
    assert not (tmp_path / "nope").exists()


def test_config_of_a_resumed_run_trains_again_with_c(palm_root, tmp_path):
    run = tmp_path / "run"
    train_tool.parse_and_run([*TINY_TRAINING, "--data-root", str(palm_root), "--output", str(run)])
    train_tool.parse_and_run([*TINY_TRAINING, "--data-root", str(palm_root), "--epochs", "2",
                              "--resume", str(run)])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 2 and "resume" not in saved and "exist_ok" not in saved
    again = train_tool.parse_and_run(["-c", str(run / "config.yaml"), "--epochs", "1",
                                      "--output", str(tmp_path / "again"), "--no-progress"])
    assert (again / "last.pdparams").is_file()
