"""Classification metrics: pure functions of numpy arrays, backed by scikit-learn.

Binary tasks (PALM: PM vs non-PM) pass `y_prob` of shape (N,) or (N, 1): the probability of
the positive class. Multi-class tasks pass (N, K) class probabilities (rows sum to 1).

Undefined values are NaN, never an exception or a silent 0:
- ROC AUC / average precision when only one class is present;
- recall (sensitivity) or specificity when the class it is a rate of is absent;
- F1 when a class is neither present nor predicted.
Precision of a class that is never predicted is 0 (scikit-learn's convention: a model that
never says "PM" gets no credit for precision). Macro averages skip NaN classes.

Beyond point estimates (SciPy-backed, vectorised): Wilson and stratified-bootstrap 95 %
intervals, DeLong's AUC variance and paired test, McNemar's exact test, operating points,
calibration errors (ECE, adaptive ECE, MCE, Brier) and temperature scaling.

Example:
    >>> binary_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]))["accuracy"]
    0.6666666666666666
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import optimize, special, stats
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from palm.errors import BadConfig, BadData


def as_binary_inputs(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten binary inputs: labels in {0, 1}, probabilities (N,) or (N, 1).

    Raises:
        ValueError: shapes disagree or labels are not 0/1 (message names the shapes/values).
    """
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim == 2 and y_prob.shape[1] == 1:
        y_prob = y_prob[:, 0]
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.ndim != 1 or y_prob.ndim != 1 or len(y_true) != len(y_prob):
        raise ValueError(
            f"binary metrics need y_true (N,) and y_prob (N,) or (N, 1); "
            f"got y_true {y_true.shape} and y_prob {np.shape(y_prob)}"
        )
    bad = np.setdiff1d(np.unique(y_true), [0, 1])
    if bad.size:
        raise ValueError(f"binary labels must be 0 or 1; found {bad[:5].tolist()}")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob contains NaN or inf")
    return y_true.astype(np.int64), y_prob


def as_multiclass_inputs(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate multi-class inputs: integer labels (N,) in [0, K) and probabilities (N, K)."""
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 1 or y_prob.ndim != 2 or len(y_true) != len(y_prob) or y_prob.shape[1] < 2:
        raise ValueError(
            f"multi-class metrics need y_true (N,) and y_prob (N, K) with K >= 2; "
            f"got y_true {y_true.shape} and y_prob {y_prob.shape}"
        )
    k = y_prob.shape[1]
    if y_true.size and (y_true.min() < 0 or y_true.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}); found {y_true.min()}..{y_true.max()}")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob contains NaN or inf")
    return y_true.astype(np.int64), y_prob


def _safe_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present."""
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(skm.roc_auc_score(y_true, y_score))


def roc_auc(y_true: Any, y_prob: Any) -> float:
    """Binary ROC AUC of the positive-class probability; NaN if only one class is present."""
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    return _safe_auc(y_true, y_prob)


def average_precision(y_true: Any, y_prob: Any) -> float:
    """Binary average precision (area under the PR curve, step-wise); NaN without both classes."""
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(skm.average_precision_score(y_true, y_prob))


def binary_metrics(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, Any]:
    """All binary metrics at `threshold` (positive when probability >= threshold).

    Returns:
        dict with accuracy, precision, recall, sensitivity (= recall), specificity, f1,
        roc_auc, average_precision, threshold, n, tp, fp, tn, fn and confusion_matrix
        [[tn, fp], [fn, tp]] (rows: true label, columns: prediction).
    """
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    y_pred = (y_prob >= threshold).astype(np.int64)
    cm = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        precision = skm.precision_score(y_true, y_pred, labels=[0, 1], zero_division=0)
        recall = skm.recall_score(y_true, y_pred, labels=[0, 1], zero_division=np.nan)
        specificity = skm.recall_score(
            y_true, y_pred, labels=[0, 1], pos_label=0, zero_division=np.nan
        )
        f1 = skm.f1_score(y_true, y_pred, labels=[0, 1], zero_division=np.nan)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "sensitivity": float(recall),
        "specificity": float(specificity),
        "f1": float(f1),
        "roc_auc": _safe_auc(y_true, y_prob),
        "average_precision": average_precision(y_true, y_prob),
        "threshold": float(threshold),
        "n": int(len(y_true)),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "confusion_matrix": cm.tolist(),
    }


