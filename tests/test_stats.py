"""Confidence intervals, DeLong, McNemar, operating points, calibration and temperature
scaling in palm.metrics, against SciPy / scikit-learn and the textbook definitions."""
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from palm import metrics as M


def _tied_scores(rng, n, shift=0.8, decimals=1):
    """Binary labels and scores rounded to `decimals` (so many ties across classes)."""
    y = rng.integers(0, 2, n)
    return y, np.round(rng.normal(0, 1, n) + shift * y, decimals)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (211, 400), (1, 1), (57, 59)])
def test_wilson_equals_scipy(k, n):
    want = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert M.wilson_interval(k, n) == pytest.approx((want.low, want.high), abs=1e-12)


def test_wilson_vectorised_and_empty():
    low, high = M.wilson_interval(np.array([1, 5]), np.array([4, 9]))
    for i, (k, n) in enumerate([(1, 4), (5, 9)]):
        ci = stats.binomtest(k, n).proportion_ci(method="wilson")
        assert (low[i], high[i]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert all(math.isnan(v) for v in M.wilson_interval(0, 0))


def _structural_components(y, score):
    """DeLong et al. (1988) by definition: psi over all positive-negative pairs, O(m n)."""
    pos, neg = score[y == 1], score[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)


@pytest.mark.parametrize("seed", range(5))
def test_delong_covariance_equals_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    y, a = _tied_scores(rng, 150)
    b = np.round(a + rng.normal(0, 0.7, len(a)), 1)  # correlated second model, also tied
    aucs, cov = M.delong_covariance(y, a, b)
    comps = [_structural_components(y, s) for s in (a, b)]
    v10 = np.stack([c[1] for c in comps])
    v01 = np.stack([c[2] for c in comps])
    want = np.cov(v10) / v10.shape[1] + np.cov(v01) / v01.shape[1]
    assert aucs == pytest.approx([c[0] for c in comps], abs=1e-12)
    assert aucs[0] == pytest.approx(skm.roc_auc_score(y, a), abs=1e-12)
    np.testing.assert_allclose(cov, want, rtol=0, atol=1e-10)
    assert np.unique(a).size < 60  # the data really has ties


def test_delong_identical_predictors_give_p_one():
    y, a = _tied_scores(np.random.default_rng(3), 120)
    assert M.delong_test(y, a, a)["p"] == 1.0
    # a monotone transform ranks the same way: still no difference
    assert M.delong_test(y, a, 1 / (1 + np.exp(-3 * a)))["p"] == pytest.approx(1.0)


def test_delong_test_detects_a_better_model():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    good = rng.normal(0, 1, 400) + 2.0 * y
    poor = good + rng.normal(0, 3, 400)
    result = M.delong_test(y, good, poor)
    assert result["difference"] > 0 and result["p"] < 0.01
    low, high = M.paired_bootstrap_auc_difference(y, good, poor, resamples=500)
    assert 0 < low < result["difference"] < high


def test_bootstrap_rows_match_sklearn_with_ties():
    rng = np.random.default_rng(5)
    for _ in range(20):
        y, s = _tied_scores(rng, 60, decimals=0)
        pos, neg = s[y == 1][None], s[y == 0][None]
        assert M.auc_rows(pos, neg)[0] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        assert M.average_precision_rows(pos, neg)[0] == pytest.approx(
            skm.average_precision_score(y, s), abs=1e-12)
        assert M.f1_rows(pos, neg, 0.5)[0] == pytest.approx(skm.f1_score(y, s >= 0.5))


def test_bootstrap_auc_intervals_cover_the_true_auc():
    """Binormal data (negatives N(0,1), positives N(d,1)): true AUC = Phi(d / sqrt 2)."""
    rng = np.random.default_rng(0)
    d = 1.2
    true_auc = stats.norm.cdf(d / math.sqrt(2))
    sets, covered = 200, 0
    for i in range(sets):
        y = np.repeat([0, 1], 100)
        score = rng.normal(0, 1, 200) + d * y
        low, high = M.bootstrap_auc(y, score, resamples=500, seed=i)
        covered += low <= true_auc <= high
    assert 0.90 <= covered / sets <= 0.99, covered


def test_binary_intervals_contain_the_estimates():
    rng = np.random.default_rng(6)
    y, s = _tied_scores(rng, 300)
    p = 1 / (1 + np.exp(-s))
    m = M.binary_metrics(y, p, 0.6)
    ci = M.binary_intervals(y, p, 0.6, resamples=300)
    for key in ("accuracy", "sensitivity", "specificity", "f1", "roc_auc", "average_precision",
                "roc_auc_delong"):
        value = m["roc_auc" if key == "roc_auc_delong" else key]
        assert ci[key][0] <= value <= ci[key][1], key
    assert ci["ppv"][0] <= m["precision"] <= ci["ppv"][1]
    assert M.binary_intervals(y, p, 0.6, resamples=300) == ci  # seeded


def test_multiclass_intervals_per_class_and_macro():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 240)
    p = rng.dirichlet([1, 1, 1], 240) + 0.6 * np.eye(3)[y]
    p /= p.sum(axis=1, keepdims=True)
    ci = M.multiclass_intervals(y, p, resamples=300)
    m = M.multiclass_metrics(y, p)
    for c, auc in enumerate(m["roc_auc_per_class"]):
        assert ci["roc_auc_per_class"][c][0] <= auc <= ci["roc_auc_per_class"][c][1]
    assert ci["roc_auc"][0] <= m["roc_auc"] <= ci["roc_auc"][1]


