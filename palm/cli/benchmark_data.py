"""Benchmark the input pipeline on PALM-sized JPEGs (a benchmark, not a test).

Reports decode+resize ms/image for a 2124x2056 JPEG (full decode vs reduced-scale decode vs
the cache), and DataLoader images/s without the cache and with it (cold and warm epochs).
Without --image, one synthetic fundus photo is drawn with palm.data.synth.

Example:
    palm benchmark-data --image-size 224 --n-images 48 --workers 0 2
"""

from __future__ import annotations

import argparse
import functools

from palm.cli.common import cli as run_command
from palm.cli.common import (add_image_size_option, add_output_option, add_verbosity_options,
                             command_parser, library_call)

RUNS = "palm.bench.data:run_input_pipeline"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__.split("\n")[0], prog, split=False,
                       formatter=argparse.HelpFormatter)
    p.add_argument("--image", help="a real JPEG to use instead of a synthetic one")
    p.add_argument("--source-size", default="2124x2056", help="synthetic JPEG WIDTHxHEIGHT")
    add_image_size_option(p, default=224, help="model input side")
    p.add_argument("--repeats", type=int, default=20, help="timed decodes per method")
    p.add_argument("--n-images", type=int, default=48, help="images per loader epoch")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="num_workers values to try"
    )
    add_output_option(p, "also write the figures to this JSON file", hidden=("--out",))
    add_verbosity_options(p)
    return p


main = library_call(__name__)
cli = functools.partial(run_command, "benchmark-data")
