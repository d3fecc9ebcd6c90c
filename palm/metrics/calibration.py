"""Calibration: ECE (equal-width and adaptive), MCE, Brier score and temperature scaling."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, special, stats
from sklearn import metrics as skm

from palm.errors import BadData
from palm.metrics.classification import as_binary_inputs, as_multiclass_inputs, is_binary_output

ECE_BINS = 15


def _confidence_and_outcome(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    """The confidence and the outcome (0/1) that calibration compares.

    Binary: P(positive) and the label. Multi-class: top-label confidence and whether the
    argmax is right (the top-label calibration of Guo et al. 2017).
    """
    if is_binary_output(y_prob):
        y, p = as_binary_inputs(y_true, y_prob)
        return p, y.astype(np.float64)
    y, p = as_multiclass_inputs(y_true, y_prob)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def _binned_gaps(conf: np.ndarray, outcome: np.ndarray, bin_index: np.ndarray, bins: int):
    """|observed frequency - mean confidence| and the case count of each non-empty bin."""
    counts = np.bincount(bin_index, minlength=bins)
    sum_conf = np.bincount(bin_index, conf, minlength=bins)
    sum_out = np.bincount(bin_index, outcome, minlength=bins)
    full = counts > 0
    gaps = np.abs(sum_out[full] - sum_conf[full]) / counts[full]
    return gaps, counts[full]


def calibration_errors(y_true: Any, y_prob: Any, bins: int = ECE_BINS) -> dict[str, float]:
    """ECE, adaptive ECE, maximum calibration error and Brier score.

    ECE with `bins` equal-width bins, adaptive ECE with equal-mass bins, the maximum
    calibration error is the largest equal-width bin gap.

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
    """Mean squared error of the probabilities against the one-hot truth.

    Binary: of P(positive), as scikit-learn's `brier_score_loss`.
    """
    if is_binary_output(y_prob):
        y, p = as_binary_inputs(y_true, y_prob)
        return float(skm.brier_score_loss(y, p, pos_label=1)) if y.size else math.nan
    y, p = as_multiclass_inputs(y_true, y_prob)
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)))


# ------------------------------------------------------------------ temperature scaling

TEMPERATURE_RANGE = (0.05, 20.0)


def apply_temperature(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of logits / temperature.

    Sigmoid for one logit (N,) or (N, 1) -> (N,), softmax for (N, K).
    """
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
    """The temperature minimising the NLL of `y_true` (Guo et al. 2017), within TEMPERATURE_RANGE.

    A temperature > 1 softens an over-confident model. Ranking (and AUC) is unchanged.

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
