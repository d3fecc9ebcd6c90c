"""Generic layouts: images listed in a CSV (`path`, `label`, or one 0/1 column per label)
and one folder per class."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Unpack

import cv2
import numpy as np
import pandas as pd

from palm.data.image_io import ImageReadError
from palm.data.imageset import ImageOptions, ImageSet
from palm.data.listing import (
    find_column,
    images_in,
    int_label,
    listed_image,
    read_table,
    row_location,
    row_number,
)
from palm.errors import BadData


class CsvImageSet(ImageSet):
    """Images listed in a CSV with `path` and `label` columns (found by name).

    Paths must stay inside `root` or `data_root` (no absolute names, no `../` out of them)
    unless `allow_outside_paths`. A file listed twice with the same label is kept once (with
    a warning); with two labels it is an error.

    Args:
        csv_path: the CSV.
        root: folder relative paths resolve against (default: the CSV's folder).
        classes: class names (index = label). Labels may be ints or names from this list.
            None: all-integer labels give classes "0".."max", other labels the sorted names;
            then labels mixing numbers and names, or a label so rare it looks like a typo
            (fewer than 2 rows and under 1 % of them), are errors naming the row.
        data_root: a folder relative paths may also lead into (e.g. lists written by
            data_tools.prepare beside the data: `../images/a.jpg`).
        allow_outside_paths: accept absolute paths and paths leaving `root` and `data_root`.
        transform, skip_bad, cache_dir, max_pixels, cache_size_gb: as in PalmTrainSet.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        root: str | os.PathLike | None = None,
        classes: list[str] | None = None,
        allow_outside_paths: bool = False,
        data_root: str | os.PathLike | None = None,
        **options: Unpack[ImageOptions],
    ):
        super().__init__(**options)
        self.root = Path(root) if root is not None else Path(csv_path).parent
        table = read_table(csv_path)
        paths = table[find_column(table, "path", csv_path)]
        raw_labels = table[find_column(table, "label", csv_path)]
        wheres = [row_location(csv_path, i) for i in range(len(table))]
        problems: list[tuple[str, str]] = []
        if classes is not None:
            self.classes = [str(c) for c in classes]
        else:
            self.classes, problems = _infer_classes(list(raw_labels), wheres)
        ints = [int_label(v) for v in raw_labels]
        by_name = {c: i for i, c in enumerate(self.classes)}
        flagged = {where for where, _ in problems}
        listed = []
        for where, name, raw, as_int in zip(wheres, paths, raw_labels, ints):
            if where in flagged:
                continue
            label = by_name.get(str(raw), as_int)
            if label is None or not 0 <= label < len(self.classes):
                problems.append((where, f"{name}: label {raw} not in {self.classes}"))
                continue
            path = _listed_path(self.root, name, where, problems, allow_outside_paths, data_root)
            if path is not None:
                listed.append((where, path, label))
        self._finish_listing(listed, problems)


def _listed_path(root: Path, name: object, where: str, problems: list[tuple[str, str]],
                 allow_outside_paths: bool, data_root: str | os.PathLike | None) -> str | None:
    """The image a CSV row's `path` names, or None with the problem added to `problems`."""
    if pd.isna(name) or not str(name).strip():
        problems.append((where, "empty path"))
        return None
    try:
        return str(listed_image(root, str(name), "path", allow_outside_paths, data_root))
    except BadData as e:
        problems.append((where, str(e)))
        return None


def _infer_classes(raw_labels: list[object], wheres: list[str]
                   ) -> tuple[list[str], list[tuple[str, str]]]:
    """(class names, problems) for CSV labels given without a class list.

    All-integer labels give "0".."max"; names give their sorted set. Rows whose label is a
    name among mostly numbers (or the reverse), or a label under 1 % of the rows and seen
    once, are problems: a `2` or `yes` among 0/1 labels would otherwise make a third class.
    """
    present = [(w, v) for w, v in zip(wheres, raw_labels) if not pd.isna(v)]
    numeric = [(w, v) for w, v in present if int_label(v) is not None]
    named = [(w, v) for w, v in present if int_label(v) is None]
    problems = []
    if numeric and named:
        odd, usual = (named, "numbers") if len(named) <= len(numeric) else (numeric, "names")
        problems += [(w, f"label {v!r} is not like the other labels ({usual})") for w, v in odd]
        odd_rows = {w for w, _ in odd}
        present = [(w, v) for w, v in present if w not in odd_rows]
    keys = [str(int_label(v)) if int_label(v) is not None else str(v) for _, v in present]
    counts = pd.Series(keys, dtype=object).value_counts()
    rare = {k for k, n in counts.items() if n < 2 and n < 0.01 * len(keys)}
    problems += [(w, f"label {v!r} occurs in 1 of {len(keys)} rows (a typo? list every class "
                     "in class_names to keep it)") for (w, v), k in zip(present, keys) if k in rare]
    keys = [k for k in keys if k not in rare]
    if keys and all(k.lstrip("-").isdigit() for k in keys):
        classes = [str(i) for i in range(max([0, *map(int, keys)]) + 1)]
    else:
        classes = sorted(set(keys))
    return classes, sorted(problems, key=lambda p: row_number(p[0]))


