"""Which data set to build from the command line: a PALM root, a grading download, class
folders, or CSV lists.

- `data_root`: a PALM download (training folder, validation folder, ground truth), or an
  APTOS-2019 / IDRiD diabetic-retinopathy grading download (palm.data.grading).
- `train_dir` / `val_dir`: one sub-folder per class.
- `train_csv` / `val_csv`: `path,label` tables; their paths stay inside the CSV's folder or,
  when `data_root` is given too, inside it (unless `allow_outside_paths`).
Training and validation sources may be mixed (e.g. folders for training, a CSV for
validation); class names come from the training set and validation labels follow them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Unpack

from palm.data.datasets import (
    CsvImageSet,
    FolderImageSet,
    ImageSet,
    PalmTrainSet,
    PalmValSet,
    ReadOptions,
    class_order,
    find_palm_layout,
)
from palm.data.generic import MultiLabelCsvImageSet
from palm.data.grading import GradedImageSet, find_grading_layout, grading_sets
from palm.data.splits import carve_split
from palm.errors import BadConfig, BadData

PathLike = str | Path | None


def _pick(role: str, folder: PathLike, csv: PathLike) -> tuple[str, PathLike]:
    if folder and csv:
        raise BadConfig(f"give either {role}_dir or {role}_csv, not both",
                        param=(f"{role}_dir", f"{role}_csv"))
    if not folder and not csv:
        raise BadConfig(f"no {role} data: give data_root (PALM), or {role}_dir / {role}_csv",
                        param=("data_root", f"{role}_dir", f"{role}_csv"))
    return ("dir", folder) if folder else ("csv", csv)


def _generic_set(kind: str, source: PathLike, classes: list[str] | None, transform: Callable,
                 options: ReadOptions, allow_outside_paths: bool,
                 data_root: PathLike) -> ImageSet:
    if kind == "dir":
        return FolderImageSet(source, classes=classes, transform=transform, **options)
    return CsvImageSet(source, classes=classes, transform=transform, data_root=data_root,
                       allow_outside_paths=allow_outside_paths, **options)


def is_palm_layout(data_root: PathLike, *lists: PathLike) -> bool:
    """--data-root alone is a PALM download; with CSV lists it is where their images live."""
    return bool(data_root) and not any(lists)


def _check_class_names(class_names: object) -> None:
    if class_names is None:
        return
    if (not isinstance(class_names, (list, tuple)) or len(class_names) < 2
            or len({str(c) for c in class_names}) != len(class_names)):
        raise BadConfig(f"class_names must be a list of two or more different names, got "
                         f"{class_names!r}")


def training_sets(
    *,
    train_transform: Callable,
    val_transform: Callable,
    data_root: PathLike = None,
    train_dir: PathLike = None,
    val_dir: PathLike = None,
    train_csv: PathLike = None,
    val_csv: PathLike = None,
    allow_outside_paths: bool = False,
    class_names: list[str] | None = None,
    positive_class: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    label_columns: list[str] | None = None,
    multilabel: bool = False,
    **options: Unpack[ReadOptions],
) -> tuple[ImageSet, ImageSet]:
    """(train set, validation set) from a PALM root, a grading root or generic folders/CSVs.

    A grading root without labelled validation images (APTOS-2019) gives a stratified,
    seeded `val_fraction` of its training images as the validation set (its `carved_from`
    names the layout).

    Class order: `class_names` if given (for two classes: [negative, positive]), else the
    data's. For two classes the positive one gets label 1: `positive_class`, else a known
    positive name (palm.data.KNOWN_POSITIVE), else an error asking for it.

    Raises:
        ValueError: no source, or conflicting sources, fewer than two classes, or two
            classes with no way to tell the positive one.
    """
    _check_class_names(class_names)
    if data_root and (train_dir or val_dir):
        raise BadConfig("give either data_root (PALM, or the folder of train_csv/val_csv "
                        "images) or train_dir/val_dir",
                        param=("data_root", "train_csv", "val_csv", "train_dir", "val_dir"))
    if multilabel or label_columns:
        return multilabel_sets(train_csv, val_csv, label_columns, train_transform, val_transform,
                               allow_outside_paths, data_root, options)
    grading = find_grading_layout(data_root) if not (train_csv or val_csv) else None
    if grading is not None:
        train, val = grading_sets(grading, train_transform=train_transform,
                                  val_transform=val_transform, **options)
        if val is None:
            train, val = carve_split(train, val_fraction, seed, val_transform, name="val_fraction")
            val.carved_from = grading.name
        return train, val
    if is_palm_layout(data_root, train_csv, val_csv):
        layout = find_palm_layout(data_root)
        train = PalmTrainSet(layout.train_dir, transform=train_transform, **options)
        val = PalmValSet(layout.val_dir, layout.val_labels, transform=val_transform,
                         allow_outside_paths=allow_outside_paths, **options)
        order = class_order(class_names or train.classes, positive_class, bool(class_names))
        train.set_class_order(order)
        val.set_class_order(order)
        return train, val
    train = _generic_set(*_pick("train", train_dir, train_csv), class_names, train_transform,
                         options, allow_outside_paths, data_root)
    if len(train.classes) < 2:
        raise BadData(f"training data has {len(train.classes)} class(es) {train.classes}; need >= 2")
    train.set_class_order(class_order(train.classes, positive_class, bool(class_names)))
    val = _generic_set(*_pick("val", val_dir, val_csv), train.classes, val_transform,
                       options, allow_outside_paths, data_root)
    return train, val


def multilabel_sets(train_csv: PathLike, val_csv: PathLike, label_columns: list[str] | None,
                    train_transform: Callable, val_transform: Callable,
                    allow_outside_paths: bool, data_root: PathLike, options: ReadOptions
                    ) -> tuple[ImageSet, ImageSet]:
    """(train set, validation set) of multi-label CSVs; validation takes training's labels."""
    if not (train_csv and val_csv):
        raise BadConfig("multi-label data comes as CSV lists: give train_csv and val_csv (path "
                        "and one 0/1 column per label)", param=("train_csv", "val_csv"))
    train = MultiLabelCsvImageSet(train_csv, label_columns, transform=train_transform,
                                  allow_outside_paths=allow_outside_paths, data_root=data_root,
                                  **options)
    val = MultiLabelCsvImageSet(val_csv, train.classes, transform=val_transform,
                                allow_outside_paths=allow_outside_paths, data_root=data_root,
                                **options)
    return train, val


