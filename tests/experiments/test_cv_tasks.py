"""Cross-validation of graders (folds by grade; quadratic kappa per fold and pooled) and of
multi-label models (iterative stratification; macro AUC per fold and pooled), checked
against scikit-learn on the CV's own out-of-fold predictions."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from palm.cli import cv as cv_tool
from palm.errors import BadData
from tests.task_runs import GRADES, LABELS, graded_csvs, multilabel_csvs

GRADES_NAMES = [str(g) for g in range(GRADES)]


def _cv_args(root, output, *extra):
    return ["--model", "lenet", "--train-csv", str(root / "train.csv"), "--val-csv",
            str(root / "val.csv"), "--image-size", "32", "--epochs", "1", "--batch-size", "8",
            "--num-workers", "0", "--cache-dir", "none", "--seed", "0", "--device", "cpu",
            "--no-progress", "--folds", "3", "--output", str(output), *extra]


@pytest.fixture(scope="module")
def ordinal_cv(tmp_path_factory):
    root = graded_csvs(tmp_path_factory.mktemp("graded"), n_train=30, n_val=10)
    output = root / "cv"
    return output, cv_tool.parse_and_run(_cv_args(root, output, "--task", "ordinal",
                                                  "--predict-val"))


@pytest.fixture(scope="module")
def multilabel_cv(tmp_path_factory):
    root = multilabel_csvs(tmp_path_factory.mktemp("multilabel"), n_train=32, n_val=8)
    output = root / "cv"
    return output, cv_tool.parse_and_run(_cv_args(root, output, "--task", "multilabel",
                                                  "--label-columns", ",".join(LABELS),
                                                  "--predict-val"))


def _qwk(frame):
    return skm.cohen_kappa_score(frame["label_index"], frame["prediction"].astype(int),
                                 weights="quadratic")


def test_ordinal_folds_keep_grades_and_report_kappa_per_fold_and_pooled(ordinal_cv):
    output, summary = ordinal_cv
    splits = pd.read_csv(output / "splits.csv")
    counts = pd.crosstab(splits["fold"], splits["label"]).to_numpy()
    assert (counts.max(0) - counts.min(0) <= 1).all()  # 6 per grade over 3 folds: 2 each
    oof = pd.read_csv(output / "oof_predictions.csv")
    folds = pd.read_csv(output / "folds.csv")
    per_fold = [_qwk(part) for _, part in oof.groupby("fold")]
    np.testing.assert_allclose(folds.sort_values("fold")["qwk"], per_fold)
    assert summary["task"] == "ordinal"
    assert summary["fold_metrics"]["qwk"]["mean"] == pytest.approx(np.mean(per_fold))
    assert summary["fold_metrics"]["qwk"]["sd"] == pytest.approx(np.std(per_fold, ddof=1))
    pooled = summary["pooled_oof"]
    assert pooled["qwk"] == pytest.approx(_qwk(oof))
    assert pooled["mae"] == pytest.approx(skm.mean_absolute_error(oof["label_index"],
                                                                   oof["prediction"].astype(int)))
    low, high = pooled["qwk_ci95"]
    assert low <= pooled["qwk"] <= high
    assert json.loads((output / "summary.json").read_text())["pooled_oof"]["n"] == 30
    external = pd.read_csv(output / "val_models.csv")
    assert "qwk" in external.columns and list(external["model"])[-1] == "ensemble"


def test_multilabel_folds_are_iteratively_stratified_and_report_macro_auc(multilabel_cv):
    output, summary = multilabel_cv
    splits = pd.read_csv(output / "splits.csv")
    positives = splits.groupby("fold")[LABELS].sum().to_numpy()
    assert (positives.max(0) - positives.min(0) <= 1).all()
    oof = pd.read_csv(output / "oof_predictions.csv")
    truth = [f"label_{n}" for n in LABELS]
    probs = [f"probability_{n}" for n in LABELS]
    folds = pd.read_csv(output / "folds.csv").sort_values("fold")
    per_fold = [skm.roc_auc_score(part[truth], part[probs]) for _, part in oof.groupby("fold")]
    np.testing.assert_allclose(folds["macro_roc_auc"], per_fold, atol=1e-6)
    assert summary["fold_metrics"]["macro_roc_auc"]["mean"] == pytest.approx(np.mean(per_fold), abs=1e-6)
    pooled = summary["pooled_oof"]
    assert pooled["macro_roc_auc"] == pytest.approx(skm.roc_auc_score(oof[truth], oof[probs]), abs=1e-6)
    assert pooled["map"] == pytest.approx(skm.average_precision_score(oof[truth], oof[probs]), abs=1e-6)
    low, high = pooled["macro_roc_auc_ci95"]
    assert low <= pooled["macro_roc_auc"] <= high
    assert (oof[[f"prediction_{n}" for n in LABELS]].to_numpy()
            == (oof[probs].to_numpy() >= 0.5)).all()
    external = pd.read_csv(output / "val_predictions.csv")
    assert {f"probability_{n}" for n in LABELS} <= set(external.columns)


def test_multilabel_cv_without_any_scoreable_label_is_refused(tmp_path):
    root = multilabel_csvs(tmp_path / "ml", n_train=6, n_val=4)
    table = pd.read_csv(root / "train.csv")
    table[LABELS] = 1
    table.to_csv(root / "train.csv", index=False)
    with pytest.raises(BadData, match="none of the labels .* has both positive and negative"):
        cv_tool.parse_and_run(_cv_args(root, tmp_path / "cv", "--task", "multilabel",
                                       "--label-columns", ",".join(LABELS)))


def test_a_resumed_multilabel_cv_checks_its_saved_splits(tmp_path):
    from palm.data.splits import kfold_assignment
    from palm.errors import BadConfig
    from palm.experiments.cv import check_same_splits, splits_table
    samples = [(f"/data/{i}.png", ((i >> 0) & 1, (i >> 1) & 1)) for i in range(8)]
    labels = np.array([y for _, y in samples])
    splits = splits_table(samples, ["a", "b"], kfold_assignment(labels, 2), "multilabel")
    assert list(splits.columns) == ["path", "a", "b", "repeat", "fold"]
    check_same_splits(tmp_path / "splits.csv", splits)
    check_same_splits(tmp_path / "splits.csv", splits)  # the same data: resumes
    changed = splits.copy()
    changed.loc[0, "a"] = 1 - changed.loc[0, "a"]
    with pytest.raises(BadConfig, match="splits.csv: the data differ"):
        check_same_splits(tmp_path / "splits.csv", changed)


def test_an_aptos_download_is_pooled_as_grades(tmp_path):
    from palm import config
    from palm.data.synth_grading import make_grading_dataset
    from palm.experiments.cv import labelled_pool
    root = tmp_path / "aptos"
    make_grading_dataset(root, 40, 64)
    cfg = config.validate_config({**config.DEFAULTS, "data_root": str(root), "cache_dir": None})
    samples, classes, data_task = labelled_pool(cfg, pool_val=False)
    grades = pd.read_csv(root / "train.csv")["diagnosis"]
    assert data_task == "ordinal" and classes == GRADES_NAMES
    assert sorted(y for _, y in samples) == sorted(grades)
