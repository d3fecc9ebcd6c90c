"""Draw a synthetic PALM data set (palm.data.synth) in the exact PALM folder layout.

Example:
    palm synth --out demo_data/palm --n-train 400 --n-val 400
"""
from __future__ import annotations

import argparse
from pathlib import Path

from palm.cli.common import add_verbosity_options, run_tool
from palm.data.synth import make_palm_dataset
from palm.errors import BadConfig


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", required=True, help="output root (PALM folders are created inside)")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-val", type=int, default=400)
    p.add_argument("--image-size", default="512", help="side in px, or WIDTHxHEIGHT")
    p.add_argument("--difficulty", type=float, default=0.5, help="0 = obvious .. 1 = hard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=92, help="JPEG quality")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = none)")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> Path:
    if not 0.0 <= args.difficulty <= 1.0:
        raise BadConfig(f"--difficulty must be in 0..1, got {args.difficulty}")
    root = make_palm_dataset(
        args.out,
        args.n_train,
        args.n_val,
        args.image_size,
        args.difficulty,
        args.seed,
        args.quality,
        args.workers,
    )
    print(f"wrote {args.n_train} training + {args.n_val} validation images under {root}")
    return root


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
