"""Paired comparisons of two models on the same cases: DeLong, paired bootstrap, McNemar."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from palm.metrics._counts import _auc_from_counts, _resampled_histograms
from palm.metrics._delong import _as_score_rows, delong_covariance
from palm.metrics.intervals import DEFAULT_RESAMPLES, percentile_interval


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