def youden_threshold(y_true: Any, y_prob: Any) -> float:
    """The threshold maximizing Youden's J = sensitivity + specificity - 1 on this data.

    Ties go to the highest threshold (the first in scikit-learn's ROC order).

    Raises:
        ValueError: only one class is present, so J is undefined.
    """
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    if len(np.unique(y_true)) < 2:
        raise BadData("Youden threshold needs both classes in y_true; found one")
    fpr, tpr, thresholds = skm.roc_curve(y_true, y_prob)
    # thresholds[0] is +inf (nothing predicted positive, J = 0): never the answer
    best = 1 + int(np.argmax((tpr - fpr)[1:]))
    return float(thresholds[best])


def multiclass_metrics(y_true: Any, y_prob: Any) -> dict[str, Any]:
    """Multi-class metrics with argmax predictions.

    Returns:
        dict with accuracy, precision/recall/f1 (macro), roc_auc (macro one-vs-rest over
        classes; NaN unless every class is present with some other class), per-class
        `roc_auc_per_class`, n, num_classes and the KxK confusion_matrix (rows: truth).
    """
    y_true, y_prob = as_multiclass_inputs(y_true, y_prob)
    k = y_prob.shape[1]
    labels = list(range(k))
    y_pred = y_prob.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        precision = skm.precision_score(
            y_true, y_pred, labels=labels, average="macro", zero_division=0
        )
        recall = skm.recall_score(
            y_true, y_pred, labels=labels, average="macro", zero_division=np.nan
        )
        f1 = skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=np.nan)
    per_class_auc = [_safe_auc((y_true == c).astype(np.int64), y_prob[:, c]) for c in labels]
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        # macro one-vs-rest, as scikit-learn's roc_auc_score(multi_class="ovr"), defined
        # only when every class has positives and negatives
        "roc_auc": float(np.mean(per_class_auc)),
        "roc_auc_per_class": per_class_auc,
        "n": int(len(y_true)),
        "num_classes": k,
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def is_binary_output(y_prob: Any) -> bool:
    """True for (N,) or (N, 1) probabilities (one logit), False for (N, K>=2)."""
    shape = np.shape(y_prob)
    return len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)


def classification_metrics(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, Any]:
    """`binary_metrics` for one-logit outputs, `multiclass_metrics` for (N, K) outputs."""
    if is_binary_output(y_prob):
        return binary_metrics(y_true, y_prob, threshold)
    return multiclass_metrics(y_true, y_prob)


def predict_labels(y_prob: Any, threshold: float = 0.5) -> np.ndarray:
    """Predicted class indices: prob >= threshold for binary, argmax for multi-class."""
    y_prob = np.asarray(y_prob)
    if is_binary_output(y_prob):
        return (y_prob.reshape(-1) >= threshold).astype(np.int64)
    return y_prob.argmax(axis=1).astype(np.int64)


# ------------------------------------------------------------------ confidence intervals
#
# Proportions (sensitivity, specificity, accuracy, PPV, NPV) get Wilson score intervals.
# AUC, AP and F1 get a stratified percentile bootstrap: positives and negatives are resampled
# separately so every resample has both classes (the case counts are fixed by design in a
# diagnostic study), all resamples at once as index matrices. AUC also gets DeLong's
# variance (fast midrank algorithm of Sun & Xu 2014), which the paired test between two
# models needs.

DEFAULT_RESAMPLES = 2000
ECE_BINS = 15


