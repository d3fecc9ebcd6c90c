"""Ordinal grading metrics: a grade 0..K-1 per image (diabetic retinopathy 0-4: APTOS-2019,
IDRiD, EyePACS, Messidor-2), predicted as K grade probabilities.

The headline is quadratic weighted kappa (Cohen's kappa with quadratic weights, by which the
APTOS-2019 competition was ranked); accuracy and mean absolute error in grades come with the
K x K grade confusion matrix. Clinically a grader is reported as a referable-DR screener: the
probability of grade >= k (k = 2, "moderate or worse", by default) scored as a binary test
(AUC, sensitivity, specificity at 0.5). A grade regression has no probabilities: its grades
come from cut-points on its score (`grades_at`, tuned by `tune_cut_points`), and the score
ranks the referable split (`grade_metrics`, `grade_intervals`).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

from palm.metrics.classification import as_multiclass_inputs, binary_metrics
from palm.metrics.intervals import (DEFAULT_RESAMPLES, bootstrap_auc, percentile_interval,
                                    resample_weights)

# grade >= this is "referable" diabetic retinopathy (moderate NPDR or worse)
REFERABLE_GRADE = 2


def quadratic_kappa(y_true: Any, y_pred: Any, num_grades: int) -> float:
    """Cohen's kappa with quadratic weights over grades 0..num_grades-1 (scikit-learn's
    cohen_kappa_score(weights="quadratic")); NaN when it is undefined (one grade only in
    both truth and prediction)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(np.unique(np.r_[y_true, y_pred])) < 2:
        return float("nan")
    return float(skm.cohen_kappa_score(y_true, y_pred, labels=list(range(num_grades)),
                                       weights="quadratic"))


def expected_grade(y_prob: Any) -> np.ndarray:
    """The mean grade under each row of grade probabilities (N, K)."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    return y_prob @ np.arange(y_prob.shape[1])


def referable_probability(y_prob: Any, referable_grade: int = REFERABLE_GRADE) -> np.ndarray:
    """P(grade >= referable_grade) per image: the sum of those grades' probabilities."""
    return np.asarray(y_prob, dtype=np.float64)[:, referable_grade:].sum(axis=1)


def ordinal_metrics(y_true: Any, y_prob: Any, referable_grade: int = REFERABLE_GRADE,
                    y_pred: Any = None) -> dict[str, Any]:
    """Metrics of a K-grade model.

    Args:
        y_true: grades (N,) in 0..K-1.
        y_prob: grade probabilities (N, K).
        referable_grade: grades >= this form the positive class of the referable split.
        y_pred: the predicted grades when they are not the argmax of `y_prob` (a CORAL
            model's count of P(grade > k) > 0.5).

    Returns:
        `grade_metrics` of the predicted grades, with P(grade >= referable_grade) scored at
        0.5 as the referable split.
    """
    y, p = as_multiclass_inputs(y_true, y_prob)
    pred = p.argmax(axis=1) if y_pred is None else y_pred
    return grade_metrics(y, pred, p.shape[1], referable_probability(p, referable_grade),
                         referable_grade)


