"""Evaluate a saved checkpoint on labelled images.

Examples:
    python tools/eval.py --checkpoint runs/resnet50/best.pdparams --data-root data/PALM
    python tools/eval.py --checkpoint best.pdparams --val-dir data/val --tune-threshold
    python tools/eval.py --checkpoint runs/r18/best.pdparams --data-root data/PALM \
        --fit-temperature --operating-point sens=0.95

Writes to --output: metrics.json (accuracy, precision, recall/sensitivity, specificity, F1,
ROC AUC, average precision, threshold, counts; "ci95" intervals, "operating_points",
"calibration", "selection": optimistic or independent), predictions.csv, confusion_matrix.png,
roc_curve.png, pr_curve.png, reliability_diagram.png; prints the confusion matrix and a
summary line such as `AUC 0.953 (0.931-0.972)`. The model, its preprocessing, class names,
threshold and temperature come from the JSON file beside the checkpoint.
--fit-temperature and --operating-point are fitted on the images that selected the
checkpoint (training's select_on: val or holdout) and stored in that JSON file, so later
evals, tools/predict.py and tools/export.py use them.
"""
from __future__ import annotations

import argparse
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_data_options, add_device_option, add_output_option,
                             add_predictor_options,
                             add_reading_options, add_trust_option, add_verbosity_options,
                             command_parser, params_of, library_call)

RUNS = "palm.reports.tasks:run_eval"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    add_predictor_options(p)
    data = add_data_options(
        p, data_root_help="PALM root: evaluates the validation split; with --val-csv: a folder "
                          "its paths may lead into",
        split_help={"val": ("labelled images, one sub-folder per class",
                            "labelled images listed as path,label")})
    add_reading_options(data, cache_dir_default="auto")
    data.set_defaults(num_workers=0)
    add_output_option(p, "folder for the results (default: CHECKPOINT_FOLDER/eval, or the next "
                         "free eval-2, eval-3, ... when that holds an evaluation)")
    p.add_argument("--exist-ok", action="store_true",
                   help="replace the evaluation in --output (its files are rewritten whole: "
                        "a report.html of an earlier --report goes unless --report is given)")
    thr = p.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, help="decision threshold (default: the checkpoint's)")
    thr.add_argument("--tune-threshold", action="store_true",
                     help="use the Youden-J threshold of this data (exploratory: the figures "
                          "are then optimistic)")
    thr.add_argument("--operating-point", metavar="sens=X|spec=X|youden",
                     help="choose the threshold on the checkpoint's selection images (e.g. "
                          "sens=0.95: the best specificity with sensitivity >= 0.95) and store "
                          "it with the checkpoint; a multi-label model gets one per label")
    p.add_argument("--fit-temperature", action="store_true",
                   help="fit temperature scaling on the checkpoint's selection images and "
                        "store it with the checkpoint (calibrates probabilities; ranking, "
                        "AUC and decisions stay the same)")
    p.add_argument("--referable-grade", type=int,
                   help="grading models: grades >= this count as referable in the referable "
                        "split (default: the checkpoint's, which is 2 unless trained otherwise)")
    p.add_argument("--ci-resamples", type=int, default=2000,
                   help="bootstrap resamples for the 95%% intervals of AUC, AP, F1 and the "
                        "operating points (seeded)")
    p.add_argument("--no-ci", action="store_true", help="no confidence intervals")
    p.add_argument("-b", "--batch-size", type=int, default=16)
    add_device_option(p)
    p.add_argument("--report", action="store_true",
                   help="also write OUTPUT/report.html (the run folder is the checkpoint's)")
    add_trust_option(p)
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    params = params_of(args)
    if params.pop("no_ci"):
        params["ci_resamples"] = None
    return params


main = library_call(__name__)
# the palm-eval console script (setup.py)
cli = functools.partial(run_command, "eval")
