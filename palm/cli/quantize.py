"""Quantize a model to INT8 (OpenVINO + NNCF), validated against fp32 before it is written.

Examples:
    python tools/quantize.py --checkpoint runs/resnet50/best.pdparams --data-root data/PALM --output exported/resnet50-int8
    python tools/quantize.py --checkpoint exported/resnet50 --calib-dir photos/ --val-dir labelled/ --output exported/resnet50-int8

Calibrates on --calib-images training images (--data-root: the PALM training split;
--calib-dir: any folder of photos, searched recursively), then runs fp32 and INT8 on the
labelled validation images (--data-root's validation split, or --val-dir/--val-csv) and
prints the task's metrics and images/s of both: AUC, accuracy, sensitivity, specificity
(binary); macro AUC, accuracy (multi-class); quadratic kappa, accuracy, MAE and how often
INT8 gives fp32's grade (ordinal); macro AUC and each label's AUC, naming the label that lost
most (multi-label). If the INT8 value of the first is more than --max-metric-drop below
fp32's, nothing is written and the exit code is 1 (unless --force).
The output folder is an export: tools/predict.py and tools/eval.py take it as --checkpoint
and run the INT8 model (--precision fp32 runs its fp32 model).
"""
from __future__ import annotations

import argparse
from typing import Any

from palm.cli.common import (add_data_options, add_num_workers_option, add_option,
                             add_output_option, add_trust_option, add_verbosity_options,
                             command_parser, params_of, library_call)

RUNS = "palm.engine.tasks:run_quantize"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    p.add_argument("--checkpoint", required=True,
                   help="NAME.pdparams with NAME.json beside it, or a tools/export.py folder")
    add_output_option(p, "folder to write the quantized export to", required=True)
    data = add_data_options(
        p, data_root_help="PALM root: calibrates on its training split and validates on its "
                          "validation split",
        split_help={"val": ("labelled validation images, one sub-folder per class",
                            "labelled validation images listed as path,label")})
    data.add_argument("--calib-dir", help="folder of photos to calibrate on (instead of PALM's "
                      "training split)")
    p.add_argument("--calib-images", type=int,
                   help="calibration images drawn from the calibration folder (default 200)")
    add_option(p, "--max-metric-drop", hidden=("--max-auc-drop",), type=float,
               help="refuse when the INT8 model's task metric (binary: AUC; multi-class and "
                    "multi-label: macro AUC; ordinal: quadratic kappa) is more than this below "
                    "fp32's (default 0.005)")
    p.add_argument("--force", action="store_true",
                   help="write the model even if it lost more of its metric")
    p.add_argument("--batch-size", type=int, default=8)
    add_num_workers_option(p, default=0)
    add_trust_option(p)
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults left unset are the library's (palm.engine.quantize)."""
    return {k: v for k, v in params_of(args).items()
            if v is not None or k not in ("calib_images", "max_metric_drop")}


main = library_call(__name__)
