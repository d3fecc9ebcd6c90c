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
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.cli.predictor_options import add_predictor_options
from palm.config import check_options
from palm.engine.device import select_device
from palm.engine.evaluate import eval_output_for, evaluate_checkpoint
from palm.io_utils import output_lock
from palm.reports.report import build_report
from palm.metrics import parse_operating_point
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predictor_options(p)
    p.add_argument("--data-root", help="PALM root: evaluates the validation split; with "
                   "--val-csv: a folder its paths may lead into")
    p.add_argument("--val-dir", help="labelled images, one sub-folder per class")
    p.add_argument("--val-csv", help="labelled images listed as path,label")
    p.add_argument("--output", help="folder for the results (default: CHECKPOINT_FOLDER/eval, or "
                   "the next free eval-2, eval-3, ... when that holds an evaluation)")
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
                          "it with the checkpoint")
    p.add_argument("--fit-temperature", action="store_true",
                   help="fit temperature scaling on the checkpoint's selection images and "
                        "store it with the checkpoint (calibrates probabilities; ranking, "
                        "AUC and decisions stay the same)")
    p.add_argument("--ci-resamples", type=int, default=2000,
                   help="bootstrap resamples for the 95%% intervals of AUC, AP, F1 and the "
                        "operating points (seeded)")
    p.add_argument("--no-ci", action="store_true", help="no confidence intervals")
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images, listing them")
    p.add_argument("--cache-dir", default="auto",
                   help="cache of shrunk images, shared with training (default auto; none: off)")
    p.add_argument("--cache-size-gb", type=float,
                   help="cache size limit (default $PALM_CACHE_SIZE_GB or 4)")
    p.add_argument("--positive-class", metavar="NAME",
                   help="two classes: the positive one; must agree with the checkpoint's "
                        "(needed only for old checkpoints without class names)")
    p.add_argument("--allow-outside-paths", action="store_true",
                   help="accept CSV paths outside the CSV's folder (absolute, ../)")
    p.add_argument("--max-pixels", type=int,
                   help="refuse images decoding to more pixels (default $PALM_MAX_PIXELS or 1e8)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--report", action="store_true",
                   help="also write OUTPUT/report.html (the run folder is the checkpoint's)")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> dict:
    check_options(vars(args))
    if args.operating_point:  # a typo is reported before the model is loaded
        parse_operating_point(args.operating_point)
    select_device(args.device)
    output = eval_output_for(args.checkpoint, args.output, args.exist_ok)
    with trust_checkpoints(args.trust_checkpoint), output_lock(output, folder=True):
        metrics = evaluate_checkpoint(
            args.checkpoint, output, data_root=args.data_root, val_dir=args.val_dir,
            val_csv=args.val_csv, threshold=args.threshold, tune_threshold=args.tune_threshold,
            batch_size=args.batch_size, num_workers=args.num_workers, skip_bad=args.skip_bad,
            cache_dir=args.cache_dir, engine=args.engine, precision=args.precision,
            cache_size_gb=args.cache_size_gb, max_pixels=args.max_pixels,
            allow_outside_paths=args.allow_outside_paths, positive_class=args.positive_class,
            ci_resamples=0 if args.no_ci else args.ci_resamples,
            fit_temperature=args.fit_temperature, operating_point=args.operating_point,
        )
        if args.report:
            report = build_report(Path(args.checkpoint).parent, output, checkpoint=args.checkpoint)
            print(f"report written to {report}")
    return metrics


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
