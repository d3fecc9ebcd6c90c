"""palm.metrics.calibration: ECE, MCE and Brier by hand and against scikit-learn; temperature
scaling recovers the temperature of an over-confident model."""
import numpy as np
import pytest
from sklearn import metrics as skm

from palm.metrics.calibration import (apply_temperature, calibration_errors, fit_temperature,
                                      negative_log_likelihood, rescale_threshold)
from palm import metrics as M
from palm.errors import BadData


def test_calibration_errors_by_hand():
    # two equal-width bins used: 0.1 (outcomes 0, 0) and 0.9 (outcomes 1, 0)
    y = np.array([0, 0, 1, 0])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    cal = calibration_errors(y, p)
    assert cal["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)
    assert cal["mce"] == pytest.approx(0.4)
    assert cal["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    # two equal-mass bins here are the same two groups
    assert calibration_errors(y, p, bins=2)["ece_adaptive"] == pytest.approx(0.25)
    assert calibration_errors(np.array([0, 1] * 50), np.full(100, 0.5))["ece"] == pytest.approx(0)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    rng = np.random.default_rng(9)
    true_logit = rng.normal(0, 1.5, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    overconfident = 4.0 * true_logit  # right ranking, probabilities far too extreme
    before = calibration_errors(y, apply_temperature(overconfident))
    temperature = fit_temperature(y, overconfident)
    after = calibration_errors(y, apply_temperature(overconfident, temperature))
    assert temperature == pytest.approx(4.0, rel=0.15)
    assert after["ece"] < before["ece"] / 3
    assert after["brier"] < before["brier"]
    assert negative_log_likelihood(y, overconfident, temperature) < \
        negative_log_likelihood(y, overconfident)


def test_temperature_multiclass_and_threshold_rescaling():
    rng = np.random.default_rng(10)
    logits = rng.normal(0, 1, (500, 3))
    y = np.array([rng.choice(3, p=apply_temperature(z[None], 1.0)[0]) for z in logits])
    t = fit_temperature(y, 3 * logits)
    assert t == pytest.approx(3.0, rel=0.3)
    # the rescaled threshold makes the same decisions at the new temperature
    z = rng.normal(0, 2, 200)
    thr = rescale_threshold(0.7, 1.0, 2.5)
    assert np.array_equal(apply_temperature(z) >= 0.7, apply_temperature(z, 2.5) >= thr)


def test_adaptive_ece_does_not_depend_on_the_order_of_tied_probabilities():
    y = np.repeat([1, 0], 10)
    p = np.full(20, 0.5)  # perfectly calibrated: half the cases at 0.5 are positive
    forward = M.calibration_errors(y, p)["ece_adaptive"]
    backward = M.calibration_errors(y[::-1], p)["ece_adaptive"]
    shuffled = M.calibration_errors(np.tile([1, 0], 10), p)["ece_adaptive"]
    assert forward == pytest.approx(0.0) and backward == pytest.approx(0.0)
    assert shuffled == pytest.approx(0.0)


def test_fit_temperature_refuses_one_class_and_separated_data():
    with pytest.raises(BadData, match="both classes"):
        M.fit_temperature(np.ones(5), np.array([1.0, 2, 3, 0.5, 2]))
    y = np.repeat([1, 0], 10)
    with pytest.raises(BadData, match="separate"):  # NLL falls towards T -> 0
        M.fit_temperature(y, np.where(y == 1, 3.0, -3.0))
