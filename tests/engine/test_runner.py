"""palm.engine.runner: run folders, resume and what a training run refuses before any work."""
from __future__ import annotations

import pytest
import yaml

from palm.cli import train as train_tool
import re
from pathlib import Path
from palm.config import load_config
from palm.errors import OutputRefused


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


PROVENANCE_KEYS = {"palm_version", "paddle_version", "device", "data"}


def _tiny(palm_root: Path, *extra: str) -> list[str]:
    return ["--model", "lenet5", "--data-root", str(palm_root), "--image-size", "32",
            "--epochs", "1", "-b", "8", "--num-workers", "0", "--device", "cpu", "--no-progress",
            *extra]


def test_resume_takes_a_path(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    for given in (run, run / "last.pdparams"):
        args = train_tool.parse_args(["--model", "lenet5", "--resume", str(given)])
        assert (args.output, args.resume) == (str(run), True)
    bare = train_tool.parse_args(["--model", "lenet5", "--output", str(run), "--resume"])
    assert (bare.output, bare.resume) == (str(run), True)
    with pytest.raises(SystemExit):  # two different runs named
        train_tool.parse_args(["--model", "lenet5", "--output", str(tmp_path), "--resume",
                               str(run)])


@pytest.mark.slow
def test_default_outputs_never_overwrite_and_record_provenance(palm_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train_tool.main(train_tool.parse_args(_tiny(palm_root)))
    second = train_tool.main(train_tool.parse_args(_tiny(palm_root)))
    assert (first, second) == (Path("runs/lenet5"), Path("runs/lenet5-2"))
    assert (first / "best.pdparams").is_file() and (second / "best.pdparams").is_file()

    saved = yaml.safe_load((second / "config.yaml").read_text())
    assert saved["output"] == "runs/lenet5-2"
    record = saved["provenance"]
    assert PROVENANCE_KEYS <= set(record) and record["device"] == "cpu"
    assert record["data"]["files"] == 24 + 16 and len(record["data"]["sha256"]) == 64
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record.get("git_commit", "0" * 40))
    assert load_config(second / "config.yaml")["model"] == "lenet5"  # still a usable -c file

    # an explicit --output holding a run: refused unless --exist-ok
    with pytest.raises(OutputRefused, match="--exist-ok"):
        train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", str(first))))
    again = train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", str(first),
                                                        "--exist-ok")))
    assert again == first and not Path("runs/lenet5-3").exists()
