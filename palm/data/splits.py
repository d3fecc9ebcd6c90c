"""The one stratified splitter of palm: a holdout, k folds, or k folds repeated, and a
holdout that keeps groups (a patient's two eyes) together.

Every split keeps the class proportions and is seeded, so the same labels and seed give the
same split wherever it is made (`prepare split|kfold`, the training holdout of
`select_on: holdout`, the folds of a cross-validation, the digits export). scikit-learn does
the splitting: train_test_split for a holdout, StratifiedKFold (one repeat) or
RepeatedStratifiedKFold (several) for folds, StratifiedGroupKFold for a grouped holdout.
Multi-label folds (labels (N, L) of 0/1) keep every label's proportion by iterative
stratification (Sechidis et al. 2011) with the iterative-stratification package's MultilabelStratifiedKFold (an optional dependency:
`pip install iterative-stratification`, or palm's `multilabel` extra).

Example:
    train, held = holdout_split(labels, fraction=0.2, seed=0)   # sorted index arrays
    folds = kfold_assignment(labels, folds=5, repeats=2, seed=0)  # shape (2, len(labels))
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.model_selection import (RepeatedStratifiedKFold, StratifiedGroupKFold,
                                     StratifiedKFold, train_test_split)

from palm.errors import BadConfig

try:  # optional: only multi-label folds need it, and kfold_assignment names it when missing
    from iterstrat.ml_stratifiers import (MultilabelStratifiedKFold,
                                          RepeatedMultilabelStratifiedKFold)
except ImportError:
    MultilabelStratifiedKFold = RepeatedMultilabelStratifiedKFold = None

__all__ = ["carve_split", "grouped_holdout_split", "holdout_split", "kfold_assignment"]


def holdout_split(labels: Sequence, fraction: float, seed: int,
                  name: str = "fraction") -> tuple[np.ndarray, np.ndarray]:
    """(kept indices, held-out indices), both sorted: a stratified, seeded holdout of
    `fraction` of the samples.

    Args:
        labels: one label per sample (class indices or names).
        name: the parameter that set `fraction`, named in errors (val_fraction, ...).

    Raises:
        BadConfig: `fraction` outside (0, 1), or too few samples of a class to split.
    """
    if not 0.0 < fraction < 1.0:
        raise BadConfig(f"{name} must be in (0, 1), got {fraction}")
    labels = np.asarray(labels)
    try:
        kept, held = train_test_split(np.arange(len(labels)), test_size=fraction,
                                      random_state=seed, stratify=labels)
    except ValueError as e:
        raise BadConfig(f"{name} {fraction}: cannot split {len(labels)} images by class "
                        f"({e})") from None
    return np.sort(kept), np.sort(held)


def grouped_holdout_split(labels: Sequence, groups: Sequence, fraction: float, seed: int,
                          name: str = "fraction") -> tuple[np.ndarray, np.ndarray]:
    """(kept indices, held-out indices), both sorted: a seeded holdout of about `fraction` of
    the samples in which every group (a patient's two eyes) falls on one side, stratified by
    label as far as the groups allow. The held-out part is one of round(1 / fraction) folds of
    scikit-learn's StratifiedGroupKFold, so 0.2 holds out a fifth and 0.3 a third.

    Raises:
        BadConfig: `fraction` outside (0, 0.5], or fewer groups than folds.
    """
    if not 0.0 < fraction <= 0.5:
        raise BadConfig(f"{name} must be in (0, 0.5], got {fraction}", param=name)
    folds = round(1 / fraction)
    groups = np.asarray(groups)
    if len(np.unique(groups)) < folds:
        raise BadConfig(f"{name} {fraction}: {len(np.unique(groups))} groups cannot be split "
                        f"{folds} ways", param=name)
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # a label rarer than the number of folds is normal here (a rare combination of
        # findings); it simply cannot be spread over every fold
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        try:
            kept, held = next(splitter.split(np.zeros(len(groups)), np.asarray(labels), groups))
        except ValueError as e:  # e.g. every label combination rarer than the folds
            raise BadConfig(f"{name} {fraction}: these {len(np.unique(groups))} groups cannot be "
                            f"split {folds} ways ({e})", param=name) from None
    return np.sort(kept), np.sort(held)


def carve_split(dataset: Any, fraction: float, seed: int, transform: Callable,
                name: str = "fraction") -> tuple[Any, Any]:
    """(kept part, held-out part) of a labelled data set (its `samples` and `labels`): a
    `holdout_split`, the held-out part read with `transform` (evaluation: no augmentation)
    and decoded at its size (`ImageSet.subset`).

    Raises:
        BadConfig: as holdout_split.
    """
    keep, held = holdout_split(dataset.labels, fraction, seed, name=name)
    return dataset.subset(keep), dataset.subset(held, transform)


def kfold_assignment(labels: Sequence, folds: int, repeats: int = 1,
                     seed: int = 0) -> np.ndarray:
    """Fold (0..folds-1) of every sample, per repeat: shape (repeats, n), stratified by label
    (for multi-label `labels` (n, L) of 0/1: every label's proportion, iteratively).

    Raises:
        BadConfig: fewer than 2 folds, more folds than the smallest class has samples (than
            there are samples, for several labels), fewer than 1 repeat, or multi-label
            labels without the iterative-stratification package.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return _multilabel_assignment(labels, folds, repeats, seed)
    counts = np.unique(labels, return_counts=True)[1]
    smallest = int(counts.min()) if labels.size else 0
    if not 2 <= folds <= smallest:
        raise BadConfig(f"folds must be between 2 and the smallest class's size ({smallest} "
                        f"images), got {folds}", param="folds")
    if repeats < 1:
        raise BadConfig(f"repeats must be >= 1, got {repeats}", param="repeats")
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if repeats == 1 else
                RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed))
    return _assignment(splitter, labels, folds, repeats)


def _multilabel_assignment(labels: np.ndarray, folds: int, repeats: int, seed: int) -> np.ndarray:
    """kfold_assignment of (n, L) 0/1 labels by iterative stratification."""
    if MultilabelStratifiedKFold is None:
        raise BadConfig("multi-label folds need the iterative-stratification package: pip "
                        "install iterative-stratification (or palm's multilabel extra)")
    if not 2 <= folds <= len(labels):
        raise BadConfig(f"folds must be between 2 and the number of images ({len(labels)}), "
                        f"got {folds}", param="folds")
    if repeats < 1:
        raise BadConfig(f"repeats must be >= 1, got {repeats}", param="repeats")
    splitter = (MultilabelStratifiedKFold(folds, shuffle=True, random_state=seed) if repeats == 1
                else RepeatedMultilabelStratifiedKFold(n_splits=folds, n_repeats=repeats,
                                                       random_state=seed))
    return _assignment(splitter, labels, folds, repeats)


def _assignment(splitter: Any, labels: np.ndarray, folds: int, repeats: int) -> np.ndarray:
    """(repeats, n) fold of every sample from a scikit-learn-style k-fold splitter."""
    assignment = np.full((repeats, len(labels)), -1, dtype=np.int64)
    for i, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        assignment[i // folds, held_out] = i % folds
    return assignment
