"""Per-channel RGB mean and std of a data set, on the 0..1 scale, as the model would see it.

Images are decoded (at reduced scale where possible), optionally fundus-cropped and resized
to `image_size`, then pixel sums are accumulated in float64. Use the result in place of the
ImageNet mean/std when training from scratch on a new kind of photo.

Example:
    data_set_stats("demo_data/palm", image_size=224)["mean"]
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from palm.data.datasets import ImageSet, open_image_set
from palm.data.transforms import crop_fundus, resize_square
from palm.io_utils import write_json_atomic

__all__ = ["channel_stats", "data_set_stats"]


class _Resize:
    """Dataset transform that stops before normalization: HWC uint8 at size x size."""

    def __init__(self, size: int, fundus_crop: bool):
        self.decode_size = size  # lets the data set decode JPEGs at reduced scale
        self.size = size
        self.fundus_crop = fundus_crop

    def __call__(self, img: np.ndarray) -> np.ndarray:
        return resize_square(crop_fundus(img) if self.fundus_crop else img, self.size)


def channel_stats(ds: ImageSet, max_images: int | None = None, seed: int = 0) -> dict:
    """Mean and std per RGB channel (0..1) over the images of `ds` (a random subset if max_images).

    `ds` must return HWC uint8 images (build it with a resize-only transform).
    """
    indices = np.arange(len(ds))
    if max_images and max_images < len(ds):
        indices = np.sort(np.random.default_rng(seed).choice(len(ds), max_images, replace=False))
    total = np.zeros(3)
    total_sq = np.zeros(3)
    pixels = 0
    for i in tqdm(indices, desc="stats", unit="img", leave=False):
        img = ds[int(i)][0].reshape(-1, 3).astype(np.float64) / 255.0
        total += img.sum(0)
        total_sq += (img * img).sum(0)
        pixels += img.shape[0]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean * mean, 0.0))
    return {"mean": mean.round(6).tolist(), "std": std.round(6).tolist(), "images": len(indices)}


def data_set_stats(source: str | os.PathLike, split: str = "train", image_size: int = 224,
                   fundus_crop: bool = False, max_images: int | None = None, seed: int = 0,
                   out: str | os.PathLike | None = None) -> dict:
    """channel_stats of a data set (unreadable images skipped), with the settings it was
    computed with; also written to `out` (JSON) when given.

    Args:
        source: a PALM root, path,label CSV or class-folder root.
        split: train or val (PALM root only).
    """
    ds = open_image_set(source, split=split, transform=_Resize(image_size, fundus_crop),
                        skip_bad=True)
    result = channel_stats(ds, max_images, seed)
    result.update(source=os.fspath(source), image_size=image_size, fundus_crop=fundus_crop)
    if out:
        write_json_atomic(out, result)
    return result
