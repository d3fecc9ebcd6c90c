"""Which data set to build from the command line: a PALM root, class folders, or CSV lists.

- `data_root`: a PALM download (training folder, validation folder, ground truth).
- `train_dir` / `val_dir`: one sub-folder per class.
- `train_csv` / `val_csv`: `path,label` tables.
Training and validation sources may be mixed (e.g. folders for training, a CSV for
validation); class names come from the training set and validation labels follow them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from palm.data import (
    CsvImageSet,
    FolderImageSet,
    PalmTrainSet,
    PalmValSet,
    find_palm_layout,
)

PathLike = str | Path | None


def _pick(role: str, folder: PathLike, csv: PathLike) -> tuple[str, PathLike]:
    if folder and csv:
        raise ValueError(f"give either --{role}-dir or --{role}-csv, not both")
    if not folder and not csv:
        raise ValueError(f"no {role} data: give --data-root (PALM), or --{role}-dir / --{role}-csv")
    return ("dir", folder) if folder else ("csv", csv)


def _generic_set(kind: str, source: PathLike, classes: list[str] | None, transform: Callable,
                 skip_bad: bool, cache_dir: PathLike):
    if kind == "dir":
        return FolderImageSet(source, classes=classes, transform=transform, skip_bad=skip_bad,
                              cache_dir=cache_dir)
    return CsvImageSet(source, classes=classes, transform=transform, skip_bad=skip_bad,
                       cache_dir=cache_dir)


def training_sets(
    *,
    train_transform: Callable,
    val_transform: Callable,
    data_root: PathLike = None,
    train_dir: PathLike = None,
    val_dir: PathLike = None,
    train_csv: PathLike = None,
    val_csv: PathLike = None,
    skip_bad: bool = False,
    cache_dir: PathLike = None,
):
    """(train set, validation set) from a PALM root or generic folders/CSVs.

    Raises:
        ValueError: no source, or conflicting sources, or fewer than two classes.
    """
    if data_root:
        if any((train_dir, val_dir, train_csv, val_csv)):
            raise ValueError("give either --data-root or --train-dir/--val-dir/--train-csv/--val-csv")
        layout = find_palm_layout(data_root)
        train = PalmTrainSet(layout.train_dir, transform=train_transform, skip_bad=skip_bad,
                             cache_dir=cache_dir)
        val = PalmValSet(layout.val_dir, layout.val_labels, transform=val_transform,
                         skip_bad=skip_bad, cache_dir=cache_dir)
        return train, val
    train = _generic_set(*_pick("train", train_dir, train_csv), None, train_transform, skip_bad,
                         cache_dir)
    if len(train.classes) < 2:
        raise ValueError(f"training data has {len(train.classes)} class(es) {train.classes}; need >= 2")
    val = _generic_set(*_pick("val", val_dir, val_csv), train.classes, val_transform, skip_bad,
                       cache_dir)
    return train, val


def evaluation_set(
    *,
    transform: Callable,
    classes: list[str] | None,
    data_root: PathLike = None,
    val_dir: PathLike = None,
    val_csv: PathLike = None,
    skip_bad: bool = False,
    cache_dir: PathLike = None,
):
    """The labelled set to evaluate: PALM validation split, class folders or a CSV.

    Args:
        classes: class names of the checkpoint, so labels map to the model's outputs.
    """
    given = [name for name, v in (("--data-root", data_root), ("--val-dir", val_dir),
                                  ("--val-csv", val_csv)) if v]
    if len(given) != 1:
        raise ValueError("give exactly one of --data-root, --val-dir, --val-csv"
                         + (f" (got {', '.join(given)})" if given else ""))
    if data_root:
        layout = find_palm_layout(data_root)
        return PalmValSet(layout.val_dir, layout.val_labels, transform=transform, skip_bad=skip_bad,
                          cache_dir=cache_dir)
    kind = "dir" if val_dir else "csv"
    return _generic_set(kind, val_dir or val_csv, classes, transform, skip_bad, cache_dir)


def num_outputs_for(classes: list[str]) -> int:
    """One logit for two classes (sigmoid + BCE), K logits for K > 2 classes (softmax)."""
    if len(classes) < 2:
        raise ValueError(f"need at least two classes, got {classes}")
    return 1 if len(classes) == 2 else len(classes)