def evaluation_set(
    *,
    transform: Callable,
    classes: list[str] | None,
    data_root: PathLike = None,
    val_dir: PathLike = None,
    val_csv: PathLike = None,
    allow_outside_paths: bool = False,
    positive_class: str | None = None,
    multilabel: bool = False,
    **options: Unpack[ReadOptions],
) -> ImageSet:
    """The labelled set to evaluate: PALM validation split, a grading download's, class
    folders or a CSV (for a multi-label model: a CSV with its label columns).

    Args:
        classes: class names of the checkpoint, so labels map to the model's outputs (None
            for an old checkpoint without names: the data's, ordered as in training).
        positive_class: for two classes, the positive class; it must agree with `classes`.
    """
    if multilabel:
        if not val_csv:
            raise BadConfig("a multi-label model is evaluated on a CSV list (path and its label "
                            f"columns {classes}): give val_csv", param="val_csv")
        return MultiLabelCsvImageSet(val_csv, classes, transform=transform, data_root=data_root,
                                     allow_outside_paths=allow_outside_paths, **options)
    grading = find_grading_layout(data_root) if not (val_csv or val_dir) else None
    if grading is not None:
        if grading.val is None:
            raise BadConfig(f"{data_root}: {grading.name} has no labelled validation images; "
                            "training carved them and listed them in RUN/val_split.csv: "
                            f"evaluate with --val-csv RUN/val_split.csv --data-root {data_root}",
                            param=("data_root", "val_csv"))
        return GradedImageSet(grading.val, transform=transform, **options)
    palm = is_palm_layout(data_root, val_csv)
    given = [name for name, v in (("data_root", palm), ("val_dir", val_dir),
                                  ("val_csv", val_csv)) if v]
    if len(given) != 1 or (data_root and val_dir):
        raise BadConfig("give exactly one of data_root, val_dir, val_csv (data_root "
                        "with val_csv: the folder of its images)"
                        + (f" (got {', '.join(given)})" if given else ""),
                        param=("data_root", "val_dir", "val_csv"))
    if classes and positive_class is not None and positive_class != positive_class_of(classes):
        class_order(classes, positive_class)  # more than two classes: says it does not apply
        raise BadConfig(f"the checkpoint's positive class is {positive_class_of(classes)!r} "
                         f"(classes {classes}), not {positive_class!r}")
    if palm:
        layout = find_palm_layout(data_root)
        dataset: ImageSet = PalmValSet(layout.val_dir, layout.val_labels, transform=transform,
                                       allow_outside_paths=allow_outside_paths, **options)
    else:
        kind = "dir" if val_dir else "csv"
        dataset = _generic_set(kind, val_dir or val_csv, classes, transform,
                               options, allow_outside_paths, data_root)
    dataset.set_class_order(classes or class_order(dataset.classes, positive_class))
    return dataset


def positive_class_of(classes: list[str]) -> str | None:
    """The positive class (label 1) of two-class data; None for more classes."""
    return classes[1] if len(classes) == 2 else None


def resolve_task(task: str | None, classes: list[str], data_task: str | None = None) -> str:
    """The task of data with `classes` (null: the data's own, `data_task`, e.g. ordinal for
    a grading download; else binary for two classes, multiclass for more).

    Raises:
        BadConfig: a task the classes cannot be: binary with more than two classes,
            multiclass with two (they train as binary, one logit), ordinal unless the
            classes are the grades 0..K-1 with K >= 3.
    """
    if task is None:
        task = data_task or ("binary" if len(classes) == 2 else "multiclass")
    if (task == "multilabel") != (data_task == "multilabel"):
        raise BadConfig("task multilabel needs label_columns (or --label-columns) and "
                        "multi-label CSVs" if task == "multilabel" else
                        f"task {task}: the data is multi-label ({len(classes)} label columns)",
                        param="task")
    if task == "multilabel" and len(classes) < 2:
        raise BadConfig(f"task multilabel: one label column {classes}; that is a binary task",
                        param="task")
    if task == "binary" and len(classes) != 2:
        raise BadConfig(f"task binary: the data has {len(classes)} classes {classes}",
                        param="task")
    if task == "multiclass" and len(classes) < 3:
        raise BadConfig(f"task multiclass: the data has {len(classes)} classes {classes}; two "
                        "classes train as binary (one logit)", param="task")
    if task == "ordinal" and (len(classes) < 3 or classes != [str(g) for g in range(len(classes))]):
        raise BadConfig(f"task ordinal: the labels must be the grades 0..K-1 (K >= 3); the data's "
                        f"classes are {classes}", param="task")
    return task


def num_outputs_for(classes: list[str], task: str | None = None) -> int:
    """One logit for two classes (sigmoid + BCE), K logits for K > 2 classes (softmax), one
    logit per label for a multi-label task (sigmoid each)."""
    if task == "multilabel":
        return len(classes)
    if len(classes) < 2:
        raise BadData(f"need at least two classes, got {classes}")
    return 1 if len(classes) == 2 else len(classes)
