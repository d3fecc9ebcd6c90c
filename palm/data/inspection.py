"""What a data set holds: images per split and class, image sizes, and every file that
cannot be used (unreadable, corrupt, wrong type), without stopping at the first.

Example:
    report = summarize(load_splits("demo_data/palm"))
    report["splits"]["train"]["counts"], report["splits"]["train"]["problems"]
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from palm.data.datasets import PALM_TRAIN_DIR, ImageSet, PalmTrainSet, open_image_set
from palm.data.transforms import build_transform

__all__ = ["image_size", "load_splits", "summarize"]


def load_splits(source: str | os.PathLike) -> dict[str, ImageSet]:
    """Every split of `source` (PALM root: train and val; otherwise one "all" split).

    Sets are opened with skip_bad=True and a tiny decode size, so every file is decoded
    (at 1/8 scale where possible) and problems land in `.skipped` instead of raising.
    """
    kw = {"transform": build_transform(32, train=False), "skip_bad": True}
    first = open_image_set(source, split="train", **kw)
    if isinstance(first, PalmTrainSet) and Path(source).name.lower() != PALM_TRAIN_DIR.lower():
        return {"train": first, "val": open_image_set(source, split="val", **kw)}
    return {"all": first}


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.size


def summarize(splits: dict[str, ImageSet]) -> dict:
    """Counts per split and class, size histogram per split, and all problems."""
    report: dict = {"splits": {}}
    for name, ds in splits.items():
        counts = np.bincount(ds.labels, minlength=len(ds.classes))
        sizes = Counter(image_size(p) for p, _ in ds.samples)
        report["splits"][name] = {
            "classes": ds.classes,
            "counts": dict(zip(ds.classes, counts.tolist())),
            "images": len(ds),
            "sizes": [{"width": w, "height": h, "count": n} for (w, h), n in sorted(sizes.items())],
            "problems": [{"where": w, "problem": p} for w, p in ds.skipped],
        }
    return report
