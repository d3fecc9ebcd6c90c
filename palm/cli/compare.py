"""Compare two or more models evaluated on the same images.

Examples:
    python tools/compare.py runs/lenet runs/resnet18 --output runs/comparison
    python tools/compare.py a/eval/predictions.csv b/eval/predictions.csv --names A,B

Each input is a tools/eval.py predictions.csv, its eval folder, or a run folder holding
eval/predictions.csv; rows are matched by file, and all must score the same images.
Writes to --output: leaderboard.md (printed too) and leaderboard.csv (AUC, sensitivity,
specificity, accuracy with 95 % intervals), pairs.csv (for every pair: AUC difference with
a paired bootstrap interval and DeLong's p, McNemar's p on the decisions), roc_overlay.png,
and for run folders with a metrics.csv curves_overlay.png (their training curves together).
Graders (task ordinal) are ranked by quadratic kappa (with MAE and the referable AUC; pairs:
kappa difference by paired bootstrap, DeLong on the referable AUC); multi-label models by
macro AUC (with mAP; pairs: macro difference by paired bootstrap, pairs_per_label.csv with
DeLong per label). Models of different tasks are refused.
"""
from __future__ import annotations

import argparse
from typing import Any

from palm.cli.common import add_output_option, add_verbosity_options, command_parser, params_of, library_call

RUNS = "palm.reports.tasks:run_compare"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    p.add_argument("sources", nargs="+", metavar="RUN_OR_CSV",
                   help="predictions.csv of tools/eval.py, its folder, or a run folder")
    p.add_argument("--names", help="comma-separated model names (default: run folder names)")
    add_output_option(p, "folder for the tables and the plot", default="comparison")
    p.add_argument("--ci-resamples", type=int, default=2000,
                   help="bootstrap resamples for the AUC intervals (seeded)")
    p.add_argument("--seed", type=int, default=0)
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    params = params_of(args)
    params["names"] = args.names.split(",") if args.names else None
    return params


main = library_call(__name__)
