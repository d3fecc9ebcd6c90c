"""Multi-label metrics: L labels per image (ODIR-5K: normal, diabetes, glaucoma, ...), each
an independent yes/no with its own probability.

`y_true` is (N, L) of 0/1, `y_prob` (N, L) of probabilities. Per label: AUC, average
precision, and at the label's threshold sensitivity, specificity, F1; then macro AUC (the
mean of the defined per-label AUCs), micro AUC (every image-label pair pooled), mAP, and the
ODIR-2019 challenge score. A label without positives (or without negatives) in the data has
no AUC: NaN with `undefined` saying why, left out of the macro averages, never a crash.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from sklearn import metrics as skm

from palm.errors import BadData
from palm.metrics.classification import binary_metrics, youden_threshold
from palm.metrics.intervals import (DEFAULT_RESAMPLES, bootstrap_auc, percentile_interval,
                                    resample_weights)


def as_multilabel_inputs(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, L) 0/1 labels and (N, L) finite probabilities in [0, 1].

    Raises:
        ValueError: shapes differ or are not 2-D, labels other than 0/1, or probabilities
            that are not finite or outside [0, 1] (the message names what was found).
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_prob.shape:
        raise ValueError(f"multi-label metrics need y_true and y_prob of one shape (N, L); got "
                         f"{y_true.shape} and {y_prob.shape}")
    bad = np.setdiff1d(np.unique(y_true), [0, 1])
    if bad.size:
        raise ValueError(f"multi-label labels must be 0 or 1; found {bad[:5].tolist()}")
    if not np.isfinite(y_prob).all() or (y_prob < 0).any() or (y_prob > 1).any():
        raise ValueError("y_prob must hold probabilities in [0, 1] (found NaN, inf or outside)")
    return y_true.astype(np.int64), y_prob


def _thresholds(threshold: float | Sequence[float], labels: int) -> np.ndarray:
    values = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (labels,))
    return values.copy()


def undefined_reason(y: np.ndarray) -> str | None:
    """Why a label's AUC is undefined on labels `y` (one label's column), or None."""
    positives = int(y.sum())
    if positives == 0:
        return "no positive images"
    if positives == len(y):
        return "no negative images"
    return None


def tuned_thresholds(y_true: Any, y_prob: Any) -> np.ndarray:
    """Per label, Youden's threshold on this data (0.5 for a label lacking a class)."""
    y, p = as_multilabel_inputs(y_true, y_prob)
    return np.array([youden_threshold(y[:, j], p[:, j]) if undefined_reason(y[:, j]) is None
                     else 0.5 for j in range(y.shape[1])])


def odir_score(y_true: Any, y_prob: Any, threshold: float = 0.5) -> dict[str, float]:
    """The ODIR-2019 challenge score: the mean of Cohen's kappa, micro F1 and AUC over all
    image-label pairs flattened (its evaluation script; decisions at `threshold`)."""
    y, p = as_multilabel_inputs(y_true, y_prob)
    flat_y, flat_p = y.ravel(), p.ravel()
    decided = (flat_p >= threshold).astype(np.int64)
    kappa = float(skm.cohen_kappa_score(flat_y, decided))
    f1 = float(skm.f1_score(flat_y, decided, average="micro"))
    auc = (float(skm.roc_auc_score(flat_y, flat_p)) if undefined_reason(flat_y) is None
           else math.nan)
    return {"kappa": kappa, "f1": f1, "roc_auc": auc, "score": (kappa + f1 + auc) / 3}


def multilabel_metrics(y_true: Any, y_prob: Any, label_names: Sequence[str],
                       threshold: float | Sequence[float] = 0.5) -> dict[str, Any]:
    """Per-label and pooled metrics of a multi-label model.

    Args:
        label_names: one name per column.
        threshold: one for all labels or one per label (a positive when prob >= it).

    Returns:
        {"per_label": {name: {roc_auc, average_precision, sensitivity, specificity, f1,
        threshold, positives, n, undefined (the reason AUC is NaN, or None)}},
        "macro_roc_auc", "micro_roc_auc", "map" (mean AP), "macro_f1", "odir", "n",
        "num_labels"}.
    """
    y, p = as_multilabel_inputs(y_true, y_prob)
    if len(label_names) != y.shape[1]:
        raise BadData(f"{len(label_names)} label names for {y.shape[1]} label columns")
    cuts = _thresholds(threshold, y.shape[1])
    per_label = {}
    for j, name in enumerate(label_names):
        m = binary_metrics(y[:, j], p[:, j], float(cuts[j]))
        per_label[str(name)] = {
            "roc_auc": m["roc_auc"], "average_precision": m["average_precision"],
            "sensitivity": m["sensitivity"], "specificity": m["specificity"], "f1": m["f1"],
            "threshold": float(cuts[j]), "positives": int(y[:, j].sum()), "n": int(len(y)),
            "undefined": undefined_reason(y[:, j]),
        }
    rows = list(per_label.values())
    pooled = undefined_reason(y.ravel()) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no defined label
        return {
            "per_label": per_label,
            "macro_roc_auc": float(np.nanmean([r["roc_auc"] for r in rows])),
            "micro_roc_auc": float(skm.roc_auc_score(y.ravel(), p.ravel())) if pooled else math.nan,
            "map": float(np.nanmean([r["average_precision"] for r in rows])),
            "macro_f1": float(np.nanmean([r["f1"] for r in rows])),
            "odir": odir_score(y, p) if pooled else {},
            "n": int(len(y)),
            "num_labels": int(y.shape[1]),
        }


def weighted_auc_rows(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of labels `y` (N,) and scores `p` (N,) with images counted `weights` (R, N)
    times, one AUC per row (NaN for a row without both classes): the Mann-Whitney statistic,
    ties counted half, as scikit-learn's roc_auc_score on the resampled data."""
    order = np.argsort(p, kind="stable")
    scores, positive, w = p[order], y[order] == 1, weights[:, order]
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # runs of tied scores
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def multilabel_intervals(y_true: Any, y_prob: Any, resamples: int = DEFAULT_RESAMPLES,
                         seed: int = 0) -> dict[str, Any]:
    """95 % intervals: per label the AUC by a bootstrap stratified on that label; the
    macro AUC by resampling images (all labels of an image together), the mean of the
    labels defined in each resample."""
    y, p = as_multilabel_inputs(y_true, y_prob)
    per_label = [bootstrap_auc(y[:, j], p[:, j], resamples, seed)
                 if undefined_reason(y[:, j]) is None else [math.nan, math.nan]
                 for j in range(y.shape[1])]
    weights = resample_weights(len(y), resamples, seed)
    aucs = np.stack([weighted_auc_rows(y[:, j], p[:, j], weights) for j in range(y.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no defined label
        macro = np.nanmean(aucs, axis=0)
    return {"roc_auc_per_label": [[float(v) for v in ci] for ci in per_label],
            "macro_roc_auc": percentile_interval(macro)}
