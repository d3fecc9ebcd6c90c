"""palm.data.splits, the one stratified splitter: its folds and holdouts, and that every
caller gets the very split it got before the three copies were merged into it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sklearn.model_selection import StratifiedGroupKFold

from palm.data.splits import grouped_holdout_split, holdout_split, kfold_assignment
from palm.errors import BadConfig

# A fixed label vector and the splits main's own functions (palm/cli/prepare.py's
# stratified_split and kfold_assign, palm/engine/cv.py's assign_folds, palm/engine/runner.py's
# carve_holdout; main at a3567e2) gave for it: run folders, fold lists and cv splits.csv
# made before the merge must be reproduced exactly.
LABELS = [0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2, 0, 1, 1, 0, 2, 0, 1, 0, 0, 1, 2, 1, 0]
MAIN_SPLIT_VAL = [8, 11, 15, 16, 20, 22]  # stratified_split(table, 0.25, seed=7): val rows
MAIN_KFOLD = [2, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 2, 2, 2, 2, 0, 1, 2, 2, 2, 1]  # k=3, seed=7
MAIN_CV_REPEATED = [  # assign_folds(LABELS, 3, repeats=2, seed=3)
    [1, 1, 0, 1, 2, 2, 0, 0, 0, 2, 1, 2, 1, 0, 1, 1, 2, 2, 0, 0, 2, 0, 1, 2],
    [2, 1, 2, 0, 1, 2, 2, 1, 2, 2, 0, 0, 1, 0, 0, 2, 1, 0, 2, 0, 1, 1, 0, 1]]
MAIN_HOLDOUT = [1, 5, 8, 16, 17, 19, 21, 22]  # carve_holdout(set, 0.3, seed=5): held out


def test_holdout_is_the_split_prepare_and_training_made_before():
    kept, held = holdout_split(LABELS, 0.25, seed=7)
    assert held.tolist() == MAIN_SPLIT_VAL
    assert kept.tolist() == sorted(set(range(len(LABELS))) - set(MAIN_SPLIT_VAL))
    assert holdout_split(LABELS, 0.3, seed=5)[1].tolist() == MAIN_HOLDOUT


def test_holdout_by_class_names_equals_by_class_index():
    names = np.array(["H", "N", "P"])[LABELS]
    assert holdout_split(names, 0.25, seed=7)[1].tolist() == MAIN_SPLIT_VAL


def test_folds_are_the_ones_prepare_and_cv_made_before():
    assert kfold_assignment(LABELS, 3, seed=7).tolist() == [MAIN_KFOLD]
    assert kfold_assignment(LABELS, 3, repeats=2, seed=3).tolist() == MAIN_CV_REPEATED


def test_folds_disjoint_stratified_and_covering():
    labels = np.array([0] * 23 + [1] * 13 + [2] * 7)
    folds = kfold_assignment(labels, folds=5, repeats=2, seed=3)
    assert folds.shape == (2, len(labels))
    for repeat in folds:
        # one fold per image (disjoint) and every image in one (cover)
        assert set(repeat.tolist()) == set(range(5))
        for c in np.unique(labels):
            per_fold = np.bincount(repeat[labels == c], minlength=5)
            assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    assert not np.array_equal(folds[0], folds[1])  # repeats reshuffle
    assert np.array_equal(folds, kfold_assignment(labels, 5, 2, seed=3))
    assert not np.array_equal(folds, kfold_assignment(labels, 5, 2, seed=4))


def test_holdout_keeps_class_proportions():
    labels = np.array([0] * 40 + [1] * 20)
    kept, held = holdout_split(labels, 0.25, seed=0)
    assert len(held) == 15 and np.bincount(labels[held]).tolist() == [10, 5]
    assert not set(kept) & set(held) and len(kept) + len(held) == len(labels)


@pytest.mark.parametrize("call, message", [
    (lambda: kfold_assignment([0, 0, 0, 1, 1, 1, 1], folds=4),
     "folds must be between 2 and the smallest class's size \\(3 images\\), got 4"),
    (lambda: kfold_assignment([0, 1] * 4, folds=1), "folds must be between 2"),
    (lambda: kfold_assignment([0, 1] * 4, folds=2, repeats=0), "repeats must be >= 1, got 0"),
    (lambda: holdout_split([0, 1] * 4, 1.0, seed=0), "fraction must be in \\(0, 1\\), got 1.0"),
    (lambda: holdout_split([0, 0, 0, 1], 0.5, seed=0, name="holdout_fraction"),
     "holdout_fraction 0.5: cannot split 4 images by class"),
    (lambda: grouped_holdout_split([0, 1] * 4, range(8), 0.6, seed=0, name="val_fraction"),
     "val_fraction must be in \\(0, 0.5\\], got 0.6"),
    (lambda: grouped_holdout_split([0, 1] * 4, [0, 0, 0, 0, 1, 1, 1, 1], 0.2, seed=0),
     "fraction 0.2: 2 groups cannot be split 5 ways"),
])
def test_bad_parameters_are_one_line_errors_naming_the_parameter(call, message):
    with pytest.raises(BadConfig, match=message):
        call()


def test_pandas_labels_split_like_arrays():
    table = pd.DataFrame({"label": LABELS}, index=range(100, 124))  # index ignored
    assert holdout_split(table["label"], 0.25, seed=7)[1].tolist() == MAIN_SPLIT_VAL


def test_grouped_holdout_keeps_groups_together_and_is_sklearns_first_fold():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(100), 2)  # two eyes per patient
    labels = rng.choice(["N", "D", "DO", "G"], size=200, p=[0.5, 0.3, 0.1, 0.1])
    kept, held = grouped_holdout_split(labels, groups, 0.2, seed=4)
    assert not set(groups[kept]) & set(groups[held])
    assert sorted(kept.tolist() + held.tolist()) == list(range(200))
    first = next(StratifiedGroupKFold(5, shuffle=True, random_state=4).split(
        np.zeros(200), labels, groups))
    assert held.tolist() == sorted(first[1].tolist())
    assert len(held) == 40  # 100 patients of 2 eyes: a fifth of them
    for label in ("N", "D"):  # the common labels keep their share
        assert abs((labels[held] == label).mean() - (labels == label).mean()) < 0.06
    assert grouped_holdout_split(labels, groups, 0.2, seed=4)[1].tolist() == held.tolist()
