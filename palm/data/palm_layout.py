"""The PALM (iChallenge-PM) download as it ships: the training folder labelled by file-name
prefix, the validation folder with its ground-truth table, and finding both under a root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

import pandas as pd

from palm.data.imageset import ImageOptions, ImageSet
from palm.data.listing import (
    find_column,
    images_in,
    int_label,
    listed_image,
    read_table,
    row_location,
)
from palm.errors import BadData

PALM_CLASSES = ["non-PM", "PM"]
PALM_PREFIX_LABELS = {"H": 0, "N": 0, "P": 1}  # high myopia, normal, pathologic myopia
PALM_TRAIN_DIR = "PALM-Training400"
PALM_VAL_DIR = "PALM-Validation400"
PALM_GT_DIR = "PALM-Validation-GT"
PALM_GT_XLSX = "PM_Label_and_Fovea_Location.xlsx"
PALM_GT_CSV = "labels.csv"


def resolve_nested(folder: str | os.PathLike) -> Path:
    """The folder that holds the images: `folder` itself, or the one level deeper copy an unzip
    leaves (PALM-Training400/PALM-Training400), or its only sub-folder with images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    if images_in(folder):
        return folder
    same_name = folder / folder.name
    if same_name.is_dir():
        return same_name
    subs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))]
    with_images = [d for d in subs if images_in(d)]
    if len(with_images) == 1:
        return with_images[0]
    return folder


class PalmTrainSet(ImageSet):
    """PALM training folder: label from the first letter, H/N -> 0 (non-PM), P -> 1 (PM).

    Args:
        train_dir: PALM-Training400 (the nested PALM-Training400/PALM-Training400 is found).
        transform: image -> CHW float32; default eval transform at 224 px.
        skip_bad: drop bad files into `.skipped` instead of raising.
        cache_dir: folder for the resized-image cache; "auto" for the shared default
            (palm.data.default_cache_dir()); None for no cache.
        max_pixels: refuse images that would decode to more pixels (None: $PALM_MAX_PIXELS
            or 100 MP); see palm.data.read_image.
        cache_size_gb: the cache's size limit (None: $PALM_CACHE_SIZE_GB or 4 GB); least
            recently used entries are evicted beyond it.
    """

    def __init__(
        self,
        train_dir: str | os.PathLike,
        **options: Unpack[ImageOptions],
    ):
        super().__init__(**options)
        self.classes = list(PALM_CLASSES)
        self.root = resolve_nested(train_dir)
        files = images_in(self.root)
        if not files:
            raise BadData(
                f"{self.root}: no images ({', '.join(('*.jpg', '*.png', '...'))}) found"
            )
        entries, problems = [], []
        for path in files:
            label = PALM_PREFIX_LABELS.get(path.name[0].upper())
            if label is None:
                problems.append(
                    (
                        str(path),
                        f"unknown file-name prefix {path.name[0]!r}; "
                        "expected H (high myopia), N (normal) or P (PM)",
                    )
                )
            else:
                entries.append((str(path), label))
        self._finish(entries, problems)


class PalmValSet(ImageSet):
    """PALM validation images with labels from the ground-truth XLSX or CSV.

    Columns are found by name (`imgName`, `Label`; case, spaces and underscores ignored), so
    reordered or extra columns are fine. Labels must be 0 or 1.

    Args:
        image_dir: PALM-Validation400 (a nested copy is found).
        labels_file: PM_Label_and_Fovea_Location.xlsx or a CSV with the same columns.
        transform, skip_bad, cache_dir, max_pixels, cache_size_gb: as in PalmTrainSet.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        labels_file: str | os.PathLike,
        allow_outside_paths: bool = False,
        **options: Unpack[ImageOptions],
    ):
        super().__init__(**options)
        self.classes = list(PALM_CLASSES)
        self.root = resolve_nested(image_dir)
        self.labels_file = Path(labels_file)
        table = read_table(labels_file)
        name_col = find_column(table, "imgName", labels_file)
        label_col = find_column(table, "Label", labels_file)
        listed, problems = [], []
        for i, (name, raw) in enumerate(zip(table[name_col], table[label_col])):
            where = row_location(labels_file, i)
            if pd.isna(name) or not str(name).strip():
                problems.append((where, "empty imgName"))
                continue
            label = int_label(raw)
            if label not in (0, 1):
                problems.append((where, f"{name}: label {raw} not in {{0, 1}}"))
                continue
            try:
                path = listed_image(self.root, str(name), "imgName", allow_outside_paths)
            except BadData as e:
                problems.append((where, str(e)))
                continue
            listed.append((where, str(path), label))
        self._finish_listing(listed, problems)


@dataclass(frozen=True)
class PalmLayout:
    """Where the parts of a PALM download are."""

    train_dir: Path
    val_dir: Path
    val_labels: Path


def find_folder(root: Path, name: str) -> Path | None:
    """A folder called `name` (any case) up to three levels below `root`, shallowest first."""
    level = [root]
    for _ in range(3):
        subdirs = sorted(
            d
            for folder in level
            for d in folder.iterdir()
            if d.is_dir() and not d.name.startswith((".", "__"))
        )
        for d in subdirs:
            if d.name.lower() == name.lower():
                return d
        level = subdirs
    return None


def find_palm_layout(data_root: str | os.PathLike) -> PalmLayout:
    """Find PALM-Training400, PALM-Validation400 and the validation ground truth under `data_root`.

    Ground truth: PALM-Validation-GT/PM_Label_and_Fovea_Location.xlsx (as shipped) is preferred,
    then labels.csv in PALM-Validation-GT, the validation folder or `data_root`.

    Raises:
        FileNotFoundError: naming what is missing and where it was looked for.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    train = find_folder(root, PALM_TRAIN_DIR)
    if train is None:
        raise FileNotFoundError(
            f"{root}: no {PALM_TRAIN_DIR} folder (looked up to three levels deep)"
        )
    val = find_folder(root, PALM_VAL_DIR)
    if val is None:
        raise FileNotFoundError(
            f"{root}: no {PALM_VAL_DIR} folder (looked up to three levels deep)"
        )
    gt = find_folder(root, PALM_GT_DIR)
    candidates = [gt / PALM_GT_XLSX, gt / PALM_GT_CSV] if gt is not None else []
    candidates += [val / PALM_GT_CSV, root / PALM_GT_CSV, root / PALM_GT_XLSX]
    labels = next((p for p in candidates if p.is_file()), None)
    if labels is None:
        raise FileNotFoundError(
            f"{root}: no validation ground truth ({PALM_GT_DIR}/{PALM_GT_XLSX} or {PALM_GT_CSV}); "
            f"looked for: {', '.join(str(p) for p in candidates)}"
        )
    return PalmLayout(resolve_nested(train), resolve_nested(val), labels)
