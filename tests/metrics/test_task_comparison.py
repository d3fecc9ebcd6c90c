"""Paired comparisons for graders and multi-label models against plain loops over
scikit-learn on the same bootstrap resamples, and DeLong per label against the binary test."""
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from palm.metrics.comparison import (bootstrap_p, delong_test, multilabel_delong,
                                     paired_bootstrap_kappa_difference,
                                     paired_bootstrap_macro_auc_difference)
from palm.metrics.intervals import resample_indices

RESAMPLES = 200


def _interval(values):
    values = np.asarray(values)[np.isfinite(values)]
    return np.percentile(values, [2.5, 97.5])


def _two_sided_p(values):
    values = np.asarray(values)[np.isfinite(values)]
    return min(1.0, 2 * min(np.mean(values <= 0), np.mean(values >= 0)))


def _graders(seed, n=80, grades=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, grades, n)
    a = np.clip(y + rng.integers(-1, 2, n), 0, grades - 1)  # off by at most one grade
    b = np.clip(y + rng.integers(-2, 3, n), 0, grades - 1)  # a worse grader
    return y, a, b


@pytest.mark.parametrize("seed", range(3))
def test_kappa_difference_equals_sklearn_on_the_same_resamples(seed):
    y, a, b = _graders(seed)
    got = paired_bootstrap_kappa_difference(y, a, b, 5, resamples=RESAMPLES, seed=seed)
    kappa = lambda t, p: skm.cohen_kappa_score(t, p, weights="quadratic", labels=range(5))
    differences = [kappa(y[i], a[i]) - kappa(y[i], b[i])
                   for i in resample_indices(len(y), RESAMPLES, seed)]
    assert got["a"] == pytest.approx(kappa(y, a)) and got["b"] == pytest.approx(kappa(y, b))
    assert got["difference"] == pytest.approx(kappa(y, a) - kappa(y, b))
    np.testing.assert_allclose(got["ci"], _interval(differences), atol=1e-9)
    assert got["p"] == pytest.approx(_two_sided_p(differences))
    assert got["difference"] > 0 and got["ci"][0] < got["difference"] < got["ci"][1]


def test_the_same_grader_twice_differs_by_nothing():
    y, a, _ = _graders(7)
    got = paired_bootstrap_kappa_difference(y, a, a, 5, resamples=RESAMPLES)
    assert got["difference"] == 0 and got["ci"] == [0, 0] and got["p"] == 1.0


def test_bootstrap_p_is_small_only_when_the_resamples_agree_on_a_side():
    assert bootstrap_p(np.full(100, 0.2)) == 0.0
    assert bootstrap_p(np.r_[np.full(50, 0.2), np.full(50, -0.2)]) == 1.0
    assert np.isnan(bootstrap_p(np.full(3, np.nan)))


def _multilabel(seed, n=90, labels=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, labels))
    y[:, -1] = rng.random(n) < 0.1  # a rare label: some resamples lack positives
    a = 1 / (1 + np.exp(-(2.0 * y + rng.normal(0, 1, y.shape))))
    b = 1 / (1 + np.exp(-(0.7 * y + rng.normal(0, 1, y.shape))))
    return y, np.round(a, 2), np.round(b, 2)  # rounded: tied scores


def _macro(y, p):
    aucs = [skm.roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1])
            if 0 < y[:, j].sum() < len(y)]
    return np.mean(aucs) if aucs else np.nan


@pytest.mark.parametrize("seed", range(3))
def test_macro_auc_difference_equals_sklearn_on_the_same_resamples(seed):
    y, a, b = _multilabel(seed)
    got = paired_bootstrap_macro_auc_difference(y, a, b, resamples=RESAMPLES, seed=seed)
    differences = [_macro(y[i], a[i]) - _macro(y[i], b[i])
                   for i in resample_indices(len(y), RESAMPLES, seed)]
    assert got["a"] == pytest.approx(skm.roc_auc_score(y, a))  # sklearn's macro average
    assert got["difference"] == pytest.approx(skm.roc_auc_score(y, a) - skm.roc_auc_score(y, b))
    np.testing.assert_allclose(got["ci"], _interval(differences), atol=1e-9)
    assert got["p"] == pytest.approx(_two_sided_p(differences))


def test_delong_per_label_is_the_binary_test_on_each_column():
    y, a, b = _multilabel(1)
    y[:, 1] = 0  # a label without positives has no AUC
    rows = multilabel_delong(y, a, b, ["dr", "none", "rare"])
    assert [r["label"] for r in rows] == ["dr", "none", "rare"]
    for j in (0, 2):
        assert rows[j]["undefined"] is None
        assert {k: rows[j][k] for k in ("auc_a", "auc_b", "difference", "se", "z", "p")} \
            == pytest.approx(delong_test(y[:, j], a[:, j], b[:, j]))
        assert rows[j]["auc_a"] == pytest.approx(skm.roc_auc_score(y[:, j], a[:, j]))
    assert rows[1]["undefined"] == "no positive images" and np.isnan(rows[1]["p"])
