"""Data sets for the PALM layout as it ships, plus generic CSV and folder-per-class layouts.

Every data set checks its listing when built (names, labels, missing files, paths escaping
the image folder). With `skip_bad=False` the first problem raises an error naming the file
and row; with `skip_bad=True` bad entries, including images that fail to decode, are moved
to `.skipped` as (file or row, reason) and logged, and the rest is usable.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PureWindowsPath
from typing import Callable, TypedDict, Unpack

import cv2
import numpy as np
import paddle
import pandas as pd

from palm.data.image_io import (
    CachedImageReader,
    ImageReadError,
    cache_size_setting,
    is_image_file,
    max_pixels_setting,
    read_image,
    resolve_cache_dir,
)
from palm.data.transforms import build_transform
from palm.errors import BadData
from palm.io_utils import read_csv

log = logging.getLogger(__name__)

PALM_CLASSES = ["non-PM", "PM"]
# Two-class data whose positive class is not named: one of these (case-insensitive) is
# taken as positive; otherwise palm asks for --positive-class rather than guess from the
# folder names' sort order (which made "normal" the positive class of PM/ + normal/).
KNOWN_POSITIVE = ("pm", "positive", "disease", "abnormal", "1", "yes", "true")
PALM_PREFIX_LABELS = {"H": 0, "N": 0, "P": 1}  # high myopia, normal, pathologic myopia
PALM_TRAIN_DIR = "PALM-Training400"
PALM_VAL_DIR = "PALM-Validation400"
PALM_GT_DIR = "PALM-Validation-GT"
PALM_GT_XLSX = "PM_Label_and_Fovea_Location.xlsx"
PALM_GT_CSV = "labels.csv"


class ReadOptions(TypedDict, total=False):
    """How a data set reads its images: the keyword arguments every ImageSet takes but
    `transform` (see PalmTrainSet)."""

    skip_bad: bool
    cache_dir: str | os.PathLike | None
    max_pixels: int | None
    cache_size_gb: float | None


class ImageOptions(ReadOptions, total=False):
    """ReadOptions and `transform`: the keyword arguments of ImageSet itself."""

    transform: Callable | None


class ImageSet(paddle.io.Dataset):
    """Base: a list of (path, label) samples read, transformed and returned as (CHW, int64).

    Subclasses collect entries and problems and call `_finish`.

    Attributes:
        samples: (image path, label) per sample.
        classes: class names; index = label.
        skipped: (file or row, reason) for every entry dropped with skip_bad=True.
    """

    def __init__(
        self,
        transform: Callable | None = None,
        skip_bad: bool = False,
        cache_dir: str | os.PathLike | None = None,
        max_pixels: int | None = None,
        cache_size_gb: float | None = None,
    ):
        super().__init__()
        self.transform = transform if transform is not None else build_transform(224, train=False)
        self.skip_bad = skip_bad
        # read JPEGs at reduced scale / cache them at the size the transform needs
        decode_size = getattr(self.transform, "decode_size", None)
        # resolved (and checked) here, whether or not a cache is used, so workers need no env
        max_pixels = max_pixels_setting(max_pixels)
        max_bytes = cache_size_setting(cache_size_gb)
        cache_dir = resolve_cache_dir(cache_dir)
        if cache_dir is not None:
            self.read: Callable[[str], np.ndarray] = CachedImageReader(
                cache_dir, decode_size, max_bytes, max_pixels)
        else:
            self.read = partial(read_image, target_size=decode_size, max_pixels=max_pixels)
        self.samples: list[tuple[str, int]] = []
        self.classes: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.duplicates: list[str] = []  # rows dropped as repeats of an earlier row

    def _finish_listing(self, listed: list[tuple[str, str, int]],
                        problems: list[tuple[str, str]]) -> None:
        """`_finish` for (row, path, label) listings: duplicate rows dropped with a warning."""
        entries, conflicts, self.duplicates = _unique(listed)
        if self.duplicates:
            log.warning("%s: %d duplicate rows dropped:\n%s", type(self).__name__,
                        len(self.duplicates), "\n".join(f"  {d}" for d in self.duplicates))
        self._finish(entries, sorted(problems + conflicts, key=lambda p: _row_number(p[0])))

    def _finish(self, entries: list[tuple[str, int]], problems: list[tuple[str, str]]) -> None:
        """Raise on the first problem, or (skip_bad) also decode every image and drop failures."""
        if problems and not self.skip_bad:
            where, reason = problems[0]
            raise BadData(f"{where}: {reason}")
        self.skipped = list(problems)
        if self.skip_bad:
            # cv2 releases the GIL, so threads decode in parallel; with a cache this also fills it
            with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
                errors = list(pool.map(self._check, (path for path, _ in entries)))
            for entry, error in zip(entries, errors):
                if error is None:
                    self.samples.append(entry)
                else:
                    self.skipped.append((entry[0], error))
        else:
            self.samples = list(entries)
        if self.skipped:
            log.warning(
                "%s: skipped %d bad entries:\n%s",
                type(self).__name__,
                len(self.skipped),
                "\n".join(f"  {w}: {r}" for w, r in self.skipped),
            )
        if not self.samples:
            raise BadData(
                f"{type(self).__name__}: no usable images"
                + (f" ({len(self.skipped)} skipped)" if self.skipped else "")
            )

    def _check(self, path: str) -> str | None:
        try:
            self.read(path)
        except ImageReadError as e:
            return e.problem
        return None

    def set_class_order(self, classes: list[str]) -> None:
        """Relabel the samples so that `classes` (the same names, reordered) is the order.

        Raises:
            ValueError: `classes` is not a reordering of `self.classes`, naming both.
        """
        classes = [str(c) for c in classes]
        if sorted(classes) != sorted(self.classes):
            raise BadData(f"class names {classes} do not match the data's classes "
                             f"{self.classes}")
        new_index = [classes.index(c) for c in self.classes]
        self.samples = [(path, new_index[label]) for path, label in self.samples]
        self.classes = classes

    @property
    def labels(self) -> np.ndarray:
        """Labels of all samples, int64, in sample order."""
        return np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        path, label = self.samples[index]
        image = self.read(path)
        try:
            return self.transform(image), np.int64(label)
        except (cv2.error, ValueError) as e:  # odd geometry (e.g. 1 px wide) the transform rejects
            raise ImageReadError(path, " ".join(f"cannot transform: {e}".split())) from e

    def __repr__(self) -> str:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        per_class = ", ".join(f"{c}: {n}" for c, n in zip(self.classes, counts))
        return (
            f"{type(self).__name__}({len(self)} images; {per_class}; skipped {len(self.skipped)})"
        )


def class_order(classes: list[str], positive_class: str | None = None,
                explicit: bool = False) -> list[str]:
    """The class order to train with: for two classes, the positive one at index 1 (label 1).

    Args:
        classes: the class names found in the data, or given in the config.
        positive_class: the positive class's name (exact, else case-insensitive match).
        explicit: `classes` is an order the user gave ([negative, positive] for two classes);
            a `positive_class` must then agree with it.

    Returns:
        `classes`, reordered for two classes.

    Raises:
        ValueError: positive_class unknown, given for other than two classes or contradicting
            an explicit order; or two classes none (or both) of which is a known positive
            name (KNOWN_POSITIVE) and no positive_class, naming both classes.
    """
    classes = [str(c) for c in classes]
    if len(classes) != 2:
        if positive_class is not None:
            raise BadData(f"positive_class applies to two-class data; the data has "
                          f"{len(classes)} classes {classes}", param="positive_class")
        return classes
    if positive_class is not None:
        matches = [c for c in classes if c == positive_class] or [
            c for c in classes if c.lower() == str(positive_class).lower()]
        if len(matches) != 1:
            raise BadData(f"positive class {positive_class!r} is not one of the two classes "
                             f"{classes[0]!r} and {classes[1]!r}")
        positive = matches[0]
        if explicit and classes[1] != positive:
            raise BadData(f"class_names {classes} put {classes[1]!r} second (the positive "
                             f"class) but the positive class is {positive!r}")
    elif explicit:
        return classes
    else:
        known = [c for c in classes if c.lower() in KNOWN_POSITIVE]
        if len(known) != 1:
            a, b = classes
            raise BadData(
                f"two classes {a!r} and {b!r}: which one is positive (label 1, the class "
                f"sensitivity and probabilities refer to)? Give positive_class {b} or "
                f"positive_class {a} (or class_names: [negative, positive] in the config)",
                param="positive_class")
        positive = known[0]
    return [c for c in classes if c != positive] + [positive]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def resolve_nested(folder: str | os.PathLike) -> Path:
    """The folder that holds the images: `folder` itself, or the one level deeper copy an unzip
    leaves (PALM-Training400/PALM-Training400), or its only sub-folder with images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    if _images_in(folder):
        return folder
    same_name = folder / folder.name
    if same_name.is_dir():
        return same_name
    subs = [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))]
    with_images = [d for d in subs if _images_in(d)]
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
        files = _images_in(self.root)
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


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ground-truth table: .xlsx/.xls with pandas+openpyxl, anything else as CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            return pd.read_excel(path)
        # a list palm wrote (prepare, cv folds) has its formula-like cells escaped
        return read_csv(path)
    except Exception as e:  # pandas/openpyxl raise many types for a broken file
        raise BadData(f"{path}: cannot read table ({type(e).__name__}: {e})") from e


