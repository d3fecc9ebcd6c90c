"""palm.metrics.intervals and the bootstrap histograms: Wilson equals SciPy, bootstrap rows equal
scikit-learn, intervals cover the truth and contain the estimates."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from palm.metrics._counts import auc_rows, average_precision_rows, f1_rows
from palm.metrics.classification import binary_metrics, multiclass_metrics
from palm.metrics.intervals import (binary_intervals, bootstrap_auc, multiclass_intervals,
                                    wilson_interval)
from palm import metrics as M


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (211, 400), (1, 1), (57, 59)])
def test_wilson_equals_scipy(k, n):
    want = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-12)


def test_wilson_vectorised_and_empty():
    low, high = wilson_interval(np.array([1, 5]), np.array([4, 9]))
    for i, (k, n) in enumerate([(1, 4), (5, 9)]):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert (low[i], high[i]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))



def test_bootstrap_rows_match_sklearn_with_ties(tied_scores):
    rng = np.random.default_rng(5)
    for _ in range(20):
        y, s = tied_scores(rng, 60, decimals=0)
        pos, neg = s[y == 1][None], s[y == 0][None]
        assert auc_rows(pos, neg)[0] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        assert average_precision_rows(pos, neg)[0] == pytest.approx(
            skm.average_precision_score(y, s), abs=1e-12)
        assert f1_rows(pos, neg, 0.5)[0] == pytest.approx(skm.f1_score(y, s >= 0.5))


def test_bootstrap_auc_intervals_cover_the_true_auc():
    """Binormal data (negatives N(0,1), positives N(d,1)): true AUC = Phi(d / sqrt 2)."""
    rng = np.random.default_rng(0)
    d = 1.2
    true_auc = stats.norm.cdf(d / math.sqrt(2))
    sets, covered = 200, 0
    for i in range(sets):
        y = np.repeat([0, 1], 100)
        score = rng.normal(0, 1, 200) + d * y
        low, high = bootstrap_auc(y, score, resamples=500, seed=i)
        covered += low <= true_auc <= high
    assert 0.90 <= covered / sets <= 0.99, covered


def test_binary_intervals_contain_the_estimates(tied_scores):
    rng = np.random.default_rng(6)
    y, s = tied_scores(rng, 300)
    p = 1 / (1 + np.exp(-s))
    m = binary_metrics(y, p, 0.6)
    ci = binary_intervals(y, p, 0.6, resamples=300)
    for key in ("accuracy", "sensitivity", "specificity", "f1", "roc_auc", "average_precision",
                "roc_auc_delong"):
        value = m["roc_auc" if key == "roc_auc_delong" else key]
        assert ci[key][0] <= value <= ci[key][1], key
    assert ci["ppv"][0] <= m["precision"] <= ci["ppv"][1]
    assert binary_intervals(y, p, 0.6, resamples=300) == ci  # seeded


def test_multiclass_intervals_per_class_and_macro():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 240)
    p = rng.dirichlet([1, 1, 1], 240) + 0.6 * np.eye(3)[y]
    p /= p.sum(axis=1, keepdims=True)
    ci = multiclass_intervals(y, p, resamples=300)
    m = multiclass_metrics(y, p)
    for c, auc in enumerate(m["roc_auc_per_class"]):
        assert ci["roc_auc_per_class"][c][0] <= auc <= ci["roc_auc_per_class"][c][1]
    assert ci["roc_auc"][0] <= m["roc_auc"] <= ci["roc_auc"][1]


@pytest.mark.parametrize("n", [10, 13, 25, 27])  # sizes where the float sum missed 1 by an ulp
def test_wilson_bounds_are_exact_when_all_or_none_succeed(n):
    assert M.wilson_interval(n, n)[1] == 1.0
    assert M.wilson_interval(0, n)[0] == 0.0


def test_ppv_interval_of_a_perfect_classifier_ends_at_exactly_one():
    y = np.repeat([0, 1], [17, 10])  # 10 positives, all found, no false alarm: PPV 10/10
    p = np.where(y == 1, 0.9, 0.1)
    ci = M.binary_intervals(y, p, 0.5, resamples=50)
    assert ci["ppv"][1] == 1.0 and ci["sensitivity"][1] == 1.0
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "roc_auc", "f1"):
        assert 0.0 <= ci[key][0] <= ci[key][1] <= 1.0, key


def test_bootstrap_intervals_are_clipped_to_the_statistics_range():
    assert M.percentile_interval(np.array([1.0, 1.0 + 1e-15])) == [1.0, 1.0]
    assert M.percentile_interval(np.array([-0.5, 0.5]), limits=(-1.0, 1.0))[0] < 0
