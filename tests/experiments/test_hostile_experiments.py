"""Hostile inputs to the evidence, comparison and experiment tools: degenerate statistics
(ties, perfect separation, one class) and damaged prediction files must give right numbers
or one-line errors, never silent nonsense or a traceback."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from palm import metrics as M
from palm.config import check_options
from palm.reports.compare import compare_models
from palm.engine.evaluate import EvalResult, write_evaluation
from palm.errors import BadConfig, BadData

CLASSES = ["non-PM", "PM"]


# ------------------------------------------------------------------ statistics

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


def test_ci_resamples_is_bounded():
    check_options({"ci_resamples": 2000})
    with pytest.raises(BadConfig, match="^ci_resamples must be in"):
        check_options({"ci_resamples": 100_000_000})  # would need gigabytes, then die


# ------------------------------------------------------------------ compare inputs

def _predictions(tmp_path, name, labels, probs, **columns):
    out = tmp_path / name / "eval"
    files = [f"img/{i:03d}.jpg" for i in range(len(labels))]
    write_evaluation(EvalResult(np.asarray(probs, "float32"), np.asarray(labels)), files,
                     CLASSES, 0.5, out, ci_resamples=0)
    csv = out / "predictions.csv"
    if columns:
        frame = pd.read_csv(csv)
        for key, value in columns.items():
            frame[key] = value
        frame.to_csv(csv, index=False)
    return csv


def test_compare_refuses_one_class_and_empty_predictions(tmp_path):
    a = _predictions(tmp_path, "a", [1, 1, 1], [0.2, 0.7, 0.9])
    b = _predictions(tmp_path, "b", [1, 1, 1], [0.3, 0.6, 0.4])
    with pytest.raises(BadData, match="both classes"):
        compare_models([a, b], tmp_path / "cmp", resamples=50)
    empty = tmp_path / "empty.csv"
    pd.read_csv(a).iloc[:0].to_csv(empty, index=False)
    with pytest.raises(BadData, match="no predictions"):
        compare_models([empty, empty], tmp_path / "cmp2", resamples=50)


@pytest.mark.parametrize("column, value", [("prediction", "PM"), ("prediction", 5),
                                           ("prediction", np.nan), ("probability", 3.0)])
def test_compare_refuses_bad_decisions_and_probabilities(tmp_path, column, value):
    y = [0, 1, 0, 1]
    a = _predictions(tmp_path, "a", y, [0.2, 0.7, 0.4, 0.9])
    b = _predictions(tmp_path, "b", y, [0.3, 0.6, 0.4, 0.8])
    frame = pd.read_csv(b)
    frame[column] = frame[column].astype(object)
    frame.loc[1, column] = value
    frame.to_csv(b, index=False)
    with pytest.raises(BadData, match=column):
        compare_models([a, b], tmp_path / "cmp", resamples=50)


def test_compare_multiclass_is_named_as_such(tmp_path):
    out = tmp_path / "m" / "eval"
    write_evaluation(EvalResult(np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]],
                                         "float32"), np.array([0, 1, 2])),
                     ["a.jpg", "b.jpg", "c.jpg"], ["a", "b", "c"], 0.5, out, ci_resamples=0)
    with pytest.raises(BadData, match="multi-class"):
        compare_models([out, out], tmp_path / "cmp", resamples=50)


def test_compare_same_image_spelt_two_ways_is_a_duplicate(tmp_path):
    a = _predictions(tmp_path, "a", [0, 1, 0], [0.2, 0.7, 0.4])
    frame = pd.read_csv(a)
    frame.loc[1, "path"] = "img/./000.jpg"
    frame.loc[1, "label"] = 0
    frame.to_csv(a, index=False)
    with pytest.raises(BadData, match="more than once"):
        compare_models([a, a], tmp_path / "cmp", resamples=50)