def wilson_interval(successes: Any, trials: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval for successes/trials (arrays broadcast); NaN where trials is 0.

    Equals `scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")`.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    # all or none: the bound is exactly 1 (or 0), which floating point misses by an ulp
    low, high = np.where(k == 0, 0.0, low), np.where(k == n, 1.0, high)
    low, high = np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def _split_classes(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return y_prob[y_true == 1], y_prob[y_true == 0]


def stratified_resamples(n_pos: int, n_neg: int, resamples: int,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index matrices (resamples, n_pos) and (resamples, n_neg): draws with replacement
    within each class."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, n_pos, (resamples, n_pos)),
            rng.integers(0, n_neg, (resamples, n_neg)))


def _histograms(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, how many positives and negatives have each distinct score.

    Returns (pos_counts (B, U), neg_counts (B, U), values (U,) ascending) for score rows
    pos (B, m) and neg (B, n).
    """
    values, inverse = np.unique(np.concatenate([pos, neg], axis=1), return_inverse=True)
    inverse = inverse.reshape(len(pos), -1)
    m = pos.shape[1]
    return (*_rank_histograms(inverse[:, :m], inverse[:, m:], len(values)), values)


def _rank_histograms(pos_ranks: np.ndarray, neg_ranks: np.ndarray,
                     u: int) -> tuple[np.ndarray, np.ndarray]:
    """Histograms (B, u) of rows of dense score ranks in [0, u). Resamples draw from the
    same cases, so u is at most their number of distinct scores: O(B (m + n + u))."""
    rows = len(pos_ranks)
    offsets = np.arange(rows)[:, None] * u

    def count(ranks: np.ndarray) -> np.ndarray:
        return np.bincount((ranks + offsets).ravel(), minlength=rows * u).reshape(rows, u)

    return count(pos_ranks), count(neg_ranks)


def _resampled_histograms(y_true: np.ndarray, y_prob: np.ndarray, resamples: int, seed: int):
    """Class histograms (resamples, U) of stratified bootstrap resamples, and the values."""
    values, inverse = np.unique(y_prob, return_inverse=True)
    pos, neg = inverse[y_true == 1], inverse[y_true == 0]
    pi, ni = stratified_resamples(len(pos), len(neg), resamples, seed)
    return (*_rank_histograms(pos[pi], neg[ni], len(values)), values)


def _auc_from_counts(hp: np.ndarray, hn: np.ndarray) -> np.ndarray:
    m, n = hp.sum(axis=1), hn.sum(axis=1)
    below = np.cumsum(hn, axis=1) - hn  # negatives scored lower than each distinct score
    return (hp * (below + 0.5 * hn)).sum(axis=1) / (m * n)


def auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC of each row: pos (B, m) and neg (B, n) scores (ties count one half)."""
    return _auc_from_counts(*_histograms(pos, neg)[:2])


def _descending_counts(hp: np.ndarray, hn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives when the threshold steps down through the distinct scores."""
    return np.cumsum(hp[:, ::-1], axis=1), np.cumsum(hn[:, ::-1], axis=1)


def average_precision_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision of each row, as scikit-learn's `average_precision_score`: the
    positives of each distinct score contribute the precision at that threshold."""
    return _ap_from_counts(*_histograms(pos, neg)[:2])


def _ap_from_counts(hp: np.ndarray, hn: np.ndarray) -> np.ndarray:
    tp, fp = _descending_counts(hp, hn)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    return (hp[:, ::-1] * precision).sum(axis=1) / hp.sum(axis=1)


def f1_rows(pos: np.ndarray, neg: np.ndarray, threshold: float) -> np.ndarray:
    """F1 of the decisions score >= threshold in each row (NaN when nothing is predicted
    positive and there are no positives)."""
    hp, hn, values = _histograms(pos, neg)
    return _f1_from_counts(hp, hn, values >= threshold)


def _f1_from_counts(hp: np.ndarray, hn: np.ndarray, positive: np.ndarray) -> np.ndarray:
    tp = hp[:, positive].sum(axis=1)
    fp = hn[:, positive].sum(axis=1)
    fn = hp.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * tp / (2 * tp + fp + fn)


def percentile_interval(values: np.ndarray, confidence: float = 0.95,
                        limits: tuple[float, float] = (0.0, 1.0)) -> list[float]:
    """[low, high] percentiles of bootstrap values (NaN resamples left out), clipped to
    `limits`, the range the statistic can take (a rate's [0, 1] by default)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [math.nan, math.nan]
    tail = (1 - confidence) / 2 * 100
    low, high = np.clip(np.percentile(values, [tail, 100 - tail]), *limits)
    return [float(low), float(high)]


def bootstrap_auc(y_true: Any, y_prob: Any, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  confidence: float = 0.95) -> list[float]:
    """Stratified percentile-bootstrap interval of the ROC AUC ([NaN, NaN] without both
    classes)."""
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    if len(np.unique(y_true)) < 2 or resamples < 1:
        return [math.nan, math.nan]
    hp, hn, _ = _resampled_histograms(y_true, y_prob, resamples, seed)
    return percentile_interval(_auc_from_counts(hp, hn), confidence)


def bootstrap_binary(y_true: Any, y_prob: Any, threshold: float = 0.5,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, list[float]]:
    """Stratified percentile-bootstrap intervals of roc_auc, average_precision and f1.

    All NaN when a class is absent.
    """
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    pos, neg = _split_classes(y_true, y_prob)
    if len(pos) == 0 or len(neg) == 0 or resamples < 1:
        return {k: [math.nan, math.nan] for k in ("roc_auc", "average_precision", "f1")}
    hp, hn, values = _resampled_histograms(y_true, y_prob, resamples, seed)
    return {"roc_auc": percentile_interval(_auc_from_counts(hp, hn), confidence),
            "average_precision": percentile_interval(_ap_from_counts(hp, hn), confidence),
            "f1": percentile_interval(_f1_from_counts(hp, hn, values >= threshold), confidence)}


# ------------------------------------------------------------------ DeLong

def _delong_components(y_true: np.ndarray, scores: np.ndarray):
    """(AUCs (k,), positives' components (k, m), negatives' components (k, n)) for k score
    rows, by midranks (Sun & Xu 2014): O(k (m + n) log(m + n))."""
    pos, neg = scores[:, y_true == 1], scores[:, y_true == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives scored below (ties 1/2)
    v01 = 1 - (tz[:, m:] - ty) / m  # per negative: share of positives scored above
    return auc, v10, v01


def _as_score_rows(y_true: Any, *scores: Any) -> tuple[np.ndarray, np.ndarray]:
    checked = [as_binary_inputs(y_true, s) for s in scores]
    y = checked[0][0]
    if len(np.unique(y)) < 2:
        raise ValueError("DeLong needs both classes in y_true")
    return y, np.stack([s for _, s in checked])


def delong_covariance(y_true: Any, *scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs (k,), their DeLong covariance matrix (k, k)) for k scores of the same cases."""
    y, rows = _as_score_rows(y_true, *scores)
    auc, v10, v01 = _delong_components(y, rows)
    if min(v10.shape[1], v01.shape[1]) < 2:  # a variance needs two cases of each class
        return auc, np.full((len(rows), len(rows)), math.nan)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return auc, s10 / v10.shape[1] + s01 / v01.shape[1]


def delong_interval(y_true: Any, y_prob: Any, confidence: float = 0.95) -> dict[str, Any]:
    """AUC with DeLong's standard error and normal interval (clipped to [0, 1])."""
    auc, cov = delong_covariance(y_true, y_prob)
    se = math.sqrt(max(float(cov[0, 0]), 0.0)) if not math.isnan(cov[0, 0]) else math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    ci = [math.nan, math.nan] if math.isnan(se) else \
        [max(0.0, float(auc[0]) - z * se), min(1.0, float(auc[0]) + z * se)]
    return {"roc_auc": float(auc[0]), "se": se, "ci": ci}


def delong_test(y_true: Any, prob_a: Any, prob_b: Any) -> dict[str, float]:
    """DeLong's paired test of two AUCs on the same cases: difference a - b, its standard
    error, z and two-sided p (1 when the scores rank every pair alike, 0 when the AUCs differ
    with no variance left)."""
    auc, cov = delong_covariance(y_true, prob_a, prob_b)
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if math.isnan(var):
        return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": diff,
                "se": math.nan, "z": math.nan, "p": math.nan}
    if var <= 1e-15:
        # no spread left: the same AUC is no evidence of a difference, a different one is
        # the limit z -> infinity (a perfect model against a constant one, say)
        same = abs(diff) <= 1e-12
        return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": diff,
                "se": 0.0, "z": 0.0 if same else math.copysign(math.inf, diff),
                "p": 1.0 if same else 0.0}
    z = diff / math.sqrt(var)
    return {"auc_a": float(auc[0]), "auc_b": float(auc[1]), "difference": diff,
            "se": math.sqrt(var), "z": z, "p": float(2 * stats.norm.sf(abs(z)))}


def paired_bootstrap_auc_difference(y_true: Any, prob_a: Any, prob_b: Any,
                                    resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                                    confidence: float = 0.95) -> list[float]:
    """Percentile interval of AUC(a) - AUC(b), both scored on the same stratified resamples."""
    y, rows = _as_score_rows(y_true, prob_a, prob_b)
    aucs = [_auc_from_counts(*_resampled_histograms(y, rows[k], resamples, seed)[:2])
            for k in range(2)]  # the same seed draws the same cases for both
    diff = aucs[0] - aucs[1]
    return percentile_interval(diff, confidence, limits=(-1.0, 1.0))


def mcnemar_test(y_true: Any, pred_a: Any, pred_b: Any) -> dict[str, float]:
    """Exact McNemar test on paired decisions: b = cases only model a gets right, c = only
    model b; two-sided binomial p of min(b, c) in b + c trials at 1/2 (1 when b + c = 0)."""
    y = np.asarray(y_true).reshape(-1)
    a_right = np.asarray(pred_a).reshape(-1) == y
    b_right = np.asarray(pred_b).reshape(-1) == y
    only_a, only_b = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    p = 1.0 if only_a + only_b == 0 else float(
        stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": min(p, 1.0)}


# ------------------------------------------------------------------ operating points

OPERATING_TARGETS = (("sensitivity", 0.90), ("sensitivity", 0.95), ("specificity", 0.90),
                     ("specificity", 0.95))


def _cut_rates(pos: np.ndarray, neg: np.ndarray):
    """Per row: sensitivity and specificity at every threshold (each distinct score, from
    high to low, after the cut that calls nothing positive), and those thresholds."""
    hp, hn, values = _histograms(pos, neg)
    sens, spec = _rates_from_counts(hp, hn)
    above_all = np.nextafter(values[-1], np.inf)
    return sens, spec, np.concatenate([[above_all], values[::-1]])


def _rates_from_counts(hp: np.ndarray, hn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp = _descending_counts(hp, hn)
    rows = len(tp)
    sens = np.concatenate([np.zeros((rows, 1)), tp / hp.sum(axis=1, keepdims=True)], axis=1)
    spec = np.concatenate([np.ones((rows, 1)), 1 - fp / hn.sum(axis=1, keepdims=True)], axis=1)
    return sens, spec


def _best_under(rate: np.ndarray, other: np.ndarray, target: float) -> np.ndarray:
    """Column per row maximising `rate` subject to `other` >= target (first of ties)."""
    return np.argmax(np.where(other >= target - 1e-12, rate, -1.0), axis=1)


def operating_points(y_true: Any, y_prob: Any, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0, confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Sensitivity at specificity >= 0.90 / 0.95, specificity at sensitivity >= 0.90 / 0.95,
    and the Youden point, on this data.

    Each: threshold (positive when probability >= it), sensitivity and specificity with
    Wilson intervals at that threshold, and a bootstrap interval of the optimised rate in
    which the threshold is chosen again in every resample (so the interval includes the
    optimism of choosing it). Empty when a class is absent.
    """
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    pos, neg = _split_classes(y_true, y_prob)
    if len(pos) == 0 or len(neg) == 0:
        return {}
    sens, spec, thresholds = _cut_rates(pos[None], neg[None])
    boot = None
    if resamples > 0:
        boot = _rates_from_counts(*_resampled_histograms(y_true, y_prob, resamples,
                                                         seed + 1)[:2])
    points: dict[str, dict[str, Any]] = {}
    for fixed, target in OPERATING_TARGETS:
        varied = "specificity" if fixed == "sensitivity" else "sensitivity"
        rate, other = (spec, sens) if fixed == "sensitivity" else (sens, spec)
        col = int(_best_under(rate, other, target)[0])
        point = _point(y_true, y_prob, thresholds[col], len(pos), len(neg), confidence)
        if boot is not None:
            b_rate, b_other = (boot[1], boot[0]) if fixed == "sensitivity" else boot
            chosen = _best_under(b_rate, b_other, target)
            point[f"{varied}_bootstrap_ci"] = percentile_interval(
                np.take_along_axis(b_rate, chosen[:, None], axis=1)[:, 0], confidence)
        points[f"{varied[:4]}_at_{fixed[:4]}_{target:.2f}"] = point
    col = int(np.argmax(sens[0] + spec[0]))
    points["youden"] = _point(y_true, y_prob, thresholds[col], len(pos), len(neg), confidence)
    if boot is not None:
        best_j = np.max(boot[0] + boot[1], axis=1) - 1
        points["youden"]["j_bootstrap_ci"] = percentile_interval(best_j, confidence,
                                                                 limits=(-1.0, 1.0))
    points["youden"]["j"] = points["youden"]["sensitivity"] + points["youden"]["specificity"] - 1
    return points


def _point(y_true: np.ndarray, y_prob: np.ndarray, threshold: float, n_pos: int, n_neg: int,
           confidence: float) -> dict[str, Any]:
    tp = int(((y_prob >= threshold) & (y_true == 1)).sum())
    tn = int(((y_prob < threshold) & (y_true == 0)).sum())
    return {"threshold": float(threshold),
            "sensitivity": tp / n_pos, "specificity": tn / n_neg,
            "sensitivity_ci": list(wilson_interval(tp, n_pos, confidence)),
            "specificity_ci": list(wilson_interval(tn, n_neg, confidence))}


def parse_operating_point(text: str) -> tuple[str, float]:
    """`sens=0.95` / `spec=0.90` / `youden` -> ("sensitivity", 0.95) etc.

    Raises:
        ValueError: anything else (one line, saying what is accepted).
    """
    key, _, value = text.partition("=")
    names = {"sens": "sensitivity", "sensitivity": "sensitivity", "spec": "specificity",
             "specificity": "specificity"}
    if text.strip() == "youden":
        return "youden", math.nan
    try:
        target = float(value)
    except ValueError:
        target = math.nan
    if key.strip() not in names or not 0 < target < 1:
        raise BadConfig(f"operating point {text!r}: use sens=X or spec=X with 0 < X < 1, "
                         "or youden")
    return names[key.strip()], target


def threshold_for(y_true: Any, y_prob: Any, kind: str, target: float = math.nan) -> float:
    """The threshold meeting `kind` >= target with the best other rate (or Youden's J).

    Raises:
        ValueError: a class is absent from y_true.
    """
    y_true, y_prob = as_binary_inputs(y_true, y_prob)
    pos, neg = _split_classes(y_true, y_prob)
    if len(pos) == 0 or len(neg) == 0:
        raise BadData("choosing an operating point needs both classes in the data")
    sens, spec, thresholds = _cut_rates(pos[None], neg[None])
    if kind == "youden":
        col = int(np.argmax(sens[0] + spec[0]))
    elif kind == "sensitivity":
        col = int(_best_under(spec, sens, target)[0])
    else:
        col = int(_best_under(sens, spec, target)[0])
    return float(thresholds[col])


# ------------------------------------------------------------------ calibration

def _confidence_and_outcome(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Binary: P(positive) and the label. Multi-class: top-label confidence and whether the
    argmax is right (the top-label calibration of Guo et al. 2017)."""
    if is_binary_output(y_prob):
        y, p = as_binary_inputs(y_true, y_prob)
        return p, y.astype(np.float64)
    y, p = as_multiclass_inputs(y_true, y_prob)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def _binned_gaps(conf: np.ndarray, outcome: np.ndarray, bin_index: np.ndarray, bins: int):
    counts = np.bincount(bin_index, minlength=bins)
    sum_conf = np.bincount(bin_index, conf, minlength=bins)
    sum_out = np.bincount(bin_index, outcome, minlength=bins)
    full = counts > 0
    gaps = np.abs(sum_out[full] - sum_conf[full]) / counts[full]
    return gaps, counts[full]


def calibration_errors(y_true: Any, y_prob: Any, bins: int = ECE_BINS) -> dict[str, float]:
    """ECE with `bins` equal-width bins, adaptive ECE (equal-mass bins), the maximum
    calibration error (largest equal-width bin gap) and the Brier score.

    ECE = sum over bins of (bin share) * |observed frequency - mean predicted probability|.
    """
    conf, outcome = _confidence_and_outcome(y_true, y_prob)
    if conf.size == 0:
        return {"ece": math.nan, "ece_adaptive": math.nan, "mce": math.nan, "brier": math.nan,
                "bins": bins}
    width_bins = np.minimum((conf * bins).astype(np.int64), bins - 1)
    gaps, counts = _binned_gaps(conf, outcome, width_bins, bins)
    # equal-mass bins by rank; tied probabilities share their first rank's bin, so the
    # figure does not depend on the order of the cases
    first_rank = stats.rankdata(conf, method="min").astype(np.int64) - 1
    mass_bins = first_rank * bins // conf.size
    mass_gaps, mass_counts = _binned_gaps(conf, outcome, mass_bins, bins)
    return {"ece": float((gaps * counts).sum() / conf.size),
            "ece_adaptive": float((mass_gaps * mass_counts).sum() / conf.size),
            "mce": float(gaps.max()), "brier": brier_score(y_true, y_prob), "bins": bins}


def brier_score(y_true: Any, y_prob: Any) -> float:
    """Mean squared error of the probabilities against the one-hot truth (binary: of
    P(positive), as scikit-learn's `brier_score_loss`)."""
    if is_binary_output(y_prob):
        y, p = as_binary_inputs(y_true, y_prob)
        return float(skm.brier_score_loss(y, p, pos_label=1)) if y.size else math.nan
    y, p = as_multiclass_inputs(y_true, y_prob)
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)))


# ------------------------------------------------------------------ temperature scaling

TEMPERATURE_RANGE = (0.05, 20.0)


def apply_temperature(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of logits / temperature: sigmoid for one logit (N,) or (N, 1) -> (N,),
    softmax for (N, K)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if is_binary_output(z):
        return special.expit(z.reshape(-1))
    return special.softmax(z, axis=1)


def negative_log_likelihood(y_true: Any, logits: Any, temperature: float = 1.0) -> float:
    """Mean NLL of the labels under the probabilities of logits / temperature."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(y_true).reshape(-1).astype(np.int64)
    if is_binary_output(z):
        z = z.reshape(-1)
        # -log sigmoid(z) for positives, -log(1 - sigmoid(z)) for negatives, stably
        return float(np.mean(np.logaddexp(0, np.where(y == 1, -z, z))))
    log_p = z - special.logsumexp(z, axis=1, keepdims=True)
    return float(-np.mean(log_p[np.arange(len(y)), y]))


def fit_temperature(y_true: Any, logits: Any) -> float:
    """The temperature minimising the NLL of `y_true` (Guo et al. 2017), within
    TEMPERATURE_RANGE; > 1 softens an over-confident model. Ranking (and AUC) is unchanged.

    Raises:
        BadData: fewer than two classes among the labels, or logits that separate the
            classes (the NLL then falls towards T -> 0: such data says nothing about
            calibration, and the fitted temperature would sharpen every later prediction).
    """
    y = np.asarray(y_true).reshape(-1)
    if len(np.unique(y)) < 2:
        raise BadData("fitting a temperature needs both classes among the labelled cases; "
                      f"found {len(np.unique(y))} class(es) in {y.size} case(s)")
    low, high = np.log(TEMPERATURE_RANGE)
    result = optimize.minimize_scalar(
        lambda log_t: negative_log_likelihood(y, logits, float(np.exp(log_t))),
        bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    if result.x <= low + 1e-3:
        raise BadData(f"the model's logits separate the {y.size} cases' classes, so any "
                      "temperature towards 0 fits them better: they cannot calibrate it "
                      "(use more or other selection images, e.g. a larger holdout)")
    return float(np.exp(result.x))


def rescale_threshold(threshold: float, old_temperature: float, new_temperature: float) -> float:
    """The binary threshold that makes the same decisions after the temperature changes."""
    if not 0 < threshold < 1:
        return threshold
    return float(special.expit(special.logit(threshold) * old_temperature / new_temperature))


# ------------------------------------------------------------------ everything, with CIs

PROPORTIONS = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"),
               "ppv": ("tp", "fp"), "npv": ("tn", "fn")}


def binary_intervals(y_true: Any, y_prob: Any, threshold: float = 0.5,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """95 % intervals of the headline binary metrics at `threshold`: Wilson for accuracy,
    sensitivity, specificity, PPV, NPV; stratified bootstrap for roc_auc, average_precision
    and f1; DeLong for roc_auc too (key roc_auc_delong)."""
    y, p = as_binary_inputs(y_true, y_prob)
    m = binary_metrics(y, p, threshold)
    ci: dict[str, Any] = {"accuracy": list(wilson_interval(m["tp"] + m["tn"], m["n"]))}
    for name, (hit, miss) in PROPORTIONS.items():
        ci[name] = list(wilson_interval(m[hit], m[hit] + m[miss]))
    ci.update(bootstrap_binary(y, p, threshold, resamples, seed))
    both = len(np.unique(y)) == 2
    ci["roc_auc_delong"] = delong_interval(y, p)["ci"] if both else [math.nan, math.nan]
    return ci


def multiclass_intervals(y_true: Any, y_prob: Any, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0) -> dict[str, Any]:
    """Intervals for K classes: Wilson for accuracy; per class one-vs-rest AUC by DeLong
    and bootstrap; the macro AUC by a bootstrap stratified on the class labels."""
    y, p = as_multiclass_inputs(y_true, y_prob)
    k = p.shape[1]
    ci: dict[str, Any] = {"accuracy": list(wilson_interval(int((p.argmax(1) == y).sum()), len(y)))}
    per_class, per_class_delong = [], []
    for c in range(k):
        yc = (y == c).astype(np.int64)
        both = 0 < yc.sum() < len(yc)
        per_class.append(bootstrap_binary(yc, p[:, c], 0.5, resamples, seed)["roc_auc"])
        per_class_delong.append(delong_interval(yc, p[:, c])["ci"] if both
                                else [math.nan, math.nan])
    ci["roc_auc_per_class"] = per_class
    ci["roc_auc_per_class_delong"] = per_class_delong
    ci["roc_auc"] = percentile_interval(_macro_auc_resamples(y, p, resamples, seed))
    return ci


def _macro_auc_resamples(y: np.ndarray, p: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    k = p.shape[1]
    if resamples < 1 or any((y == c).sum() in (0, len(y)) for c in range(k)):
        return np.array([])
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in range(k)]
    idx = np.concatenate([g[rng.integers(0, len(g), (resamples, len(g)))] for g in groups], axis=1)
    yb = y[idx]
    aucs = []
    for c in range(k):
        scores = p[idx, c]
        is_c = yb == c
        # every resample keeps each class's count, so rows split the same way
        aucs.append(auc_rows(scores[is_c].reshape(resamples, -1),
                             scores[~is_c].reshape(resamples, -1)))
    return np.mean(aucs, axis=0)


def ci_method(resamples: int, seed: int) -> dict[str, str]:
    """How each interval in `ci95` was made (for metrics.json)."""
    boot = f"stratified percentile bootstrap, {resamples} resamples, seed {seed}"
    return {"accuracy": "wilson", "sensitivity": "wilson", "specificity": "wilson",
            "ppv": "wilson", "npv": "wilson", "roc_auc": boot, "average_precision": boot,
            "f1": boot, "roc_auc_delong": "DeLong (Sun & Xu 2014 fast algorithm), normal"}
