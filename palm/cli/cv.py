"""Stratified k-fold cross-validation: one training run per fold, out-of-fold AUC with its CI.

Examples:
    python tools/cv.py --model resnet18 --data-root data/PALM --folds 5 --output runs/cv
    python tools/cv.py --model resnet18 --data-root data/PALM --pool-val --output runs/cv_all
    python tools/cv.py --config configs/lenet5.yaml --train-dir data/digits/train \\
        --val-dir data/digits/val --predict-val --output runs/cv_digits

All flags of tools/train.py apply to every fold. The folds cover the labelled training data
(PALM-Training400; with --pool-val also the validation set; else --train-dir/--train-csv).
Rerunning the same command resumes: finished folds are skipped, a fold cut short continues
from its `last`. --predict-val scores the validation set with each fold model and with
their mean (an ensemble). OUTPUT receives fold_K/ run folders, splits.csv,
oof_predictions.csv, folds.csv, summary.json and cv_roc.png. Graders (--task ordinal) are
split by grade and report quadratic kappa; multi-label data (--task multilabel
--label-columns ...) is split by iterative stratification (pip install
iterative-stratification) and reports macro AUC.
"""
from __future__ import annotations

import argparse
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import library_call, training_parser, verbosity
from palm.config import parse_training_args, resolved_config

RUNS = "palm.experiments.tasks:run_cv_task"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = training_parser(__doc__, prog)
    cv = p.add_argument_group("cross-validation")
    cv.add_argument("--folds", type=int, default=5, help="number of folds K (default 5)")
    cv.add_argument("--repeats", type=int, default=1,
                    help="repeat the K-fold split R times with different shuffles")
    cv.add_argument("--pool-val", action="store_true",
                    help="cross-validate training + validation data together")
    cv.add_argument("--predict-val", action="store_true",
                    help="score the validation set with the K fold models and their ensemble")
    cv.add_argument("--jobs", type=int, default=1, help="folds trained at once on this machine")
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return parse_training_args(parser, argv)


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"config": resolved_config(args), "demo": args.demo, "folds": args.folds,
            "repeats": args.repeats, "pool_val": args.pool_val,
            "predict_val": args.predict_val, "jobs": args.jobs}


def interrupted(args: argparse.Namespace) -> str:
    return "stopped: run the same command again to resume the cross-validation"


main = library_call(__name__)
cli = functools.partial(run_command, "cv")


def parse_and_run(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse `argv` and cross-validate (what `palm cv` does, without the exit)."""
    args = parse_training_args(get_args_parser(), argv)
    with verbosity(args):
        return main(args)
