"""Refusals with one line before any work or write (issue 22's smaller findings).

Each test gives a tool input it must refuse and checks the one-line error and that nothing
was trained or written.
"""
from __future__ import annotations

import csv
import errno
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from palm.cli import run_tool
from palm.cli import cam as cam_tool, cv as cv_tool, predict as predict_tool, report as report_tool
from palm.cli import sweep as sweep_tool, train as train_tool
from palm.engine.export import META_NAME, export_checkpoint
from palm.engine.inference import has_int8
from palm.engine.quantize import quantize_to_folder
from palm.errors import BadConfig, BadData, OutputRefused


def _photos(folder: Path, n: int, size: int = 32) -> Path:
    """`n` random 32-px PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


TINY_TRAINING = ["--model", "lenet", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                 "--num-workers", "0", "--cache-dir", "none", "--device", "cpu", "--no-progress"]


# --- 1. cv on one-class data ---------------------------------------------------------------

@pytest.mark.parametrize("empty_class_folder", [True, False],
                         ids=["two-classes-one-empty", "one-class"])
def test_cv_on_one_class_is_refused_before_any_fold_trains(tmp_path, empty_class_folder):
    data = tmp_path / "data"
    _photos(data / "normal", 6)
    if empty_class_folder:  # two classes declared, images of one: main trained and said "AUC n/a"
        (data / "disease").mkdir()
    output = tmp_path / "cv"
    with pytest.raises(BadData, match=rf"^{data}: 6 images of 1 class \(only class 'normal'\); "
                                      "cross-validation needs images of at least two classes$"):
        cv_tool.parse_and_run([*TINY_TRAINING, "--train-dir", str(data), "--folds", "2",
                               "--output", str(output)])
    assert not output.exists()


def _two_classes(root: Path, n: int = 4) -> Path:
    for split in ("train", "val"):
        for name in ("normal", "disease"):
            _photos(root / split / name, n)
    return root


# --- 2. sweep checks its data and arguments before writing sweep.json -----------------------

def test_sweep_with_missing_data_writes_nothing_so_the_corrected_rerun_runs(tmp_path):
    data = _two_classes(tmp_path / "data")
    output = tmp_path / "sweep"

    def sweep(train_dir: Path, *extra: str):
        return sweep_tool.parse_and_run([*TINY_TRAINING, "--train-dir", str(train_dir),
                                         "--val-dir", str(data / "val"), "--vary", "lr=0.01",
                                         "--output", str(output), *extra])

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "typo")):
        sweep(tmp_path / "typo")
    assert not output.exists()
    table = sweep(data / "train")  # the corrected command is not "an experiment with other settings"
    assert len(table) and (output / "sweep.json").is_file()


def test_sweep_with_an_unknown_metric_is_refused_before_training(tmp_path):
    data = _two_classes(tmp_path / "data")
    output = tmp_path / "sweep"
    with pytest.raises(BadConfig, match="^metric final_val_auc: not a result of a run; choose "
                                        "from .*final_val_roc_auc"):
        sweep_tool.parse_and_run([*TINY_TRAINING, "--train-dir", str(data / "train"),
                                  "--val-dir", str(data / "val"), "--vary", "lr=0.01",
                                  "--metric", "final_val_auc", "--output", str(output)])
    assert not output.exists()


# --- 3. train --resume of a folder that does not exist ---------------------------------------

def test_resume_of_a_missing_run_folder_creates_nothing(palm_root, tmp_path):
    missing = tmp_path / "nope" / "run"
    with pytest.raises(FileNotFoundError, match=f"^{missing}: no such run folder; nothing to resume$"):
        train_tool.parse_and_run([*TINY_TRAINING, "--data-root", str(palm_root),
                                  "--resume", str(missing)])
    assert not (tmp_path / "nope").exists()


# --- 9. a resumed run's config.yaml is a usable -c file --------------------------------------

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


def _exit(main, args) -> int | str | None:
    """The exit code (or `error: ...` line) of a tool run as its command line runs it."""
    with pytest.raises(SystemExit) as info:
        run_tool(main, args)
    return info.value.code


# --- 4. report on empty folders --------------------------------------------------------------

def test_report_on_empty_folders_is_an_error_and_writes_nothing(tmp_path):
    run, evaluation = tmp_path / "run", tmp_path / "eval"
    run.mkdir()
    evaluation.mkdir()
    args = report_tool.get_args_parser().parse_args(["--run", str(run), "--eval", str(evaluation)])
    assert _exit(report_tool.main, args) == (
        f"error: {run}: not a training run folder (none of config.yaml, metrics.csv, "
        "best.pdparams, last.pdparams); nothing to report")
    (run / "metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    assert _exit(report_tool.main, args) == (
        f"error: {evaluation}: not an evaluation folder (none of metrics.json, predictions.csv); "
        "nothing to report")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["eval", "metrics.csv", "run"]


# --- 5. and 6. predict and cam on a folder without images -------------------------------------

@pytest.mark.parametrize("tool", [predict_tool, cam_tool])
def test_a_folder_without_images_is_an_error_naming_it(tool, lenet_checkpoint, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not a photo")
    output = tmp_path / ("preds.csv" if tool is predict_tool else "cams")
    args = tool.get_args_parser().parse_args(["--checkpoint", str(lenet_checkpoint), "--input", str(empty),
                                              "--output", str(output)])
    assert _exit(tool.main, args) == f"error: no images in {empty}"
    assert not output.exists()


# --- 7. a full disk while predict writes its rows ---------------------------------------------

def test_disk_full_in_predict_names_the_file_being_written(lenet_checkpoint, palm_root, tmp_path,
                                                          monkeypatch):
    """The journal's write fails as a full device fails it: ENOSPC without a file name."""
    def disk_full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", disk_full)
    output = tmp_path / "preds.csv"
    args = predict_tool.get_args_parser().parse_args([
        "--checkpoint", str(lenet_checkpoint), "--input", str(palm_root / "PALM-Validation400"),
        "--output", str(output), "--num-workers", "0", "--device", "cpu", "--no-progress"])
    assert _exit(predict_tool.main, args) == (
        f"error: {output}.partial: no space left on the device; free some space or write elsewhere")
    assert not output.exists()