def find_column(table: pd.DataFrame, name: str, source: str | os.PathLike) -> str:
    """The column of `table` matching `name`, ignoring case, spaces and underscores."""

    def key(s: object) -> str:
        return str(s).lower().replace(" ", "").replace("_", "")

    for col in table.columns:
        if key(col) == key(name):
            return col
    raise BadData(f"{source}: no column {name!r} (found: {', '.join(map(str, table.columns))})")


def _row(source: str | os.PathLike, index: int) -> str:
    # row numbers as a spreadsheet or text editor shows them: the header is row 1
    return f"{source} row {index + 2}"


def _row_number(where: str) -> int:
    """The row number of a `_row` location (problems are reported in file order)."""
    tail = where.rsplit(" row ", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


def _int_label(value: object) -> int | None:
    """1, 1.0, "1" -> 1; anything else (NaN, 0.5, "PM") -> None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def safe_join(folder: Path, name: str, allow_outside: bool = False,
              also_inside: str | os.PathLike | None = None) -> Path:
    """`folder / name`, refusing absolute names and names that leave `folder` (../x.jpg).

    The check is on the name as written (normalised, symlinks not followed), so a list may
    point into a symlinked image folder but not name files elsewhere.

    Args:
        allow_outside: accept any name (absolute names then stand for themselves).
        also_inside: a second folder (the data root) that relative names may lead into.
    """
    name = name.strip().replace("\\", "/")  # Windows separators in a CSV made on Windows
    if allow_outside:
        return folder / name
    if os.path.isabs(name) or PureWindowsPath(name).drive:
        raise BadData(f"absolute path {name!r} not allowed; give a name relative to "
                      f"{folder} (or pass allow_outside_paths)", param="allow_outside_paths")
    path = Path(os.path.abspath(folder / name))
    roots = [folder] + ([Path(also_inside)] if also_inside is not None else [])
    if not any(Path(os.path.abspath(root)) in (path, *path.parents) for root in roots):
        also = f" and the data root {also_inside}" if also_inside is not None else ""
        raise BadData(f"{name!r} escapes the image folder {folder}{also} (pass "
                      "allow_outside_paths to allow it)", param="allow_outside_paths")
    return folder / name


def _listed_image(folder: Path, name: str, column: str, allow_outside: bool,
                  also_inside: str | os.PathLike | None = None) -> Path:
    """The image file a table's `column` names (see safe_join).

    Raises:
        BadData: the name leaves the allowed folders, or no such file.
    """
    try:
        path = safe_join(folder, name, allow_outside, also_inside)
    except ValueError as e:
        raise BadData(f"{column} {e}") from None
    if not path.is_file():
        raise BadData(f"image {name!r} not found in {folder}")
    return path


def _unique(listed: list[tuple[str, str, int]]) -> tuple[list[tuple[str, int]],
                                                           list[tuple[str, str]], list[str]]:
    """(entries, problems, duplicates) from (row, path, label) listings.

    A file listed again with the same label is dropped (reported in `duplicates`, so it is
    not counted twice); with another label it is a problem naming both rows.
    """
    first: dict[str, tuple[str, int]] = {}
    entries, problems, duplicates = [], [], []
    for where, path, label in listed:
        key = os.path.normcase(os.path.abspath(path))
        if key not in first:
            first[key] = (where, label)
            entries.append((path, label))
        elif first[key][1] == label:
            duplicates.append(f"{where}: {path} repeats {first[key][0]}; dropped")
        else:
            problems.append((where, f"{path} is also listed in {first[key][0]} with another "
                                    "label"))
    return entries, problems, duplicates


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
            where = _row(labels_file, i)
            if pd.isna(name) or not str(name).strip():
                problems.append((where, "empty imgName"))
                continue
            label = _int_label(raw)
            if label not in (0, 1):
                problems.append((where, f"{name}: label {raw} not in {{0, 1}}"))
                continue
            try:
                path = _listed_image(self.root, str(name), "imgName", allow_outside_paths)
            except BadData as e:
                problems.append((where, str(e)))
                continue
            listed.append((where, str(path), label))
        self._finish_listing(listed, problems)


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
        wheres = [_row(csv_path, i) for i in range(len(table))]
        problems: list[tuple[str, str]] = []
        if classes is not None:
            self.classes = [str(c) for c in classes]
        else:
            self.classes, problems = _infer_classes(list(raw_labels), wheres)
        ints = [_int_label(v) for v in raw_labels]
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
            if pd.isna(name) or not str(name).strip():
                problems.append((where, "empty path"))
                continue
            try:
                path = _listed_image(self.root, str(name), "path", allow_outside_paths, data_root)
            except BadData as e:
                problems.append((where, str(e)))
                continue
            listed.append((where, str(path), label))
        self._finish_listing(listed, problems)


def _infer_classes(raw_labels: list[object], wheres: list[str]
                   ) -> tuple[list[str], list[tuple[str, str]]]:
    """(class names, problems) for CSV labels given without a class list.

    All-integer labels give "0".."max"; names give their sorted set. Rows whose label is a
    name among mostly numbers (or the reverse), or a label under 1 % of the rows and seen
    once, are problems: a `2` or `yes` among 0/1 labels would otherwise make a third class.
    """
    present = [(w, v) for w, v in zip(wheres, raw_labels) if not pd.isna(v)]
    numeric = [(w, v) for w, v in present if _int_label(v) is not None]
    named = [(w, v) for w, v in present if _int_label(v) is None]
    problems = []
    if numeric and named:
        odd, usual = (named, "numbers") if len(named) <= len(numeric) else (numeric, "names")
        problems += [(w, f"label {v!r} is not like the other labels ({usual})") for w, v in odd]
        odd_rows = {w for w, _ in odd}
        present = [(w, v) for w, v in present if w not in odd_rows]
    keys = [str(_int_label(v)) if _int_label(v) is not None else str(v) for _, v in present]
    counts = pd.Series(keys, dtype=object).value_counts()
    rare = {k for k, n in counts.items() if n < 2 and n < 0.01 * len(keys)}
    problems += [(w, f"label {v!r} occurs in 1 of {len(keys)} rows (a typo? list every class "
                     "in class_names to keep it)") for (w, v), k in zip(present, keys) if k in rare]
    keys = [k for k in keys if k not in rare]
    if keys and all(k.lstrip("-").isdigit() for k in keys):
        classes = [str(i) for i in range(max([0, *map(int, keys)]) + 1)]
    else:
        classes = sorted(set(keys))
    return classes, sorted(problems, key=lambda p: _row_number(p[0]))


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
            entries += [(str(p), label) for p in _images_in(folder)]
        self._finish(entries, [])


@dataclass(frozen=True)
class PalmLayout:
    """Where the parts of a PALM download are."""

    train_dir: Path
    val_dir: Path
    val_labels: Path


def _find_dir(root: Path, name: str) -> Path | None:
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
    train = _find_dir(root, PALM_TRAIN_DIR)
    if train is None:
        raise FileNotFoundError(
            f"{root}: no {PALM_TRAIN_DIR} folder (looked up to three levels deep)"
        )
    val = _find_dir(root, PALM_VAL_DIR)
    if val is None:
        raise FileNotFoundError(
            f"{root}: no {PALM_VAL_DIR} folder (looked up to three levels deep)"
        )
    gt = _find_dir(root, PALM_GT_DIR)
    candidates = [gt / PALM_GT_XLSX, gt / PALM_GT_CSV] if gt is not None else []
    candidates += [val / PALM_GT_CSV, root / PALM_GT_CSV, root / PALM_GT_XLSX]
    labels = next((p for p in candidates if p.is_file()), None)
    if labels is None:
        raise FileNotFoundError(
            f"{root}: no validation ground truth ({PALM_GT_DIR}/{PALM_GT_XLSX} or {PALM_GT_CSV}); "
            f"looked for: {', '.join(str(p) for p in candidates)}"
        )
    return PalmLayout(resolve_nested(train), resolve_nested(val), labels)


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
    if _find_dir(path, PALM_TRAIN_DIR) is not None:
        layout = find_palm_layout(path)
        if split == "train":
            return PalmTrainSet(layout.train_dir, **kw)
        if split == "val":
            return PalmValSet(layout.val_dir, layout.val_labels, **kw)
        raise BadData(f"unknown PALM split {split!r}; choose train or val")
    return FolderImageSet(path, **kw)
