"""Operating points: sensitivity at fixed specificity and the reverse, Youden's J, thresholds."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from palm.errors import BadConfig, BadData
from palm.metrics._counts import (_descending_counts, _histograms, _resampled_histograms,
                                  _split_classes)
from palm.metrics.classification import as_binary_inputs
from palm.metrics.intervals import DEFAULT_RESAMPLES, percentile_interval, wilson_interval

OPERATING_TARGETS = (("sensitivity", 0.90), ("sensitivity", 0.95), ("specificity", 0.90),
                     ("specificity", 0.95))


def _cut_rates(pos: np.ndarray, neg: np.ndarray):
    """Per row, sensitivity and specificity at every threshold, and those thresholds.

    The thresholds are each distinct score from high to low, after the cut that calls
    nothing positive.
    """
    hp, hn, values = _histograms(pos, neg)
    sens, spec = _rates_from_counts(hp, hn)
    above_all = np.nextafter(values[-1], np.inf)
    return sens, spec, np.concatenate([[above_all], values[::-1]])


def _rates_from_counts(hp: np.ndarray, hn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity per row as the threshold steps down the distinct scores."""
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
    """The OPERATING_TARGETS points and the Youden point on this data.

    Sensitivity at specificity >= 0.90 / 0.95, specificity at sensitivity >= 0.90 / 0.95.

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
    """Threshold, sensitivity and specificity with Wilson intervals at `threshold`."""
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
