"""palm.metrics.operating_points: each point meets its target with the best other rate."""
import numpy as np
import pytest

from palm.metrics.classification import youden_threshold
from palm.metrics.operating_points import operating_points, parse_operating_point, threshold_for


def test_operating_points_meet_their_targets(tied_scores):
    rng = np.random.default_rng(8)
    y, s = tied_scores(rng, 400, shift=1.5, decimals=2)
    points = operating_points(y, s, resamples=200)
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
    assert points["youden"]["threshold"] == pytest.approx(youden_threshold(y, s))
    assert threshold_for(y, s, "specificity", 0.90) == points["sens_at_spec_0.90"]["threshold"]


@pytest.mark.parametrize("text,want", [("sens=0.95", ("sensitivity", 0.95)),
                                       ("spec=0.9", ("specificity", 0.9))])
def test_parse_operating_point(text, want):
    assert parse_operating_point(text) == want


@pytest.mark.parametrize("text", ["sens=1.5", "ppv=0.9", "spec", "sens=x"])
def test_parse_operating_point_rejects(text):
    with pytest.raises(ValueError, match="operating point"):
        parse_operating_point(text)
