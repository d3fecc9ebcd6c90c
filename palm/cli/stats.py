"""Per-channel RGB mean and std of a data set, on the 0..1 scale, as the model would see it.

Images are decoded (at reduced scale where possible), optionally fundus-cropped and resized to
--image-size, then pixel sums are accumulated in float64. Use the result in place of the
ImageNet mean/std when training from scratch on a new kind of photo.

Example:
    python -m data_tools.stats --data-root demo_data/palm --image-size 224 --out runs/stats.json
"""

from __future__ import annotations

import argparse

from palm.cli.common import add_data_source, add_verbosity_options, data_source, run_tool
from palm.data.stats import data_set_stats


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
    result = data_set_stats(data_source(args), args.split, args.image_size, args.fundus_crop,
                            args.max_images, args.seed, args.out)
    print(f"mean (RGB, 0..1): {result['mean']}")
    print(f"std  (RGB, 0..1): {result['std']}  ({result['images']} images)")
    return result


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
