"""Diabetic-retinopathy grading downloads as they ship, found by `--data-root`:

- APTOS-2019 (Kaggle): `train.csv` with `id_code,diagnosis` (grades 0-4) and
  `train_images/<id_code>.png`. It has no labelled validation images: training carves a
  stratified, seeded share of the training images (`val_fraction`).
- IDRiD, part B (disease grading): `B. Disease Grading/2. Groundtruths/a. IDRiD_Disease
  Grading_Training Labels.csv` and `b. ... Testing Labels.csv` with `Image name,Retinopathy
  grade`, images in `1. Original Images/a. Training Set/<name>.jpg` and `b. Testing Set/`.
  The testing set is the validation set.

Every row is checked where it is read: a grade outside 0..4 or an id without its image is an
error naming the row and the value (or, with skip_bad, skipped and listed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

from palm.data.imageset import ImageOptions, ImageSet
from palm.data.listing import find_column, int_label, read_table, row_location
from palm.errors import BadData

DR_GRADES = 5  # no DR, mild, moderate, severe non-proliferative, proliferative
APTOS_LABELS = "train.csv"
APTOS_IMAGES = "train_images"
IDRID_ROOT = "B. Disease Grading"
IDRID_LABELS = "2. Groundtruths"
IDRID_IMAGES = "1. Original Images"


@dataclass(frozen=True)
class GradingSplit:
    """A labels table and how its rows name images: folder / f"{name}{suffix}"."""

    table: Path
    name_column: str
    grade_column: str
    images: Path
    suffix: str


@dataclass(frozen=True)
class GradingLayout:
    name: str
    train: GradingSplit
    val: GradingSplit | None  # None: carve validation images from train


def find_grading_layout(data_root: str | os.PathLike | None) -> GradingLayout | None:
    """The APTOS-2019 or IDRiD grading layout under `data_root`, or None."""
    if not data_root:
        return None
    root = Path(data_root)
    if _is_aptos_table(root / APTOS_LABELS):
        if not (root / APTOS_IMAGES).is_dir():
            raise BadData(f"{root}: an APTOS-2019 {APTOS_LABELS} without its {APTOS_IMAGES}/ folder")
        return GradingLayout("APTOS-2019", GradingSplit(root / APTOS_LABELS, "id_code",
                                                        "diagnosis", root / APTOS_IMAGES, ".png"),
                             None)
    grading = root / IDRID_ROOT if (root / IDRID_ROOT).is_dir() else root
    labels = grading / IDRID_LABELS
    if labels.is_dir():
        def split(kind: str, folder: str) -> GradingSplit | None:
            tables = sorted(labels.glob(f"*{kind} Labels.csv"))
            return (GradingSplit(tables[0], "Image name", "Retinopathy grade",
                                 grading / IDRID_IMAGES / folder, ".jpg") if tables else None)

        train = split("Training", "a. Training Set")
        if train is not None:
            return GradingLayout("IDRiD", train, split("Testing", "b. Testing Set"))
    return None


def _is_aptos_table(path: Path) -> bool:
    """A train.csv whose header names APTOS-2019's columns (id_code, diagnosis)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        header = f.readline(4096).decode("utf-8", "replace").strip().lower()
    return {"id_code", "diagnosis"} <= {c.strip().strip('"') for c in header.split(",")}


class GradedImageSet(ImageSet):
    """The images of one GradingSplit, labelled with their grades 0..DR_GRADES-1.

    Args:
        split: the table and image folder.
        transform, skip_bad, cache_dir, max_pixels, cache_size_gb: as in PalmTrainSet.
    """

    task = "ordinal"  # what its labels are, unless the config says otherwise
    carved_from: str | None = None  # the layout, when carved from its training images

    def __init__(self, split: GradingSplit, **options: Unpack[ImageOptions]):
        super().__init__(**options)
        self.classes = [str(g) for g in range(DR_GRADES)]
        table = read_table(split.table)
        names = table[find_column(table, split.name_column, split.table)]
        grades = table[find_column(table, split.grade_column, split.table)]
        listed, problems = [], []
        for i, (name, raw) in enumerate(zip(names, grades)):
            where = row_location(split.table, i)
            grade = int_label(raw)
            if grade is None or not 0 <= grade < DR_GRADES:
                blank = raw is None or raw != raw or not str(raw).strip()  # NaN != NaN
                shown = "empty" if blank else repr(raw)
                problems.append((where, f"grade {shown} is not one of 0..{DR_GRADES - 1}"))
                continue
            stem = str(name).strip()
            if not stem or "/" in stem or "\\" in stem or stem in (".", ".."):
                problems.append((where, f"image name {name!r} is not a file name"))
                continue
            path = split.images / (stem if stem.lower().endswith(split.suffix) else stem + split.suffix)
            if not path.is_file():
                problems.append((where, f"{stem} has no image {path}"))
                continue
            listed.append((where, str(path), grade))
        self._finish_listing(listed, problems)


def grading_sets(layout: GradingLayout, *, train_transform, val_transform,
                 **options: Unpack[ImageOptions]) -> tuple[GradedImageSet, GradedImageSet | None]:
    """(training set, validation set or None when the layout has none to carve from)."""
    train = GradedImageSet(layout.train, transform=train_transform, **options)
    val = (GradedImageSet(layout.val, transform=val_transform, **options)
           if layout.val is not None else None)
    return train, val
