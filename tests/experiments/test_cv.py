"""Cross-validation: stratified folds, fold run folders, out-of-fold predictions, resume.

Folds train the PALM-course LeNet at 32 px for one epoch on the session's synthetic PALM set
(24 training images: 11 non-PM, 13 PM; 16 validation images).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palm.data.digits import export_digits
from palm.data import PalmTrainSet
from palm.data.datasets import find_palm_layout
from palm.data.splits import kfold_assignment
from palm.experiments.cv import check_same_splits, bootstrap_auc_ci, splits_table
from palm.errors import BadConfig
from palm.cli import cv as cv_tool
from tests.formula_cells import NAMES, assert_no_formula_cells
from palm.errors import BadData
from tests.folders import TINY_TRAINING, noise_photos

REPO = Path(__file__).resolve().parents[2]


def _cv_args(data: list[str], output: Path, *extra: str) -> list[str]:
    return ["--model", "lenet", *data, "--image-size", "32", "--epochs", "1",
            "--batch-size", "8", "--num-workers", "0", "--cache-dir", "none", "--seed", "0",
            "--device", "cpu", "--no-progress", "--output", str(output), *extra]


def _palm(palm_root: Path) -> list[str]:
    return ["--data-root", str(palm_root)]


def _cv(argv: list[str]) -> dict:
    return cv_tool.parse_and_run(argv)


@pytest.fixture(scope="module")
def cv_run(palm_root, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("cv") / "cv"
    summary = _cv(_cv_args(_palm(palm_root), output, "--folds", "3", "--predict-val"))
    return output, summary


def test_resumed_cv_refuses_changed_data(tmp_path):
    samples = [(f"/data/{i}.png", i % 2) for i in range(6)]
    splits = splits_table(samples, ["0", "1"], kfold_assignment([y for _, y in samples], 2))
    check_same_splits(tmp_path / "splits.csv", splits)
    check_same_splits(tmp_path / "splits.csv", splits)  # the same data: resumes
    with pytest.raises(BadConfig, match="splits.csv: the data differ"):
        check_same_splits(tmp_path / "splits.csv", splits.iloc[1:])


def test_bootstrap_ci_brackets_the_auc():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(labels * 0.3 + rng.normal(0.35, 0.2, 200), 0, 1)
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(labels, probs)
    low, high = bootstrap_auc_ci(labels, probs, samples=500)
    assert low < auc < high and 0.02 < high - low < 0.3


def test_cv_writes_fold_runs_and_out_of_fold_predictions(cv_run, palm_root):
    output, summary = cv_run
    train_files = {str(Path(p).resolve()) for p, _ in
                   PalmTrainSet(find_palm_layout(palm_root).train_dir).samples}
    splits = pd.read_csv(output / "splits.csv")
    assert set(splits["path"]) == train_files and len(splits) == len(train_files)
    for k in range(3):
        run = output / f"fold_{k}"
        assert {"config.yaml", "metrics.csv", "last.pdparams", "best.pdparams"} <= {
            p.name for p in run.iterdir()}
        train, val = pd.read_csv(run / "train.csv"), pd.read_csv(run / "val.csv")
        assert not set(train["path"]) & set(val["path"])
        assert set(train["path"]) | set(val["path"]) == train_files
        assert set(val["path"]) == set(splits.loc[splits["fold"] == k, "path"])
    oof = pd.read_csv(output / "oof_predictions.csv")
    assert sorted(oof["path"]) == sorted(train_files)  # every image exactly once
    # each image was scored by the model that did not train on it
    for _, row in oof.iterrows():
        assert row["path"] not in set(pd.read_csv(output / f"fold_{int(row['fold'])}" / "train.csv")["path"])
    folds = pd.read_csv(output / "folds.csv")
    assert len(folds) == 3 and folds["val_images"].sum() == len(train_files)
    for _, row in folds.iterrows():
        # the out-of-fold scores are those the fold's run logged for its last epoch
        trial = json.loads((output / f"fold_{int(row['fold'])}" / "trial.json").read_text())
        assert row["accuracy"] == pytest.approx(trial["final_val_accuracy"], abs=1e-6)
    pooled = summary["pooled_oof"]
    low, high = pooled["roc_auc_ci95"]
    assert low <= pooled["roc_auc"] <= high and pooled["n"] == len(train_files)
    assert json.loads((output / "summary.json").read_text())["pooled_oof"]["n"] == 24
    assert summary["fold_metrics"]["accuracy"]["mean"] == pytest.approx(folds["accuracy"].mean())
    assert (output / "cv_roc.png").stat().st_size > 0


def test_predict_val_reports_single_models_and_their_ensemble(cv_run):
    output, summary = cv_run
    models = pd.read_csv(output / "val_models.csv")
    assert list(models["model"]) == ["fold_0", "fold_1", "fold_2", "ensemble"]
    predictions = pd.read_csv(output / "val_predictions.csv")
    assert len(predictions) == 16 == summary["external"]["n"]
    accuracy = (predictions["label"] == predictions["prediction"]).mean()
    assert models.iloc[-1]["accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow
def test_same_seed_same_table_and_resume_skips_finished_folds(palm_root, tmp_path, cv_run):
    first, _ = cv_run
    output = tmp_path / "cv"
    args = _cv_args(_palm(palm_root), output, "--folds", "3")
    _cv(args)
    pd.testing.assert_frame_equal(pd.read_csv(output / "folds.csv"),
                                  pd.read_csv(first / "folds.csv"))
    # a fold killed after saving its epoch, before it was recorded as finished
    (output / "fold_1" / "trial.json").unlink()
    (output / "fold_1" / "oof.csv").unlink()
    logs = {k: (output / f"fold_{k}" / "train.log").read_text() for k in range(3)}
    before = pd.read_csv(output / "oof_predictions.csv")
    _cv(args)
    assert (output / "fold_0" / "train.log").read_text() == logs[0]  # not trained again
    assert (output / "fold_2" / "train.log").read_text() == logs[2]
    assert "resuming" in (output / "fold_1" / "train.log").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(output / "oof_predictions.csv"), before)
    with pytest.raises(BadConfig, match="folds"):
        _cv(_cv_args(_palm(palm_root), output, "--folds", "2"))


@pytest.mark.slow
def test_pool_val_on_class_folders(tmp_path):
    digits = export_digits(tmp_path / "digits", size=32, per_class=4, val_fraction=0.25)
    output = tmp_path / "cv"
    summary = _cv(["--model", "lenet5", "--train-dir", str(digits / "train"), "--val-dir",
                   str(digits / "val"), "--pool-val", "--folds", "2", "--epochs", "1",
                   "--num-workers", "0", "--cache-dir", "none", "--no-progress",
                   "--output", str(output)])
    oof = pd.read_csv(output / "oof_predictions.csv")
    assert len(oof) == 40 == oof["path"].nunique() == summary["images"]
    assert {f"probability_{d}" for d in range(10)} <= set(oof.columns)
    assert summary["classes"] == [str(d) for d in range(10)]
    assert not (output / "cv_roc.png").exists()  # ROC curves are for two classes


@pytest.mark.slow
def test_killed_cv_resumes_without_redoing_finished_folds(palm_root, tmp_path):
    output = tmp_path / "cv"
    argv = _cv_args(_palm(palm_root), output, "--folds", "2", "--epochs", "4",
                    "--image-size", "64")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "cv.py"), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (output / "fold_1" / "last.pdparams").is_file():
            assert proc.poll() is None and time.time() < deadline, "fold 1 never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (output / "fold_0" / "trial.json").is_file()
    if (output / "fold_1" / "trial.json").is_file():
        pytest.skip("fold 1 finished before it could be killed")
    fold0_log = (output / "fold_0" / "train.log").read_text()
    _cv(argv)
    assert (output / "fold_0" / "train.log").read_text() == fold0_log
    assert "resuming" in (output / "fold_1" / "train.log").read_text()
    assert len(pd.read_csv(output / "oof_predictions.csv")) == 24


def test_cv_splits_escape_and_are_read_back(tmp_path):
    samples = [(name, i % 2) for i, name in enumerate(NAMES)]
    splits = splits_table(samples, ["-neg", "+pos"], np.array([np.arange(len(NAMES)) % 2]))
    path = tmp_path / "splits.csv"
    check_same_splits(path, splits)  # writes it
    assert_no_formula_cells(path)
    check_same_splits(path, splits)  # read back: the same images and labels, not refused


@pytest.mark.parametrize("empty_class_folder", [True, False],
                         ids=["two-classes-one-empty", "one-class"])
def test_cv_on_one_class_is_refused_before_any_fold_trains(tmp_path, empty_class_folder):
    data = tmp_path / "data"
    noise_photos(data / "normal", 6)
    if empty_class_folder:  # two classes declared, images of one: main trained and said "AUC n/a"
        (data / "disease").mkdir()
    output = tmp_path / "cv"
    with pytest.raises(BadData, match=rf"^{data}: 6 images of 1 class \(only class 'normal'\); "
                                      "cross-validation needs images of at least two classes$"):
        cv_tool.parse_and_run([*TINY_TRAINING, "--train-dir", str(data), "--folds", "2",
                               "--output", str(output)])
    assert not output.exists()
