"""Binary and multi-class classification metrics, input checks and predicted labels.

Binary tasks (PALM: PM vs non-PM) pass `y_prob` of shape (N,) or (N, 1): the probability of
the positive class. Multi-class tasks pass (N, K) class probabilities (rows sum to 1).

Undefined values are NaN, never an exception or a silent 0:
- ROC AUC / average precision when only one class is present;
- recall (sensitivity) or specificity when the class it is a rate of is absent;
- F1 when a class is neither present nor predicted.
Precision of a class that is never predicted is 0 (scikit-learn's convention: a model that
never says "PM" gets no credit for precision). Macro averages skip NaN classes.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from palm.errors import BadData


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
