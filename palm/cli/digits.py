"""Export scikit-learn's bundled handwritten digits as a folder-per-class image set.

`sklearn.datasets.load_digits` ships 1,797 8 x 8 grey digits (16 grey levels) with
scikit-learn itself, so no download is needed. They are scaled to 0-255, enlarged to
`--image-size` px (default 32, the classic LeNet-5 input) and written as PNGs into a stratified
train/val split: OUT/train/<digit>/<index>.png and OUT/val/<digit>/<index>.png, ready for
`--train-dir OUT/train --val-dir OUT/val`.

Example:
    python -m data_tools.digits --output data/digits
    python -m data_tools.digits --output data/digits_small --per-class 50 --image-size 28
"""
from __future__ import annotations

import argparse
import functools

from palm.cli.common import cli as run_command
from palm.cli.common import (add_image_size_option, add_output_option, add_verbosity_options,
                             command_parser, library_call)

RUNS = "palm.data.tasks:run_digits"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__.split("\n")[0], prog, split=False,
                       formatter=argparse.HelpFormatter)
    add_output_option(p, "output folder (train/ and val/ inside)", required=True,
                      hidden=("--out",))
    add_image_size_option(p, default=32, help="image side in px (default 32)", hidden=("--size",))
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--per-class", type=int, help="at most this many images per digit")
    p.add_argument("--seed", type=int, default=0)
    add_verbosity_options(p)
    return p


main = library_call(__name__)
cli = functools.partial(run_command, "digits")
