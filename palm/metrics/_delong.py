"""DeLong's covariance of correlated AUCs by the fast midrank algorithm of Sun & Xu (2014)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from palm.metrics.classification import as_binary_inputs


def _delong_components(y_true: np.ndarray, scores: np.ndarray):
    """AUCs (k,) and DeLong's components of positives (k, m) and negatives (k, n) of k score rows.

    By midranks (Sun & Xu 2014): O(k (m + n) log(m + n)).
    """
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
    """Checked labels and the scores stacked as rows; ValueError without both classes."""
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