def grade_metrics(y_true: Any, y_pred: Any, num_grades: int, referable_score: Any,
                  referable_grade: int = REFERABLE_GRADE,
                  referable_threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of predicted grades, whatever the model gave besides them (probabilities, or
    a regression's score alone).

    Args:
        y_true, y_pred: true and predicted grades (N,) in 0..num_grades-1.
        referable_score: (N,) what ranks the images as referable: P(grade >= referable_grade)
            or a regression's score.
        referable_threshold: referable when the score is >= this (0.5 for a probability, the
            cut-point below `referable_grade` for a score).

    Returns:
        {"qwk", "accuracy", "mae" (mean |predicted - true| in grades), "confusion_matrix"
        (K x K, rows: true grade), "n", "num_grades", "referable_grade", "referable":
        {roc_auc, sensitivity, specificity, ... of the score at the threshold}}.
    """
    y, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    k = int(num_grades)
    if not 1 <= referable_grade < k:
        raise ValueError(f"referable_grade must lie in 1..{k - 1} for {k} grades; got {referable_grade}")
    referable = binary_metrics((y >= referable_grade).astype(np.int64),
                               np.asarray(referable_score, dtype=np.float64), referable_threshold)
    return {
        "qwk": quadratic_kappa(y, pred, k),
        "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
        "mae": float(np.mean(np.abs(pred - y))) if len(y) else float("nan"),
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=list(range(k))).tolist(),
        "n": int(len(y)),
        "num_grades": k,
        "referable_grade": referable_grade,
        "referable": referable,
    }


def grades_at(scores: Any, cut_points: Any) -> np.ndarray:
    """Grades of regression scores: the number of (sorted) cut-points each score reaches."""
    return np.digitize(np.asarray(scores, dtype=np.float64), np.sort(np.asarray(cut_points)))


def default_cut_points(num_grades: int) -> np.ndarray:
    """k - 0.5 for k = 1..K-1: each score rounded to the nearest grade."""
    return np.arange(1, num_grades) - 0.5


def tune_cut_points(scores: Any, y_true: Any, num_grades: int, start: Any = None,
                    candidates: int = 200, rounds: int = 10) -> np.ndarray:
    """Sorted cut-points that maximise the quadratic kappa of `grades_at(scores, cuts)`.

    Coordinate search from `start` (default `default_cut_points`): each cut in turn moves to
    the best of `candidates` score quantiles between its neighbours, until a round improves
    nothing. Kappa is a step function of the cut-points, flat almost everywhere, where
    SciPy's Nelder-Mead (the APTOS-2019 "optimized rounder") stalls at its start; a move is
    taken only when it raises the kappa, so the result never scores below `start` on these
    images, and the neighbours bound each move, so the cut-points stay sorted.
    """
    y = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    cuts = np.sort(np.asarray(default_cut_points(num_grades) if start is None else start,
                              dtype=np.float64))
    grid = np.unique(np.quantile(scores, np.linspace(0, 1, candidates))) if len(scores) else []

    every_image = np.ones((1, len(y)))

    def kappa(trial: np.ndarray) -> float:  # cohen_kappa_score's value, without its checks
        value = kappa_rows(y, grades_at(scores, trial), num_grades, every_image)[0]
        return -math.inf if math.isnan(value) else float(value)

    best = kappa(cuts)
    for _ in range(rounds):
        improved = False
        for j in range(len(cuts)):
            low = cuts[j - 1] if j else -math.inf
            high = cuts[j + 1] if j + 1 < len(cuts) else math.inf
            for value in (v for v in grid if low <= v <= high):
                trial = cuts.copy()
                trial[j] = value
                score = kappa(trial)
                if score > best:
                    best, cuts, improved = score, trial, True
        if not improved:
            break
    return cuts


def kappa_rows(y: np.ndarray, pred: np.ndarray, num_grades: int, weights: np.ndarray
               ) -> np.ndarray:
    """Quadratic kappa of each row of image `weights` (R, N) (bootstrap resamples as counts):
    1 - sum(W * O) / sum(W * E) with O the weighted confusion matrix and E its expectation
    from the margins, as cohen_kappa_score computes it."""
    grades = np.arange(num_grades)
    penalty = (grades[:, None] - grades[None, :]) ** 2 / (num_grades - 1) ** 2
    cell = y * num_grades + pred  # each image's confusion-matrix cell
    observed = np.stack([weights[:, cell == c].sum(1) for c in range(num_grades ** 2)], 1)
    observed = observed.reshape(-1, num_grades, num_grades)
    total = observed.sum((1, 2), keepdims=True)
    expected = observed.sum(2, keepdims=True) * observed.sum(1, keepdims=True) / total
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (penalty * observed).sum((1, 2)) / (penalty * expected).sum((1, 2))


def ordinal_intervals(y_true: Any, y_prob: Any, referable_grade: int = REFERABLE_GRADE,
                      resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      y_pred: Any = None) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals of the quadratic kappa (images resampled) and of
    the referable AUC (stratified on referable or not) of grade probabilities."""
    y, p = as_multiclass_inputs(y_true, y_prob)
    pred = p.argmax(axis=1) if y_pred is None else y_pred
    return grade_intervals(y, pred, p.shape[1], referable_probability(p, referable_grade),
                           referable_grade, resamples, seed)


def grade_intervals(y_true: Any, y_pred: Any, num_grades: int, referable_score: Any,
                    referable_grade: int = REFERABLE_GRADE, resamples: int = DEFAULT_RESAMPLES,
                    seed: int = 0) -> dict[str, list[float]]:
    """`ordinal_intervals` of predicted grades and a referable score (`grade_metrics`)."""
    y, pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    kappas = kappa_rows(y, pred, num_grades, resample_weights(len(y), resamples, seed))
    referable = (y >= referable_grade).astype(np.int64)
    return {"qwk": percentile_interval(kappas, limits=(-1.0, 1.0)),
            "referable_roc_auc": bootstrap_auc(referable,
                                               np.asarray(referable_score, dtype=np.float64),
                                               resamples, seed)}
