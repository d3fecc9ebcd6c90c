"""Per-channel RGB mean and std of a data set, on the 0..1 scale, as the model would see it.

Images are decoded (at reduced scale where possible), optionally fundus-cropped and resized to
--image-size, then pixel sums are accumulated in float64. Use the result in place of the
ImageNet mean/std when training from scratch on a new kind of photo.

Example:
    python -m data_tools.stats --data-root demo_data/palm --image-size 224 --output runs/stats.json
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_data_source, add_image_size_option, add_output_option,
                             add_verbosity_options, command_parser, data_source, library_call,
                             params_of)

RUNS = "palm.data.tasks:run_stats"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__.split("\n")[0], prog, split=False,
                       formatter=argparse.HelpFormatter)
    add_data_source(p)
    p.add_argument("--split", default="train", help="train or val (PALM root only)")
    add_image_size_option(p, default=224)
    p.add_argument("--fundus-crop", action="store_true")
    p.add_argument("--max-images", type=int, help="random subset of this many images")
    p.add_argument("--seed", type=int, default=0)
    add_output_option(p, "also write the result to this JSON file", hidden=("--out",))
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    params = params_of(args)
    del params["data"], params["data_root"]
    return {"source": data_source(args), **params}


main = library_call(__name__)
cli = functools.partial(run_command, "stats")
