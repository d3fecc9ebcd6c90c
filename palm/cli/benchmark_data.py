"""Benchmark the input pipeline on PALM-sized JPEGs (a benchmark, not a test).

Reports decode+resize ms/image for a 2124x2056 JPEG (full decode vs reduced-scale decode vs
the cache), and DataLoader images/s without the cache and with it (cold and warm epochs).
Without --image, one synthetic fundus photo is drawn with palm.data.synth.

Example:
    palm benchmark-data --image-size 224 --n-images 48 --workers 0 2
"""

from __future__ import annotations

import argparse

from palm.bench.data import run_input_pipeline
from palm.cli.common import add_verbosity_options, run_tool


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", help="a real JPEG to use instead of a synthetic one")
    p.add_argument("--source-size", default="2124x2056", help="synthetic JPEG WIDTHxHEIGHT")
    p.add_argument("--image-size", type=int, default=224, help="model input side")
    p.add_argument("--repeats", type=int, default=20, help="timed decodes per method")
    p.add_argument("--n-images", type=int, default=48, help="images per loader epoch")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="num_workers values to try"
    )
    p.add_argument("--out", help="also write the figures to this JSON file")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> dict:
    return run_input_pipeline(args.image, args.source_size, args.image_size, args.repeats,
                              args.n_images, args.batch_size, args.workers, output=args.out)


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
