"""palm.metrics.comparison: DeLong against its O(m n) definition, the paired bootstrap and the
exact McNemar test against SciPy."""
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from palm.metrics._delong import delong_covariance
from palm.metrics.comparison import delong_test, mcnemar_test, paired_bootstrap_auc_difference
from palm import metrics as M


def _structural_components(y, score):
    """DeLong et al. (1988) by definition: psi over all positive-negative pairs, O(m n)."""
    pos, neg = score[y == 1], score[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


@pytest.mark.parametrize("seed", range(5))
def test_delong_covariance_equals_brute_force_with_ties(seed, tied_scores):
    rng = np.random.default_rng(seed)
    y, a = tied_scores(rng, 150)
    b = np.round(a + rng.normal(0, 0.7, len(a)), 1)  # correlated second model, also tied
    aucs, cov = delong_covariance(y, a, b)
    comps = [_structural_components(y, s) for s in (a, b)]
    v10 = np.stack([c[1] for c in comps])
    v01 = np.stack([c[2] for c in comps])
    want = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    assert aucs == pytest.approx([c[0] for c in comps], abs=1e-12)
    assert aucs[0] == pytest.approx(skm.roc_auc_score(y, a), abs=1e-12)
    np.testing.assert_allclose(cov, want, rtol=0, atol=1e-10)
    assert np.unique(a).size < 60  # the data really has ties


def test_delong_identical_predictors_give_p_one(tied_scores):
    y, a = tied_scores(np.random.default_rng(3), 120)
    assert delong_test(y, a, a)["p"] == 1.0
    # a monotone transform ranks the same way: still no difference
    assert delong_test(y, a, 1 / (1 + np.exp(-3 * a)))["p"] == pytest.approx(1.0)


def test_delong_test_detects_a_better_model():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    good = rng.normal(0, 1, 400) + 2.0 * y
    poor = good + rng.normal(0, 3, 400)
    result = delong_test(y, good, poor)
    assert result["difference"] > 0 and result["p"] < 0.01
    low, high = paired_bootstrap_auc_difference(y, good, poor, resamples=500)
    assert 0 < low < result["difference"] < high


def test_mcnemar_exact():
    y = np.zeros(30, int)
    a = np.zeros(30, int)
    b = np.zeros(30, int)
    b[:8] = 1  # model b wrong on 8 cases model a gets right
    a[8:10] = 1  # model a wrong on 2 that b gets right
    result = mcnemar_test(y, a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (8, 2)
    assert result["p"] == pytest.approx(stats.binomtest(2, 10, 0.5).pvalue)
    assert mcnemar_test(y, a, a)["p"] == 1.0


def test_delong_zero_variance_with_a_difference_is_significant():
    # a perfect model against a constant one: DeLong's variance is 0 but the AUCs differ by
    # 0.5; "no evidence" (p = 1) would be the opposite of the truth
    y = np.repeat([1, 0], 10)
    perfect = np.where(y == 1, 0.9, 0.1)
    constant = np.full(20, 0.5)
    result = M.delong_test(y, perfect, constant)
    assert result["difference"] == pytest.approx(0.5)
    assert result["p"] == 0.0
    assert M.delong_test(y, perfect, perfect * 0.5)["p"] == 1.0  # same ranking: no difference
