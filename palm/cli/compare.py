"""Compare two or more models evaluated on the same images.

Examples:
    python tools/compare.py runs/lenet runs/resnet18 --output runs/comparison
    python tools/compare.py a/eval/predictions.csv b/eval/predictions.csv --names A,B

Each input is a tools/eval.py predictions.csv, its eval folder, or a run folder holding
eval/predictions.csv; rows are matched by file, and all must score the same images.
Writes to --output: leaderboard.md (printed too) and leaderboard.csv (AUC, sensitivity,
specificity, accuracy with 95 % intervals), pairs.csv (for every pair: AUC difference with
a paired bootstrap interval and DeLong's p, McNemar's p on the decisions), roc_overlay.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from palm.cli import add_verbosity_options, run_tool
from palm.config import check_options
from palm.reports.compare import compare_models
from palm.io_utils import output_lock


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="RUN_OR_CSV",
                   help="predictions.csv of tools/eval.py, its folder, or a run folder")
    p.add_argument("--names", help="comma-separated model names (default: run folder names)")
    p.add_argument("--output", default="comparison", help="folder for the tables and the plot")
    p.add_argument("--ci-resamples", type=int, default=2000,
                   help="bootstrap resamples for the AUC intervals (seeded)")
    p.add_argument("--seed", type=int, default=0)
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> Path:
    check_options({"ci_resamples": args.ci_resamples, "seed": args.seed})
    names = args.names.split(",") if args.names else None
    output = Path(args.output)
    with output_lock(output, folder=True):
        compare_models(args.sources, output, names, args.ci_resamples, args.seed)
    print((output / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"written to {output}: leaderboard.md, leaderboard.csv, pairs.csv, roc_overlay.png")
    return output


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
