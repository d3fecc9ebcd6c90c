"""Folds of graders (stratified by grade) and of multi-label data (iterative stratification)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import KFold

from palm.data import splits
from palm.data.splits import kfold_assignment
from palm.errors import BadConfig


@pytest.mark.parametrize("seed", range(3))
def test_grade_counts_of_the_folds_differ_by_at_most_one_per_grade(seed):
    grades = np.repeat(np.arange(5), [37, 8, 21, 6, 9])  # APTOS-like skew
    np.random.default_rng(seed).shuffle(grades)
    for folds in kfold_assignment(grades, 5, repeats=2, seed=seed):
        counts = np.stack([np.bincount(grades[folds == f], minlength=5) for f in range(5)])
        assert (counts.max(0) - counts.min(0) <= 1).all(), counts


def _skewed_labels(seed, n=200):
    """Three labels of 4 %, 15 % and 50 % prevalence, correlated as findings are."""
    rng = np.random.default_rng(seed)
    rare = rng.random(n) < 0.04
    return np.stack([rare, (rng.random(n) < 0.13) | rare, rng.random(n) < 0.5], 1).astype(int)


def _worst_gap(labels, folds, k):
    """The largest |fold prevalence - overall prevalence| over folds and labels."""
    overall = labels.mean(0)
    return max(np.abs(labels[folds == f].mean(0) - overall).max() for f in range(k))


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_folds_keep_each_labels_proportion(seed):
    labels = _skewed_labels(seed)
    folds = kfold_assignment(labels, 5, seed=seed)[0]
    assert sorted(np.bincount(folds)) == [40] * 5  # every image in one fold, equal folds
    positives = np.stack([labels[folds == f].sum(0) for f in range(5)])
    assert (positives.max(0) - positives.min(0) <= 1).all(), positives
    plain = np.empty(len(labels), int)
    for f, (_, held) in enumerate(KFold(5, shuffle=True, random_state=seed).split(labels)):
        plain[held] = f
    assert _worst_gap(labels, folds, 5) < _worst_gap(labels, plain, 5)


def test_multilabel_repeats_differ_and_are_seeded():
    labels = _skewed_labels(0, 60)
    folds = kfold_assignment(labels, 3, repeats=2, seed=1)
    assert folds.shape == (2, 60) and not np.array_equal(folds[0], folds[1])
    assert np.array_equal(folds, kfold_assignment(labels, 3, repeats=2, seed=1))


def test_multilabel_folds_without_the_package_name_it(monkeypatch):
    monkeypatch.setattr(splits, "MultilabelStratifiedKFold", None)
    with pytest.raises(BadConfig, match="^multi-label folds need the iterative-stratification "
                                        "package: pip install iterative-stratification"):
        kfold_assignment(_skewed_labels(0, 20), 2)


def test_more_multilabel_folds_than_images_is_refused():
    with pytest.raises(BadConfig, match=r"folds must be between 2 and the number of images \(4\)"):
        kfold_assignment(np.eye(4, 2, dtype=int), 5)
