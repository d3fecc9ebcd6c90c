"""Per-channel RGB mean and std of a data set, on the 0..1 scale, as the model would see it.

Images are decoded (at reduced scale where possible), optionally fundus-cropped and resized to
--image-size, then pixel sums are accumulated in float64. Use the result in place of the
ImageNet mean/std when training from scratch on a new kind of photo.

Example:
    python -m data_tools.stats --data-root demo_data/palm --image-size 224 --out runs/stats.json
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from tqdm import tqdm

from palm.cli.common import add_data_source, add_verbosity_options, data_source, run_tool
from palm.data import ImageSet, crop_fundus, open_image_set
from palm.data.transforms import resize_square
from palm.io_utils import write_json_atomic


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


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_source(p)
    p.add_argument("--split", default="train", help="train or val (PALM root only)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--fundus-crop", action="store_true")
    p.add_argument("--max-images", type=int, help="random subset of this many images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the result to this JSON file")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> dict:
    data = data_source(args)
    ds = open_image_set(
        data,
        split=args.split,
        transform=_Resize(args.image_size, args.fundus_crop),
        skip_bad=True,
    )
    result = channel_stats(ds, args.max_images, args.seed)
    result.update(
        source=os.fspath(data), image_size=args.image_size, fundus_crop=args.fundus_crop
    )
    print(f"mean (RGB, 0..1): {result['mean']}")
    print(f"std  (RGB, 0..1): {result['std']}  ({result['images']} images)")
    if args.out:
        write_json_atomic(args.out, result)
    return result


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