class FolderImageSet(ImageSet):
    """One folder per class: `root/<class>/*.{jpg,jpeg,png,bmp,tif,tiff}`.

    Args:
        root: the folder holding the class folders.
        classes: class folder names in label order (default: sorted sub-folder names).
        transform, skip_bad, cache_dir, max_pixels, cache_size_gb: as in PalmTrainSet.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        classes: list[str] | None = None,
        **options: Unpack[ImageOptions],
    ):
        super().__init__(**options)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: folder not found")
        if classes is None:
            classes = sorted(
                d.name
                for d in self.root.iterdir()
                if d.is_dir() and not d.name.startswith((".", "__"))
            )
        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise BadData(f"{self.root}: no class folders found")
        entries = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: class folder not found")
            entries += [(str(p), label) for p in images_in(folder)]
        self._finish(entries, [])


class MultiLabelCsvImageSet(ImageSet):
    """Images listed in a CSV with `path` and one 0/1 column per label (ODIR-5K's eight
    diseases, say): several labels per image, each yes or no.

    Args:
        csv_path: the CSV.
        label_columns: the label columns, in output order (None: every column but `path`).
        root, data_root, allow_outside_paths: as in CsvImageSet.
        transform, skip_bad, cache_dir, max_pixels, cache_size_gb: as in PalmTrainSet.

    Attributes:
        classes: the label names; samples hold a tuple of 0/1 per label.
    """

    task = "multilabel"

    def __init__(
        self,
        csv_path: str | os.PathLike,
        label_columns: list[str] | None = None,
        root: str | os.PathLike | None = None,
        allow_outside_paths: bool = False,
        data_root: str | os.PathLike | None = None,
        **options: Unpack[ImageOptions],
    ):
        super().__init__(**options)
        self.root = Path(root) if root is not None else Path(csv_path).parent
        table = read_table(csv_path)
        path_column = find_column(table, "path", csv_path)
        names = label_columns or [c for c in table.columns if c != path_column]
        columns = [find_column(table, str(name), csv_path) for name in names]
        if not columns:
            raise BadData(f"{csv_path}: no label columns beside {path_column!r}")
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:  # one output per label: a checkpoint with two of one name cannot load
            raise BadData(f"{csv_path}: label column(s) {', '.join(repeated)} chosen more than once")
        self.classes = [str(c) for c in columns]
        listed, problems = [], []
        for i, row in enumerate(table[[path_column, *columns]].itertuples(index=False)):
            where = row_location(csv_path, i)
            name, values = row[0], row[1:]
            labels = tuple(int_label(v) for v in values)
            bad = [(c, v) for c, v, label in zip(columns, values, labels) if label not in (0, 1)]
            if bad:
                problems.append((where, f"{bad[0][0]} is {bad[0][1]!r}, not 0 or 1"))
                continue
            path = _listed_path(self.root, name, where, problems, allow_outside_paths, data_root)
            if path is not None:
                listed.append((where, path, labels))
        self._finish_listing(listed, problems)

    @property
    def labels(self) -> np.ndarray:
        """(N, L) int64: 1 where the image has the label."""
        return np.array([label for _, label in self.samples], dtype=np.int64).reshape(
            len(self.samples), len(self.classes))

    @property
    def label_shape(self) -> tuple[int, ...]:
        return (len(self.classes),)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        path, label = self.samples[index]
        image = self.read(path)
        try:
            return self.transform(image), np.asarray(label, dtype=np.int64)
        except (cv2.error, ValueError) as e:
            raise ImageReadError(path, " ".join(f"cannot transform: {e}".split())) from e

    def __repr__(self) -> str:
        positives = ", ".join(f"{c}: {n}" for c, n in zip(self.classes, self.labels.sum(0)))
        return f"{type(self).__name__}({len(self)} images; positives {positives})"
