"""Paired comparisons of two models on the same cases: DeLong, paired bootstrap, McNemar;
for graders the paired bootstrap of a quadratic-kappa difference, for multi-label models
DeLong per label and the paired bootstrap of a macro-AUC difference."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats

from palm.metrics._counts import _auc_from_counts, _resampled_histograms
from palm.metrics._delong import _as_score_rows, delong_covariance
from palm.metrics.intervals import DEFAULT_RESAMPLES, percentile_interval, resample_weights
from palm.metrics.multilabel import as_multilabel_inputs, undefined_reason, weighted_auc_rows
from palm.metrics.ordinal import kappa_rows, quadratic_kappa


def delong_test(y_true: Any, prob_a: Any, prob_b: Any) -> dict[str, float]:
    """DeLong's paired test of two AUCs on the same cases.

    Returns the difference a - b, its standard error, z and two-sided p (1 when the scores
    rank every pair alike, 0 when the AUCs differ with no variance left).
    """
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
    """Exact McNemar test on the paired decisions of two models.

    b = cases only model a gets right, c = only model b; two-sided binomial p of min(b, c)
    in b + c trials at 1/2 (1 when b + c = 0).
    """
    y = np.asarray(y_true).reshape(-1)
    a_right = np.asarray(pred_a).reshape(-1) == y
    b_right = np.asarray(pred_b).reshape(-1) == y
    only_a, only_b = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    p = 1.0 if only_a + only_b == 0 else float(
        stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": min(p, 1.0)}


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p of "no difference": twice the smaller share of the
    (finite) resampled differences on either side of 0, at most 1; NaN with none finite."""
    finite = np.asarray(differences, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return math.nan
    return float(min(1.0, 2 * min(np.mean(finite <= 0), np.mean(finite >= 0))))


def _paired_difference(observed_a: float, observed_b: float, resampled: np.ndarray,
                       confidence: float, limits: tuple[float, float]) -> dict[str, Any]:
    return {"a": observed_a, "b": observed_b, "difference": observed_a - observed_b,
            "ci": percentile_interval(resampled, confidence, limits=limits),
            "p": bootstrap_p(resampled)}


def paired_bootstrap_kappa_difference(y_true: Any, pred_a: Any, pred_b: Any, num_grades: int,
                                      resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                                      confidence: float = 0.95) -> dict[str, Any]:
    """Quadratic kappa of graders a and b on the same images, and kappa(a) - kappa(b) with
    its percentile interval and two-sided p, both graders scored on the same resampled
    images (as `resample_weights` draws them; resamples where a kappa is undefined are
    left out).

    Returns:
        {"a", "b" (the kappas), "difference", "ci" ([low, high]), "p"}.
    """
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    a = np.asarray(pred_a, dtype=np.int64).reshape(-1)
    b = np.asarray(pred_b, dtype=np.int64).reshape(-1)
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"y_true, pred_a and pred_b differ in length ({len(y)}, {len(a)}, "
                         f"{len(b)})")
    weights = resample_weights(len(y), resamples, seed)
    resampled = (kappa_rows(y, a, num_grades, weights)
                 - kappa_rows(y, b, num_grades, weights))
    return _paired_difference(quadratic_kappa(y, a, num_grades),
                              quadratic_kappa(y, b, num_grades), resampled, confidence,
                              (-2.0, 2.0))


def multilabel_delong(y_true: Any, prob_a: Any, prob_b: Any,
                      label_names: Sequence[str]) -> list[dict[str, Any]]:
    """DeLong's paired test of two multi-label models, one label column at a time: per
    label {"label", "undefined" (why there is no AUC, or None), and delong_test's keys
    (NaN for an undefined label)}."""
    y, a = as_multilabel_inputs(y_true, prob_a)
    _, b = as_multilabel_inputs(y_true, prob_b)
    if len(label_names) != y.shape[1]:
        raise ValueError(f"{len(label_names)} label names for {y.shape[1]} label columns")
    rows = []
    for j, name in enumerate(label_names):
        reason = undefined_reason(y[:, j])
        test = (delong_test(y[:, j], a[:, j], b[:, j]) if reason is None else
                dict.fromkeys(("auc_a", "auc_b", "difference", "se", "z", "p"), math.nan))
        rows.append({"label": str(name), "undefined": reason, **test})
    return rows


def _macro_auc_rows(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    aucs = np.stack([weighted_auc_rows(y[:, j], p[:, j], weights) for j in range(y.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no defined label
        return np.nanmean(aucs, axis=0)


def paired_bootstrap_macro_auc_difference(y_true: Any, prob_a: Any, prob_b: Any,
                                          resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                                          confidence: float = 0.95) -> dict[str, Any]:
    """Macro AUC (the mean over labels with both classes) of multi-label models a and b,
    and macro(a) - macro(b) with its percentile interval and two-sided p: images resampled
    (all labels of an image together), the same resamples for both models.

    Returns:
        {"a", "b" (the macro AUCs), "difference", "ci" ([low, high]), "p"}.
    """
    y, a = as_multilabel_inputs(y_true, prob_a)
    _, b = as_multilabel_inputs(y_true, prob_b)
    full = np.ones((1, len(y)))
    weights = resample_weights(len(y), resamples, seed)
    resampled = _macro_auc_rows(y, a, weights) - _macro_auc_rows(y, b, weights)
    return _paired_difference(float(_macro_auc_rows(y, a, full)[0]),
                              float(_macro_auc_rows(y, b, full)[0]), resampled, confidence,
                              (-1.0, 1.0))
