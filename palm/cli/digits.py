"""Export scikit-learn's bundled handwritten digits as a folder-per-class image set.

`sklearn.datasets.load_digits` ships 1,797 8 x 8 grey digits (16 grey levels) with
scikit-learn itself, so no download is needed. They are scaled to 0-255, enlarged to
`--size` px (default 32, the classic LeNet-5 input) and written as PNGs into a stratified
train/val split: OUT/train/<digit>/<index>.png and OUT/val/<digit>/<index>.png, ready for
`--train-dir OUT/train --val-dir OUT/val`.

Example:
    python -m data_tools.digits --out data/digits
    python -m data_tools.digits --out data/digits_small --per-class 50 --size 28
"""
from __future__ import annotations

import argparse
from pathlib import Path

from palm.cli.common import add_verbosity_options, run_tool
from palm.data.digits import export_digits


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (train/ and val/ inside)")
    p.add_argument("--size", type=int, default=32, help="image side in px (default 32)")
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--per-class", type=int, help="at most this many images per digit")
    p.add_argument("--seed", type=int, default=0)
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> Path:
    out = export_digits(args.out, args.size, args.val_fraction, args.per_class, args.seed)
    counts = {split: sum(1 for _ in (out / split).rglob("*.png")) for split in ("train", "val")}
    print(f"wrote {counts['train']} training and {counts['val']} validation digits "
          f"({args.size} px) to {out}\n"
          f"train: python tools/train.py --model lenet5 --train-dir {out}/train "
          f"--val-dir {out}/val")
    return out


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
