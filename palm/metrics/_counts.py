"""Per-row score histograms of the two classes, and the AUC, AP and F1 computed from them.

Every bootstrap in palm.metrics draws all its resamples at once as index matrices; these
helpers turn rows of resampled scores into class histograms over the distinct scores, from
which each metric is a few vectorised sums.
"""
from __future__ import annotations

import numpy as np


def _split_classes(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scores of the positives and of the negatives."""
    return y_prob[y_true == 1], y_prob[y_true == 0]


def stratified_resamples(n_pos: int, n_neg: int, resamples: int,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index matrices (resamples, n_pos) and (resamples, n_neg) drawn with replacement per class."""
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
    """Histograms (B, u) of rows of dense score ranks in [0, u).

    Resamples draw from the same cases, so u is at most their number of distinct scores:
    O(B (m + n + u)).
    """
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
    """ROC AUC of each row of class histograms (ties count one half)."""
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
    """Average precision of each row, as scikit-learn's `average_precision_score`.

    The positives of each distinct score contribute the precision at that threshold.
    """
    return _ap_from_counts(*_histograms(pos, neg)[:2])


def _ap_from_counts(hp: np.ndarray, hn: np.ndarray) -> np.ndarray:
    """Average precision of each row of class histograms."""
    tp, fp = _descending_counts(hp, hn)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    return (hp[:, ::-1] * precision).sum(axis=1) / hp.sum(axis=1)


def f1_rows(pos: np.ndarray, neg: np.ndarray, threshold: float) -> np.ndarray:
    """F1 of the decisions score >= threshold in each row.

    NaN when nothing is predicted positive and there are no positives.
    """
    hp, hn, values = _histograms(pos, neg)
    return _f1_from_counts(hp, hn, values >= threshold)


def _f1_from_counts(hp: np.ndarray, hn: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """F1 of each row of class histograms when the scores flagged `positive` are called positive."""
    tp = hp[:, positive].sum(axis=1)
    fp = hn[:, positive].sum(axis=1)
    fn = hp.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * tp / (2 * tp + fp + fn)
