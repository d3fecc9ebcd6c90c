"""palm.engine.runner: run folders, resume and what a training run refuses before any work."""
from __future__ import annotations

import pytest
import yaml

from palm.cli import train as train_tool
import re
from pathlib import Path
from palm.config import load_config
from palm.errors import OutputRefused
import json
import os
import subprocess
from palm.cli import run_tool
import pandas as pd
from palm.cli import eval as eval_tool
from tests.processes import run_checkout_tool, second_run_while_first_holds, stderr_lines, tool_exit
from tests.folders import TINY_TRAINING


def test_resume_of_a_missing_run_folder_creates_nothing(palm_root, tmp_path):
    missing = tmp_path / "nope" / "run"
    with pytest.raises(FileNotFoundError, match=f"^{missing}: no such run folder; nothing to resume$"):
        train_tool.parse_and_run([*TINY_TRAINING, "--data-root", str(palm_root),
                                  "--resume", str(missing)])
    assert not (tmp_path / "nope").exists()


@pytest.mark.slow
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
    with pytest.raises(OutputRefused, match="exist_ok"):
        train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", str(first))))
    again = train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", str(first),
                                                        "--exist-ok")))
    assert again == first and not Path("runs/lenet5-3").exists()


@pytest.mark.slow
def test_two_trainings_into_one_output(palm_root, tmp_path):
    run = tmp_path / "run"
    argv = ["--model", "lenet", "--data-root", str(palm_root), "--image-size", "32",
            "--batch-size", "8", "--epochs", "1", "--num-workers", "0", "--output", str(run),
            "--device", "cpu", "--no-progress", "--cache-dir", "none"]
    first, refusal, _, stderr = second_run_while_first_holds("train.py", argv, run / ".lock")
    assert refusal.startswith(f"error: {run} is in use by pid {first.pid} on ")
    assert first.returncode == 0, stderr
    assert json.loads((run / "best.json").read_text())["epoch"] == 1
    assert not (run / ".lock").exists()


def test_read_only_output_is_one_line(tmp_path, palm_root):
    """A real read-only file system (root mounts a read-only tmpfs; skipped elsewhere)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                            str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code = tool_exit(train_tool.parse_and_run, ["--model", "lenet", "--data-root", str(palm_root),
                                                "--output", str(ro / "run")])
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert code == f"error: {ro / 'run'}: read-only file system; choose a writable location"


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only); skipped where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                                            str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.longest(50)
@pytest.mark.slow
def test_disk_full_training_on_a_real_full_device(palm_root, tmpfs):
    run = tmpfs / "run"
    argv = ["--model", "lenet", "--data-root", str(palm_root), "--image-size", "32",
            "--batch-size", "8", "--num-workers", "0", "--output", str(run), "--device", "cpu",
            "--no-progress", "--cache-dir", "none"]
    first = run_checkout_tool("train.py", [*argv, "--epochs", "1"])
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".pdparams", ".json")}
    # leave ~40 KB: enough for metrics.csv, not for a checkpoint
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    (tmpfs / "filler").write_bytes(b"\0" * (free - 40_000))
    second = run_checkout_tool("train.py", [*argv, "--epochs", "2", "--resume"])
    assert second.returncode == 1
    lines = stderr_lines(second.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {run}/"), second.stderr
    assert lines[0].endswith(": no space left on the device; free some space or write elsewhere")
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".pdparams", ".json")}
    assert after == before  # epoch 1's checkpoints, intact
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((run / "last.json").read_text())["epoch"] == 1


def _run_tool(main, args) -> str:
    """The message a tool exits with (run_tool turns user errors into `error: ...`)."""
    with pytest.raises(SystemExit) as exc:
        run_tool(main, args)
    return str(exc.value.code)


def test_run_names_positive_class_and_augmentation(pm_run, tmp_path, capsys):
    root, run = pm_run
    meta = json.loads((run / "best.json").read_text())
    assert meta["class_names"] == ["normal", "PM"] and meta["positive_class"] == "PM"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["positive_class"] == "PM" and cfg["class_names"] == ["normal", "PM"]
    # class folders get the label-safe preset, resolved in full
    assert cfg["augment"] == {"preset": "natural", "hflip": False, "vflip": False, "rotate": 0.0,
                              "brightness": 0.2, "contrast": 0.2, "random_resized_crop": 0.8}

    m = eval_tool.main(eval_tool.get_args_parser().parse_args([
        "--checkpoint", str(run / "best.pdparams"), "--val-dir", str(root / "val"),
        "--output", str(tmp_path / "eval"), "--positive-class", "PM"]))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["positive_class"] == written["positive_class"] == "PM"
    preds = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    assert ((preds["label"] == 1) == preds["path"].str.contains("/PM/")).all()
    args = eval_tool.get_args_parser().parse_args([
        "--checkpoint", str(run / "best.pdparams"), "--val-dir", str(root / "val"),
        "--output", str(tmp_path / "eval2"), "--positive-class", "normal"])
    assert _run_tool(eval_tool.main, args) == (
        "error: the checkpoint's positive class is 'PM' (classes ['normal', 'PM']), not 'normal'")


def test_start_line_names_positive_class(pm_run, capsys):
    root, _ = pm_run
    out_dir = root / "run2"
    train_tool.main(train_tool.parse_args([
        "--model", "lenet", "--train-dir", str(root / "train"), "--val-dir", str(root / "val"),
        "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--num-workers", "0",
        "--output", str(out_dir), "--device", "cpu", "--no-progress", "--augment",
        "none,contrast=0.1"]))
    out = capsys.readouterr().out
    assert "classes ['normal', 'PM'], positive class 'PM'" in out
    assert "augmentation none: contrast 0.1" in out
    assert yaml.safe_load((out_dir / "config.yaml").read_text())["augment"]["preset"] == "none"
