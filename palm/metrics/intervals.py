"""Confidence intervals: Wilson, stratified percentile bootstrap, DeLong, and all of them at once.

Proportions (sensitivity, specificity, accuracy, PPV, NPV) get Wilson score intervals.
AUC, AP and F1 get a stratified percentile bootstrap: positives and negatives are resampled
separately so every resample has both classes (the case counts are fixed by design in a
diagnostic study), all resamples at once as index matrices. AUC also gets DeLong's
normal interval (palm.metrics._delong).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from palm.metrics._counts import (_ap_from_counts, _auc_from_counts, _f1_from_counts,
                                  _resampled_histograms, _split_classes, auc_rows)
from palm.metrics._delong import delong_covariance
from palm.metrics.classification import (as_binary_inputs, as_multiclass_inputs,
                                         binary_metrics)

DEFAULT_RESAMPLES = 2000


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


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) image indices: each row one bootstrap resample of n images drawn with
    replacement (the draws `resample_weights` counts)."""
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each of n images is drawn in each bootstrap resample
    (images drawn with replacement, all labels of an image together)."""
    drawn = resample_indices(n, resamples, seed)
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.repeat(np.arange(resamples), n), drawn.ravel()), 1.0)
    return weights


def bootstrap_auc(y_true: Any, y_prob: Any, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                  confidence: float = 0.95) -> list[float]:
    """Stratified percentile-bootstrap interval of the ROC AUC; [NaN, NaN] without both classes."""
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


def delong_interval(y_true: Any, y_prob: Any, confidence: float = 0.95) -> dict[str, Any]:
    """AUC with DeLong's standard error and normal interval (clipped to [0, 1])."""
    auc, cov = delong_covariance(y_true, y_prob)
    se = math.sqrt(max(float(cov[0, 0]), 0.0)) if not math.isnan(cov[0, 0]) else math.nan
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    ci = [math.nan, math.nan] if math.isnan(se) else \
        [max(0.0, float(auc[0]) - z * se), min(1.0, float(auc[0]) + z * se)]
    return {"roc_auc": float(auc[0]), "se": se, "ci": ci}


PROPORTIONS = {"sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"),
               "ppv": ("tp", "fp"), "npv": ("tn", "fn")}


def binary_intervals(y_true: Any, y_prob: Any, threshold: float = 0.5,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """95 % intervals of the headline binary metrics at `threshold`.

    Wilson for accuracy, sensitivity, specificity, PPV, NPV; stratified bootstrap for
    roc_auc, average_precision and f1; DeLong for roc_auc too (key roc_auc_delong).
    """
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
    """95 % intervals of the multi-class metrics of K classes.

    Wilson for accuracy; per class one-vs-rest AUC by DeLong and bootstrap; the macro AUC
    by a bootstrap stratified on the class labels.
    """
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
    """Macro one-vs-rest AUC of each class-stratified resample; empty when a class is absent."""
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
