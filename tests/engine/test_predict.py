"""palm.engine.predict: its output guard, the resume journal and the CSV it writes."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import pandas as pd

from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.predict import check_output, predict_to_csv
from palm.errors import OutputRefused
from palm.weights import file_sha256
from palm.cli import predict as predict_tool
from palm.engine.predict import journal_path, record_path
from palm.io_utils import escape_formula, read_csv
from tests.formula_cells import NAMES, assert_no_formula_cells, raw_cells
import errno
from palm.cli import cam as cam_tool
import os
from palm.engine.inference import weights_sha256
from palm.data import list_images
from palm.io_utils import output_lock
from palm.cli import eval as eval_tool
from tests.processes import second_run_while_first_holds, tool_exit


@pytest.mark.parametrize("name", ["best", "best.partial"])
def test_predict_output_beside_a_checkpoint_keeps_its_sidecar(name, fresh_checkpoint):
    """`--output run/best` wrote its record to run/best.json: the checkpoint's sidecar."""
    side = fresh_checkpoint.with_suffix(".json")
    if name == "best.partial":  # the journal's record is best.partial.json
        side.rename(fresh_checkpoint.parent / "best.partial.json")
        side = fresh_checkpoint.parent / "best.partial.json"
    before = side.read_bytes()
    with pytest.raises(OutputRefused, match=rf"^output .*{name} would replace .*{side.name}, "
                                            r"which palm did not write"):
        check_output(fresh_checkpoint.parent / name)
    assert side.read_bytes() == before


def test_resume_keeps_only_rows_of_this_runs_inputs(fresh_checkpoint, tmp_path):
    """Resuming into an output made for other files kept their rows and counted them as
    predicted images of this run."""
    images = []
    for k in range(4):
        images.append(str(tmp_path / f"img{k}.png"))
        cv2.imwrite(images[-1], np.full((40, 40, 3), 60 * k, np.uint8))
    model, meta = load_checkpoint_model(fresh_checkpoint)
    out = tmp_path / "preds.csv"
    run = dict(num_workers=0, progress=False, checkpoint_sha256=file_sha256(fresh_checkpoint))
    predict_to_csv(model, meta, images[:3], out, **run)
    summary = predict_to_csv(model, meta, images[2:], out, resume=True, **run)
    with open(out, newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == images[2:]
    assert (summary.images, summary.reused) == (2, 1)


@pytest.fixture(scope="module")
def trained_lenet5(tiny_run) -> str:
    return str(tiny_run("lenet5") / "best.pdparams")


@pytest.fixture(scope="module")
def formula_photos(palm_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    train = sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))
    for src, name in zip(train, NAMES):
        shutil.copy(src, folder / name)
    return folder


def _predict(trained_lenet5: str, output: Path, *extra: str):
    return predict_tool.main(predict_tool.get_args_parser().parse_args([
        "--checkpoint", trained_lenet5, "--input", ".", "--output", str(output), "--engine",
        "dygraph", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
        "--no-progress", *extra]))


