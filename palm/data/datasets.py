"""Opening a data set from a path whatever its layout, and the one import point for the
data-set modules: `imageset` (the base, reading options, class order), `palm_layout` (PALM
as it ships), `generic` (CSV lists, class folders) and `listing` (tables and listed paths).
"""

from __future__ import annotations

import os
from pathlib import Path

from palm.data.generic import CsvImageSet, FolderImageSet
from palm.data.imageset import KNOWN_POSITIVE, ImageOptions, ImageSet, ReadOptions, class_order
from palm.data.listing import find_column, read_table, safe_join
from palm.data.palm_layout import (
    PALM_CLASSES,
    PALM_TRAIN_DIR,
    PalmLayout,
    PalmTrainSet,
    PalmValSet,
    find_folder,
    find_palm_layout,
    resolve_nested,
)
from palm.errors import BadData

__all__ = [
    "KNOWN_POSITIVE",
    "PALM_CLASSES",
    "PALM_TRAIN_DIR",
    "CsvImageSet",
    "FolderImageSet",
    "ImageOptions",
    "ImageSet",
    "PalmLayout",
    "PalmTrainSet",
    "PalmValSet",
    "ReadOptions",
    "class_order",
    "find_column",
    "find_palm_layout",
    "open_image_set",
    "read_table",
    "resolve_nested",
    "safe_join",
]


def open_image_set(source: str | os.PathLike, split: str = "train", **kw) -> ImageSet:
    """Open a data set from a path, whatever its layout.

    Args:
        source: a PALM root (holding PALM-Training400 etc.), a PALM-Training400 folder, a CSV
            with path,label columns, or a folder with one sub-folder per class.
        split: for a PALM root, "train" or "val".
        **kw: passed to the data set (transform, skip_bad, cache_dir, ...).

    Returns:
        PalmTrainSet, PalmValSet, CsvImageSet or FolderImageSet.
    """
    path = Path(source)
    if path.is_file():
        return CsvImageSet(path, **kw)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.name.lower() == PALM_TRAIN_DIR.lower():
        return PalmTrainSet(path, **kw)
    if find_folder(path, PALM_TRAIN_DIR) is not None:
        layout = find_palm_layout(path)
        if split == "train":
            return PalmTrainSet(layout.train_dir, **kw)
        if split == "val":
            return PalmValSet(layout.val_dir, layout.val_labels, **kw)
        raise BadData(f"unknown PALM split {split!r}; choose train or val")
    return FolderImageSet(path, **kw)
