"""The base of every labelled data set: reading options, the checked listing of (path, label)
samples, and the class order (which of two classes is positive).

Every data set checks its listing when built (names, labels, missing files, paths escaping
the image folder). With `skip_bad=False` the first problem raises an error naming the file
and row; with `skip_bad=True` bad entries, including images that fail to decode, are moved
to `.skipped` as (file or row, reason) and logged, and the rest is usable.
"""

from __future__ import annotations

import copy
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, Sequence, TypedDict

import cv2
import numpy as np
import paddle

from palm.data.image_io import (
    CachedImageReader,
    ImageReadError,
    cache_size_setting,
    max_pixels_setting,
    read_image,
    resolve_cache_dir,
)
from palm.data.listing import row_number, unique_entries
from palm.data.transforms import build_transform
from palm.errors import BadData

log = logging.getLogger(__name__)

# Two-class data whose positive class is not named: one of these (case-insensitive) is
# taken as positive; otherwise palm asks for --positive-class rather than guess from the
# folder names' sort order (which made "normal" the positive class of PM/ + normal/).
KNOWN_POSITIVE = ("pm", "positive", "disease", "abnormal", "1", "yes", "true")


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
        # resolved (and checked) here, whether or not a cache is used, so workers need no env
        self._reading = (resolve_cache_dir(cache_dir), cache_size_setting(cache_size_gb),
                         max_pixels_setting(max_pixels))
        self.read = self._reader()
        self.samples: list[tuple[str, int]] = []
        self.classes: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.duplicates: list[str] = []  # rows dropped as repeats of an earlier row

    def _reader(self) -> Callable[[str], np.ndarray]:
        """The image reader for the transform: JPEGs decoded at reduced scale and cached at
        the size it needs (its `decode_size`)."""
        cache_dir, max_bytes, max_pixels = self._reading
        decode_size = getattr(self.transform, "decode_size", None)
        if cache_dir is not None:
            return CachedImageReader(cache_dir, decode_size, max_bytes, max_pixels)
        return partial(read_image, target_size=decode_size, max_pixels=max_pixels)

    def subset(self, indices: Sequence[int], transform: Callable | None = None) -> ImageSet:
        """The samples at `indices`, read with `transform` (default: this set's) at the size
        that transform decodes, as a set built with it reads them: a validation part carved
        from training data decodes as eval does, not at the augmentation's larger size."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in indices]
        if transform is not None:
            part.transform = transform
            part.read = part._reader()
        return part

    def _finish_listing(self, listed: list[tuple[str, str, int]],
                        problems: list[tuple[str, str]]) -> None:
        """`_finish` for (row, path, label) listings: duplicate rows dropped with a warning."""
        entries, conflicts, self.duplicates = unique_entries(listed)
        if self.duplicates:
            log.warning("%s: %d duplicate rows dropped:\n%s", type(self).__name__,
                        len(self.duplicates), "\n".join(f"  {d}" for d in self.duplicates))
        self._finish(entries, sorted(problems + conflicts, key=lambda p: row_number(p[0])))

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
