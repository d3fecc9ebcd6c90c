"""Inspect a data set: class counts, image sizes, corrupt or unusable files.

Writes to --out: `class_counts.png` (bar chart per split), `image_sizes.png` (width x height
scatter, marker area ~ number of images) and `inspect.json` (all figures and every problem).

Example:
    python -m data_tools.inspect --data-root demo_data/palm --out runs/inspect
"""

from __future__ import annotations

import argparse
from pathlib import Path

from palm.cli.common import add_data_source, add_verbosity_options, data_source, run_tool
from palm.viz.inspection import inspect_data_set


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_source(p)
    p.add_argument("--out", default="runs/inspect", help="folder for the plots and inspect.json")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    report = inspect_data_set(data_source(args), out)
    for name, split in report["splits"].items():
        counts = ", ".join(f"{c} {n}" for c, n in split["counts"].items())
        sizes = ", ".join(f"{s['width']}x{s['height']} ({s['count']})" for s in split["sizes"])
        print(f"{name}: {split['images']} images: {counts}; sizes: {sizes}")
        for problem in split["problems"]:
            print(f"  BAD {problem['where']}: {problem['problem']}")
    print(f"wrote {out / 'class_counts.png'}, {out / 'image_sizes.png'}, {out / 'inspect.json'}")
    return report


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
