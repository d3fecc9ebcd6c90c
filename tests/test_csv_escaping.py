"""CSV injection: a text cell palm writes that a spreadsheet would run as a formula (one
starting with =, +, -, @, tab or CR, OWASP's list) carries a leading `'`; numbers stay
numbers, and palm reading its own CSVs back gets the original text (predict --resume,
compare and cv keep matching paths such as `=1+2.jpg`)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palm.cli import compare as compare_tool
from palm.cli import predict as predict_tool
from palm.cli import train as train_tool
from palm.data.prepare import xlsx_to_csv
from palm.data import read_table
from palm.reports.compare import read_predictions
from palm.experiments.cv import check_same_splits, splits_table
from palm.engine.evaluate import EvalResult, write_evaluation
from palm.engine.predict import journal_path, record_path
from palm.io_utils import (FORMULA_STARTS, escape_formula, read_csv, unescape_formula,
                           write_csv_atomic)

DANGEROUS = ["=1+2.jpg", "+SUM(1).jpg", "-2+3.jpg", "@cmd.jpg", "\tTAB.jpg", "\rCR.jpg"]
# not dangerous, but must survive the round trip: an apostrophe of its own, a plain name
HARMLESS = ["'=quoted.jpg", "plain.jpg"]
NAMES = DANGEROUS + HARMLESS


def _raw_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _assert_no_formula_cells(path: Path) -> None:
    """No cell of the file (header included) starts with a formula character, unless it
    is a plain number such as -0.25."""
    for row in _raw_cells(path):
        for cell in row:
            if cell.startswith(FORMULA_STARTS):
                float(cell)  # raises for =1+2.jpg, -2+3.jpg, @cmd.jpg ...


def test_escape_and_unescape_round_trip():
    for name in NAMES + ["-0.25", "+1e-3", "-inf", "''=x", "'abc", ""]:
        assert unescape_formula(escape_formula(name)) == name
    assert [escape_formula(n) for n in DANGEROUS] == ["'" + n for n in DANGEROUS]
    assert escape_formula("-0.25") == "-0.25" and escape_formula("'=x") == "''=x"
    assert escape_formula(-0.25) == -0.25 and escape_formula(None) is None


def test_write_csv_escapes_text_and_keeps_numbers(tmp_path):
    frame = pd.DataFrame({"path": NAMES, "logit": np.linspace(-0.25, 0.5, len(NAMES)),
                          "=header": ["-x"] * len(NAMES)})
    write_csv_atomic(tmp_path / "t.csv", frame)
    _assert_no_formula_cells(tmp_path / "t.csv")
    raw = pd.read_csv(tmp_path / "t.csv")  # what a user's pandas sees
    assert raw["logit"].dtype == float and raw["logit"][0] == -0.25
    assert list(raw["path"]) == [escape_formula(n) for n in NAMES]
    assert read_csv(tmp_path / "t.csv").equals(frame)


@pytest.fixture(scope="module")
def trained_lenet5(palm_root, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("lenet5") / "run"
    run = train_tool.main(train_tool.parse_args([
        "--model", "lenet5", "--data-root", str(palm_root), "--image-size", "32",
        "--batch-size", "8", "--epochs", "1", "--num-workers", "0", "--output", str(out),
        "--device", "cpu", "--no-progress"]))
    return str(run / "best.pdparams")


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
    _assert_no_formula_cells(out)
    raw = pd.read_csv(out)
    assert sorted(raw["path"]) == sorted(escape_formula(n) for n in NAMES)
    assert raw["probability"].dtype == float and raw["prediction"].dtype == np.int64
    assert sorted(read_csv(out)["path"]) == sorted(NAMES)

    # a run interrupted after 5 rows: they are kept, the others predicted, none twice
    with open(journal_path(out), "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(_raw_cells(out)[:6])  # the header and 5 rows, as written
    shutil.copy(record_path(out), record_path(journal_path(out)))
    out.unlink()
    summary = _predict(trained_lenet5, out, "--resume")
    assert (summary.images, summary.reused) == (len(NAMES), 5)
    resumed = read_csv(out)
    assert sorted(resumed["path"]) == sorted(NAMES)
    _assert_no_formula_cells(out)
    # resuming a finished output redoes nothing
    assert _predict(trained_lenet5, out, "--resume").reused == len(NAMES)
    assert sorted(read_csv(out)["path"]) == sorted(NAMES)


def _eval_folder(root: Path, probs: np.ndarray) -> Path:
    labels = np.arange(len(NAMES)) % 2
    write_evaluation(EvalResult(probs.astype("float32"), labels), NAMES, ["-neg", "@pos"], 0.5,
                     root / "eval", ci_resamples=50)
    return root


def test_eval_and_compare_escape_and_match_rows(tmp_path):
    rng = np.random.default_rng(0)
    a = _eval_folder(tmp_path / "a", rng.uniform(size=len(NAMES)))
    b = _eval_folder(tmp_path / "b", rng.uniform(size=len(NAMES)))
    predictions = a / "eval" / "predictions.csv"
    _assert_no_formula_cells(predictions)
    assert pd.read_csv(predictions)["probability"].dtype == float
    assert sorted(read_predictions(predictions).files) == sorted(NAMES)  # as they were written

    out = tmp_path / "cmp"
    compare_tool.main(compare_tool.get_args_parser().parse_args(
        [str(a), str(b), "--names", "=good,@poor", "--output", str(out),
         "--ci-resamples", "50"]))
    for name in ("leaderboard.csv", "pairs.csv"):
        _assert_no_formula_cells(out / name)
    board = read_csv(out / "leaderboard.csv")
    assert sorted(board["model"]) == ["=good", "@poor"] and board["images"].tolist() == [8, 8]


def test_cv_splits_escape_and_are_read_back(tmp_path):
    samples = [(name, i % 2) for i, name in enumerate(NAMES)]
    splits = splits_table(samples, ["-neg", "+pos"], np.array([np.arange(len(NAMES)) % 2]))
    path = tmp_path / "splits.csv"
    check_same_splits(path, splits)  # writes it
    _assert_no_formula_cells(path)
    check_same_splits(path, splits)  # read back: the same images and labels, not refused


def test_prepare_labels_csv_escapes_and_palm_data_reads_it_back(tmp_path):
    table = pd.DataFrame({"imgName": NAMES, "Label": np.arange(len(NAMES)) % 2})
    table.to_excel(tmp_path / "gt.xlsx", index=False, engine="openpyxl")
    source = read_table(tmp_path / "gt.xlsx")  # openpyxl keeps =1+2.jpg as a formula (NaN)
    assert source["imgName"].isin(["+SUM(1).jpg", "-2+3.jpg", "@cmd.jpg", "\tTAB.jpg"]).sum() == 4
    written = xlsx_to_csv(tmp_path / "gt.xlsx")
    _assert_no_formula_cells(written)
    assert read_table(written).equals(source)  # what the training and eval lists read