# --- 8. export --output onto a quantized folder ------------------------------------------------

def test_export_onto_a_quantized_folder_removes_the_stale_int8_model(lenet_checkpoint, tmp_path):
    folder = export_checkpoint(lenet_checkpoint, tmp_path / "exported")
    # the on-disk layout quantize leaves: its IR files and the int8 record in palm_meta.json
    (folder / "model_int8.xml").write_text("<net/>")
    (folder / "model_int8.bin").write_bytes(b"\0" * 8)
    meta = json.loads((folder / META_NAME).read_text())
    meta["int8"] = {"model_file": "model_int8.xml", "sha256": {}}
    (folder / META_NAME).write_text(json.dumps(meta))
    assert has_int8(folder)

    export_checkpoint(lenet_checkpoint, folder)
    assert not has_int8(folder)
    assert not (folder / "model_int8.xml").exists() and not (folder / "model_int8.bin").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.pdiparams", META_NAME]


# --- 10. quantize checks its validation data and output folder before calibrating ----------------

def _unreadable_photo(tmp_path: Path) -> list[str]:
    (tmp_path / "bad.jpg").write_text("not a photo")  # calibrating on it fails at once
    return [str(tmp_path / "bad.jpg")]


def test_quantize_checks_the_validation_data_before_calibrating(lenet_checkpoint, tmp_path):
    def validation_set(meta):
        raise BadData(f"{tmp_path / 'val'}: no images")

    output = tmp_path / "int8"
    with pytest.raises(BadData, match=f"^{tmp_path / 'val'}: no images$"):
        quantize_to_folder(lenet_checkpoint, output, _unreadable_photo(tmp_path), validation_set)
    assert not output.exists()


def test_quantize_refuses_an_output_folder_holding_other_files(lenet_checkpoint, tmp_path):
    output = tmp_path / "mine"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(OutputRefused, match=f"^{output / 'notes.txt'}: not a file of a palm "
                                            "export; give an --output folder"):
        quantize_to_folder(lenet_checkpoint, output, _unreadable_photo(tmp_path), lambda meta: [])
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
