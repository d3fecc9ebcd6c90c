"""Issue 22, item 7: what a new user met on the Quickstart path, each checked in the product."""
from __future__ import annotations

import numpy as np
import pytest

from palm import metrics as M


# ------------------------------------------------------------ 7: intervals stay in [0, 1]

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