def test_predict_escapes_paths_and_resume_matches_them(trained_lenet5, formula_photos, tmp_path, monkeypatch):
    monkeypatch.chdir(formula_photos)  # --input . gives paths as bare file names
    out = tmp_path / "preds.csv"
    assert _predict(trained_lenet5, out).images == len(NAMES)
    assert_no_formula_cells(out)
    raw = pd.read_csv(out)
    assert sorted(raw["path"]) == sorted(escape_formula(n) for n in NAMES)
    assert raw["probability"].dtype == float and raw["prediction"].dtype == np.int64
    assert sorted(read_csv(out)["path"]) == sorted(NAMES)

    # a run interrupted after 5 rows: they are kept, the others predicted, none twice
    with open(journal_path(out), "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(raw_cells(out)[:6])  # the header and 5 rows, as written
    shutil.copy(record_path(out), record_path(journal_path(out)))
    out.unlink()
    summary = _predict(trained_lenet5, out, "--resume")
    assert (summary.images, summary.reused) == (len(NAMES), 5)
    resumed = read_csv(out)
    assert sorted(resumed["path"]) == sorted(NAMES)
    assert_no_formula_cells(out)
    # resuming a finished output redoes nothing
    assert _predict(trained_lenet5, out, "--resume").reused == len(NAMES)
    assert sorted(read_csv(out)["path"]) == sorted(NAMES)


@pytest.mark.parametrize("tool", [predict_tool, cam_tool])
def test_a_folder_without_images_is_an_error_naming_it(tool, lenet_checkpoint, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not a photo")
    output = tmp_path / ("preds.csv" if tool is predict_tool else "cams")
    args = tool.get_args_parser().parse_args(["--checkpoint", str(lenet_checkpoint), "--input", str(empty),
                                              "--output", str(output)])
    assert tool_exit(tool.main, args) == f"error: no images in {empty}"
    assert not output.exists()


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
    assert tool_exit(predict_tool.main, args) == (
        f"error: {output}.partial: no space left on the device; free some space or write elsewhere")
    assert not output.exists()


@pytest.mark.slow
def test_two_predict_runs_on_one_output(lenet_checkpoint, many_photos, tmp_path):
    out = tmp_path / "preds.csv"
    argv = ["--checkpoint", str(lenet_checkpoint), "--input", str(many_photos), "--output", str(out),
            "--engine", "dygraph", "--batch-size", "4", "--num-workers", "0", "--no-progress"]
    first, refusal, stdout, stderr = second_run_while_first_holds(
        "predict.py", argv, tmp_path / "preds.csv.lock")
    assert refusal.startswith(f"error: {out} is in use by pid {first.pid} on ")
    assert "(predict.py --checkpoint" in refusal and refusal.endswith("choose another --output")
    assert first.returncode == 0, stderr
    assert "240 images, 0 errors" in stdout
    # the CSV is exactly the first run's: every photo once, as a lone run predicts it
    model, meta = load_checkpoint_model(lenet_checkpoint)
    expected = predict_to_csv(model, meta, list_images(many_photos), tmp_path / "alone.csv",
                              batch_size=4, num_workers=0, progress=False,
                              checkpoint_sha256=weights_sha256(lenet_checkpoint)).output
    got, want = pd.read_csv(out), pd.read_csv(expected)
    assert len(got) == 240 and got["path"].is_unique
    assert got["path"].tolist() == want["path"].tolist()
    np.testing.assert_allclose(got["probability"], want["probability"], atol=2e-6)
    assert not (tmp_path / "preds.csv.lock").exists()


def test_output_guard_protects_checkpoints_inputs_and_foreign_files(lenet_checkpoint, palm_root, tmp_path):
    photos = sorted(map(str, (palm_root / "PALM-Validation400").glob("*.jpg")))
    weights = lenet_checkpoint.read_bytes()
    odd_input = tmp_path / "scan.dat"  # a single input file may have any extension
    odd_input.write_bytes(b"x")
    foreign = tmp_path / "notes.csv"
    foreign.write_text("name,score\na,1\n")
    cases = {
        str(lenet_checkpoint): "has a .pdparams extension",
        str(lenet_checkpoint.with_suffix(".json")): "has a .json extension",
        photos[0]: "has a .jpg extension",
        str(tmp_path / "new.png"): "has a .png extension",  # not even a new image file
        str(tmp_path): "is a folder",
        str(foreign): "exists and is not a predictions CSV written by palm",
    }
    for output, why in cases.items():
        with pytest.raises(OutputRefused, match=why):
            check_output(output, photos)
    with pytest.raises(OutputRefused, match="is one of the input images"):
        check_output(odd_input, [str(odd_input)])
    # through the tool: one line, before any model is loaded, nothing touched
    args = predict_tool.get_args_parser().parse_args(
        ["--checkpoint", str(lenet_checkpoint), "--input", photos[0], "--output", str(lenet_checkpoint)])
    assert tool_exit(predict_tool.main, args) == (
        f"error: --output {lenet_checkpoint} has a .pdparams extension (a checkpoint, config or image, "
        "not a CSV); predictions go to a new or earlier predictions .csv file")
    args.output = photos[0]
    assert tool_exit(predict_tool.main, args).startswith(f"error: --output {photos[0]} has a .jpg")
    assert lenet_checkpoint.read_bytes() == weights
    assert foreign.read_text() == "name,score\na,1\n"
    # a CSV palm wrote may be written again (and resumed)
    model, meta = load_checkpoint_model(lenet_checkpoint)
    out = tmp_path / "p.csv"
    for _ in range(2):
        predict_to_csv(model, meta, photos[:2], out, num_workers=0, progress=False,
                       checkpoint_sha256=weights_sha256(lenet_checkpoint))
    assert len(pd.read_csv(out)) == 2


def test_folder_outputs_refuse_a_file(tmp_path, lenet_checkpoint):
    plain = tmp_path / "plain.txt"
    plain.write_text("keep me")
    with pytest.raises(OutputRefused, match="plain.txt is a file, not a folder"):
        with output_lock(plain, folder=True):
            pass
    args = eval_tool.get_args_parser().parse_args(
        ["--checkpoint", str(lenet_checkpoint), "--val-dir", str(tmp_path), "--output", str(plain)])
    assert tool_exit(eval_tool.main, args) == (
        f"error: {plain} is a file, not a folder; choose another --output")
    assert plain.read_text() == "keep me"
    args.output = str(tmp_path / "eval")
    with output_lock(tmp_path / "eval", folder=True):  # an evaluation is writing there
        assert tool_exit(eval_tool.main, args).startswith(
            f"error: {tmp_path / 'eval'} is in use by pid {os.getpid()} on ")
