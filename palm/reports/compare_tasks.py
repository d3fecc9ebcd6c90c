"""`palm compare` for graders (ordinal) and multi-label models: reading their evaluation
predictions, the leaderboard and the pairwise tests of each task.

Ordinal: quadratic kappa (percentile-bootstrap interval), MAE, accuracy and the referable
AUC (P(grade >= referable grade), stratified bootstrap interval) per model; per pair the
kappa difference (paired bootstrap: interval and p) and DeLong's test of the referable AUCs.
Multi-label: macro AUC (bootstrap of images), micro AUC, mAP and each label's AUC per model;
per pair the macro-AUC difference (paired bootstrap) and, per label, DeLong's test.

The task of an input comes from the metrics.json beside its predictions.csv (eval writes
`task`, or a grader's `num_grades`), else from the CSV's columns (`label_<name>` columns: a
multi-label model; `expected_grade`: a grader). palm.reports.compare calls these and writes
the files; binary and multi-class models stay with it.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from palm import metrics as M
from palm import predictions as P
from palm.errors import BadData
from palm.io_utils import read_csv

ORDINAL, MULTILABEL = "ordinal", "multilabel"
TASKS = (ORDINAL, MULTILABEL)
METRICS = "metrics.json"
# a metrics.json of palm's evaluation is a few kB; far more is not one
MAX_METRICS_BYTES = 5_000_000


@dataclass
class TaskPredictions:
    """One model's evaluation on the shared images, sorted by file.

    labels, y_prob, y_pred: grades (N,), grade probabilities (N, K; (N, 0) for a grade
    regression, which has none) and predicted grades (N,) of a grader; or labels (N, L),
    probabilities (N, L) and decisions (N, L) of a multi-label model. names: the grades
    ("0".."K-1") or the label names. referable_score: what ranks a grader's images as
    referable, P(grade >= referable grade) or a regression's score (`expected_grade`).
    """

    name: str
    source: Path
    task: str
    names: list[str]
    files: np.ndarray
    labels: np.ndarray
    y_prob: np.ndarray
    y_pred: np.ndarray
    referable_grade: int = M.REFERABLE_GRADE
    referable_score: np.ndarray | None = None


def _evaluation_record(csv_path: Path) -> dict:
    """The metrics.json beside a predictions CSV ({} when there is none or it is unusable)."""
    path = csv_path.parent / METRICS
    try:
        if not path.is_file() or path.stat().st_size > MAX_METRICS_BYTES:
            return {}
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def task_of(csv_path: Path) -> str:
    """binary, multiclass, ordinal or multilabel: the task of an evaluation's predictions."""
    record = _evaluation_record(csv_path)
    if record.get("task") in (*TASKS, "binary", "multiclass"):
        return str(record["task"])
    if "num_grades" in record:
        return ORDINAL
    try:
        columns = [str(c) for c in pd.read_csv(csv_path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return "binary"  # the binary reader names what is wrong with the file
    if any(c.startswith(P.PREDICTION_PREFIX) for c in columns):
        return MULTILABEL
    if P.EXPECTED_GRADE in columns:
        return ORDINAL
    return "multiclass" if P.class_probability_columns(columns) else "binary"


def common_task(paths: Sequence[Path]) -> str:
    """The one task of all inputs; BadData naming two inputs of different tasks."""
    tasks = [task_of(p) for p in paths]
    for path, task in zip(paths[1:], tasks[1:]):
        if task != tasks[0]:
            raise BadData(f"{paths[0]} is a {tasks[0]} model's evaluation and {path} a "
                          f"{task} one; compare models of one task")
    return tasks[0]


def sorted_frame(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """A predictions CSV's rows sorted by path, so two models' rows pair up.

    Raises:
        BadData: no rows, or one image listed twice.
    """
    if frame.empty:
        raise BadData(f"{path}: no predictions (only a header)")
    # one image spelt two ways (a/./b.jpg, a/b.jpg, /data/a/b.jpg) is still one image: eval
    # wrote a relative path as its list gave it, from where it ran, and compare usually runs
    # there too
    frame[P.PATH] = [os.path.abspath(f) for f in frame[P.PATH].astype(str)]
    repeated = frame[P.PATH].duplicated()
    if repeated.any():
        raise BadData(f"{path}: image {frame[P.PATH][repeated].iloc[0]!r} appears more than once")
    return frame.sort_values(P.PATH, kind="stable")


def _integers(path: Path, frame: pd.DataFrame, column: str, allowed: Sequence[int]) -> np.ndarray:
    """Column values as int64, BadData naming the first row outside `allowed`."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = ~values.isin(list(allowed))
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        value = frame[column].iloc[position]
        value = value.item() if isinstance(value, np.generic) else value
        # the frame is sorted by path; its index is the row's place in the file
        raise BadData(f"{path}: row {int(frame.index[position]) + 1}, column {column}: "
                      f"{value!r} is not one of {min(allowed)}..{max(allowed)}")
    return values.to_numpy(np.int64)


def _probabilities(path: Path, frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise BadData(f"{path}: columns {', '.join(columns)} must hold probabilities in [0, 1]")
    return values


def read_ordinal(path: Path, name: str) -> TaskPredictions:
    """A grader's evaluation predictions (label, probability_<grade> or, for a grade
    regression, expected_grade, and prediction); the referable grade is its metrics.json's
    (2 without one).

    Raises:
        BadData: no labels, grade columns other than probability_0..K-1, repeated images,
            grades or probabilities out of range (naming the file, row and value).
    """
    frame = P.read_predictions_csv(path, labelled=True)
    record = _evaluation_record(path)
    grades = P.class_names_from_columns(frame.columns)
    regression = not grades and P.EXPECTED_GRADE in frame.columns
    if regression:  # its grades are those of the model eval recorded
        grades = [str(g) for g in range(int(record.get("num_grades") or 0))]
    if len(grades) < 3 or grades != [str(g) for g in range(len(grades))]:
        raise BadData(f"{path}: a grader's predictions need columns probability_0.."
                      f"probability_<K-1> (K >= 3), or expected_grade with num_grades in its "
                      f"metrics.json; found {grades}")
    frame = sorted_frame(path, frame)
    k = len(grades)
    referable = record.get("referable_grade", M.REFERABLE_GRADE)
    if not isinstance(referable, int) or isinstance(referable, bool) or not 1 <= referable < k:
        raise BadData(f"{path.parent / METRICS}: referable_grade {referable!r} is not one of "
                      f"1..{k - 1}")
    if regression:
        y_prob, score = np.zeros((len(frame), 0)), _scores(path, frame, P.EXPECTED_GRADE)
    else:
        y_prob = _probabilities(path, frame, [f"{P.PROBABILITY_PREFIX}{g}" for g in grades])
        score = M.referable_probability(y_prob, referable)
    return TaskPredictions(name, path, ORDINAL, grades, frame[P.PATH].to_numpy(),
                           _integers(path, frame, P.LABEL, range(k)), y_prob,
                           _integers(path, frame, P.PREDICTION, range(k)), referable, score)


def _scores(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise BadData(f"{path}: column {column} must hold finite numbers")
    return values


def read_multilabel(path: Path, name: str) -> TaskPredictions:
    """A multi-label model's evaluation predictions (label_, probability_, prediction_ per
    label).

    Raises:
        BadData: no path column, a label without all three columns, repeated images, labels
            or decisions other than 0/1, probabilities outside [0, 1].
    """
    try:
        frame = read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise BadData(f"{path}: not a readable CSV ({' '.join(str(e).split())})") from None
    columns = [str(c) for c in frame.columns]
    names = [c.removeprefix(P.PREDICTION_PREFIX) for c in columns
             if c.startswith(P.PREDICTION_PREFIX)]
    needed = [P.PATH] + [f"{prefix}{n}" for n in names
                         for prefix in (P.LABEL_PREFIX, P.PROBABILITY_PREFIX)]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise BadData(f"{path}: lacks column(s) {', '.join(missing)}; compare needs a "
                      "multi-label evaluation's predictions (with labels)")
    frame = sorted_frame(path, frame)
    labels = np.stack([_integers(path, frame, f"{P.LABEL_PREFIX}{n}", (0, 1)) for n in names], 1)
    decisions = np.stack([_integers(path, frame, f"{P.PREDICTION_PREFIX}{n}", (0, 1))
                          for n in names], 1)
    probs = _probabilities(path, frame, [f"{P.PROBABILITY_PREFIX}{n}" for n in names])
    return TaskPredictions(name, path, MULTILABEL, names, frame[P.PATH].to_numpy(), labels,
                           probs, decisions)


def read_task_predictions(path: Path, name: str, task: str) -> TaskPredictions:
    return read_ordinal(path, name) if task == ORDINAL else read_multilabel(path, name)


def check_same_task_setup(models: Sequence[TaskPredictions]) -> None:
    """BadData (one line) unless every model has the same grades (and referable grade) or
    the same labels in the same order."""
    first = models[0]
    for other in models[1:]:
        if other.names != first.names:
            what = "grades" if first.task == ORDINAL else "labels"
            raise BadData(f"{first.source} and {other.source} have different {what}: "
                          f"{first.names} and {other.names}")
        if other.referable_grade != first.referable_grade:
            raise BadData(f"{first.source} and {other.source} split referable at different "
                          f"grades ({first.referable_grade} and {other.referable_grade})")


def _referable(m: TaskPredictions) -> tuple[np.ndarray, np.ndarray]:
    """(referable or not, its referable score) per image of a grader."""
    return (m.labels >= m.referable_grade).astype(np.int64), m.referable_score


def roc_curves(models: Sequence[TaskPredictions]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, truth, score) per model for the ROC overlay: the referable split of graders;
    none for multi-label models (one curve per label and model would not read)."""
    return [(m.name, *_referable(m)) for m in models if m.task == ORDINAL]


def ordinal_leaderboard(models: Sequence[TaskPredictions], resamples: int,
                        seed: int) -> pd.DataFrame:
    """One row per grader, best quadratic kappa first."""
    rows = []
    for m in models:
        k = len(m.names)
        # a regression's score has no 0.5 cut: only its ranking (AUC) is compared here
        metrics = M.grade_metrics(m.labels, m.y_pred, k, m.referable_score, m.referable_grade)
        ci = M.grade_intervals(m.labels, m.y_pred, k, m.referable_score, m.referable_grade,
                               resamples, seed)
        referable, _ = _referable(m)
        rows.append({"model": m.name, "images": len(m.labels), "grades": k,
                     "referable_grade": m.referable_grade,
                     "referable_images": int(referable.sum()),
                     "qwk": metrics["qwk"], "qwk_low": ci["qwk"][0], "qwk_high": ci["qwk"][1],
                     "mae": metrics["mae"], "accuracy": metrics["accuracy"],
                     "referable_roc_auc": metrics["referable"]["roc_auc"],
                     "referable_roc_auc_low": ci["referable_roc_auc"][0],
                     "referable_roc_auc_high": ci["referable_roc_auc"][1]})
    return pd.DataFrame(rows).sort_values("qwk", ascending=False, kind="stable")


def ordinal_pairs(models: Sequence[TaskPredictions], resamples: int, seed: int) -> pd.DataFrame:
    """Per pair (a, b): kappa(a) - kappa(b) (paired bootstrap interval and p) and the
    referable AUC difference (DeLong p, paired bootstrap interval)."""
    rows = []
    for a, b in itertools.combinations(models, 2):
        kappa = M.paired_bootstrap_kappa_difference(a.labels, a.y_pred, b.y_pred, len(a.names),
                                                    resamples, seed)
        referable, score_a = _referable(a)
        _, score_b = _referable(b)
        delong = M.delong_test(referable, score_a, score_b)
        low, high = M.paired_bootstrap_auc_difference(referable, score_a, score_b,
                                                      resamples, seed)
        rows.append({"model_a": a.name, "model_b": b.name,
                     "qwk_difference": kappa["difference"], "qwk_difference_low": kappa["ci"][0],
                     "qwk_difference_high": kappa["ci"][1], "qwk_bootstrap_p": kappa["p"],
                     "referable_auc_difference": delong["difference"],
                     "referable_difference_low": low, "referable_difference_high": high,
                     "referable_delong_p": delong["p"]})
    return pd.DataFrame(rows)


def multilabel_leaderboard(models: Sequence[TaskPredictions], resamples: int,
                           seed: int) -> pd.DataFrame:
    """One row per model, best macro AUC first; each label's AUC in `roc_auc_<label>`."""
    rows = []
    for m in models:
        metrics = M.multilabel_metrics(m.labels, m.y_prob, m.names)
        macro_ci = M.multilabel_intervals(m.labels, m.y_prob, resamples, seed)["macro_roc_auc"]
        rows.append({"model": m.name, "images": len(m.labels),
                     "macro_roc_auc": metrics["macro_roc_auc"], "macro_roc_auc_low": macro_ci[0],
                     "macro_roc_auc_high": macro_ci[1], "micro_roc_auc": metrics["micro_roc_auc"],
                     "map": metrics["map"],
                     **{f"roc_auc_{n}": metrics["per_label"][n]["roc_auc"] for n in m.names}})
    return pd.DataFrame(rows).sort_values("macro_roc_auc", ascending=False, kind="stable")


def multilabel_pairs(models: Sequence[TaskPredictions], resamples: int,
                     seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs: per pair the macro-AUC difference with its paired bootstrap interval and p;
    per label: per pair and label DeLong's test of the two AUCs)."""
    pairs, per_label = [], []
    for a, b in itertools.combinations(models, 2):
        macro = M.paired_bootstrap_macro_auc_difference(a.labels, a.y_prob, b.y_prob,
                                                        resamples, seed)
        pairs.append({"model_a": a.name, "model_b": b.name,
                      "macro_auc_difference": macro["difference"],
                      "macro_difference_low": macro["ci"][0],
                      "macro_difference_high": macro["ci"][1], "macro_bootstrap_p": macro["p"]})
        for row in M.multilabel_delong(a.labels, a.y_prob, b.y_prob, a.names):
            per_label.append({"model_a": a.name, "model_b": b.name, "label": row["label"],
                              "auc_a": row["auc_a"], "auc_b": row["auc_b"],
                              "auc_difference": row["difference"], "delong_p": row["p"],
                              "undefined": row["undefined"] or ""})
    return pd.DataFrame(pairs), pd.DataFrame(per_label)