def test_mcnemar_exact():
    y = np.zeros(30, int)
    a = np.zeros(30, int)
    b = np.zeros(30, int)
    b[:8] = 1  # model b wrong on 8 cases model a gets right
    a[8:10] = 1  # model a wrong on 2 that b gets right
    result = M.mcnemar_test(y, a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (8, 2)
    assert result["p"] == pytest.approx(stats.binomtest(2, 10, 0.5).pvalue)
    assert M.mcnemar_test(y, a, a)["p"] == 1.0


def test_operating_points_meet_their_targets():
    rng = np.random.default_rng(8)
    y, s = _tied_scores(rng, 400, shift=1.5, decimals=2)
    points = M.operating_points(y, s, resamples=200)
    for key, (rate, floor) in {"sens_at_spec_0.90": ("specificity", 0.90),
                               "sens_at_spec_0.95": ("specificity", 0.95),
                               "spec_at_sens_0.90": ("sensitivity", 0.90),
                               "spec_at_sens_0.95": ("sensitivity", 0.95)}.items():
        point = points[key]
        pred = s >= point["threshold"]
        assert np.mean(pred[y == 1]) == pytest.approx(point["sensitivity"])
        assert np.mean(~pred[y == 0]) == pytest.approx(point["specificity"])
        assert point[rate] >= floor
        other = "sensitivity" if rate == "specificity" else "specificity"
        # no threshold does better on `other` while keeping `rate` >= floor
        for t in np.unique(s):
            pr = s >= t
            rates = {"sensitivity": np.mean(pr[y == 1]), "specificity": np.mean(~pr[y == 0])}
            if rates[rate] >= floor:
                assert rates[other] <= point[other] + 1e-12
        assert point[f"{other}_bootstrap_ci"][0] <= point[other] <= point[f"{other}_bootstrap_ci"][1]
    assert points["youden"]["threshold"] == pytest.approx(M.youden_threshold(y, s))
    assert M.threshold_for(y, s, "specificity", 0.90) == points["sens_at_spec_0.90"]["threshold"]


@pytest.mark.parametrize("text,want", [("sens=0.95", ("sensitivity", 0.95)),
                                       ("spec=0.9", ("specificity", 0.9))])
def test_parse_operating_point(text, want):
    assert M.parse_operating_point(text) == want


@pytest.mark.parametrize("text", ["sens=1.5", "ppv=0.9", "spec", "sens=x"])
def test_parse_operating_point_rejects(text):
    with pytest.raises(ValueError, match="operating point"):
        M.parse_operating_point(text)


def test_calibration_errors_by_hand():
    # two equal-width bins used: 0.1 (outcomes 0, 0) and 0.9 (outcomes 1, 0)
    y = np.array([0, 0, 1, 0])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    cal = M.calibration_errors(y, p)
    assert cal["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)
    assert cal["mce"] == pytest.approx(0.4)
    assert cal["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    # two equal-mass bins here are the same two groups
    assert M.calibration_errors(y, p, bins=2)["ece_adaptive"] == pytest.approx(0.25)
    assert M.calibration_errors(np.array([0, 1] * 50), np.full(100, 0.5))["ece"] == pytest.approx(0)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    rng = np.random.default_rng(9)
    true_logit = rng.normal(0, 1.5, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    overconfident = 4.0 * true_logit  # right ranking, probabilities far too extreme
    before = M.calibration_errors(y, M.apply_temperature(overconfident))
    temperature = M.fit_temperature(y, overconfident)
    after = M.calibration_errors(y, M.apply_temperature(overconfident, temperature))
    assert temperature == pytest.approx(4.0, rel=0.15)
    assert after["ece"] < before["ece"] / 3
    assert after["brier"] < before["brier"]
    assert M.negative_log_likelihood(y, overconfident, temperature) < \
        M.negative_log_likelihood(y, overconfident)


def test_temperature_multiclass_and_threshold_rescaling():
    rng = np.random.default_rng(10)
    logits = rng.normal(0, 1, (500, 3))
    y = np.array([rng.choice(3, p=M.apply_temperature(z[None], 1.0)[0]) for z in logits])
    t = M.fit_temperature(y, 3 * logits)
    assert t == pytest.approx(3.0, rel=0.3)
    # the rescaled threshold makes the same decisions at the new temperature
    z = rng.normal(0, 2, 200)
    thr = M.rescale_threshold(0.7, 1.0, 2.5)
    assert np.array_equal(M.apply_temperature(z) >= 0.7, M.apply_temperature(z, 2.5) >= thr)
