"""scikit-learn's bundled handwritten digits as a folder-per-class image set.

`sklearn.datasets.load_digits` ships 1,797 8 x 8 grey digits (16 grey levels) with
scikit-learn itself, so no download is needed. They are scaled to 0-255, enlarged to
`size` px (default 32, the classic LeNet-5 input) and written as PNGs into a stratified
train/val split: OUT/train/<digit>/<index>.png and OUT/val/<digit>/<index>.png, ready for
`--train-dir OUT/train --val-dir OUT/val`.

Example:
    export_digits("data/digits", size=32, per_class=50)
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits

from palm.data.splits import holdout_split
from palm.errors import BadConfig
from palm.io_utils import atomic_path

GREY_LEVELS = 16  # load_digits pixel values run 0..16


def digit_images(size: int, per_class: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images N x size x size, labels N, original indices N) of the bundled digits.

    Args:
        size: output side in pixels (>= 8); enlarged with bilinear interpolation.
        per_class: keep at most this many images of each digit (a random choice), or all.
    """
    if size < 8:
        raise BadConfig(f"size must be >= 8 (the digits are 8 x 8), got {size}")
    if per_class is not None and per_class < 2:
        raise BadConfig(f"per_class must be >= 2 (one for training, one for validation), "
                        f"got {per_class}")
    digits = load_digits()
    index = np.arange(len(digits.target))
    if per_class is not None:
        rng = np.random.default_rng(seed)
        index = np.sort(np.concatenate([
            rng.permutation(index[digits.target == c])[:per_class]
            for c in np.unique(digits.target)]))
    grey = (digits.images[index] * (255.0 / GREY_LEVELS)).clip(0, 255).astype(np.uint8)
    images = np.stack([cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)
                       for g in grey])
    return images, digits.target[index], index


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.tobytes())


def export_digits(out: str | Path, size: int = 32, val_fraction: float = 0.25,
                  per_class: int | None = None, seed: int = 0) -> Path:
    """Write OUT/train/<digit>/*.png and OUT/val/<digit>/*.png (stratified split); return OUT.

    File names are the digit's index in `load_digits`, so a re-export writes the same files.
    """
    out = Path(out)
    images, labels, index = digit_images(size, per_class, seed)
    train, val = holdout_split(labels, val_fraction, seed, name="val_fraction")
    for split, rows in (("train", train), ("val", val)):
        for row in rows:
            _write_png(out / split / str(labels[row]) / f"{index[row]:04d}.png", images[row])
    return out
