"""Quantize a model to INT8 (OpenVINO + NNCF), validated against fp32 before it is written.

Examples:
    python tools/quantize.py --checkpoint runs/resnet50/best.pdparams --data-root data/PALM --output exported/resnet50-int8
    python tools/quantize.py --checkpoint exported/resnet50 --calib-dir photos/ --val-dir labelled/ --output exported/resnet50-int8

Calibrates on --calib-images training images (--data-root: the PALM training split;
--calib-dir: any folder of photos, searched recursively), then runs fp32 and INT8 on the
labelled validation images (--data-root's validation split, or --val-dir/--val-csv) and
prints AUC, accuracy, sensitivity, specificity and images/s of both. If the INT8 AUC is more
than --max-auc-drop below fp32's, nothing is written and the exit code is 1 (unless --force).
The output folder is an export: tools/predict.py and tools/eval.py take it as --checkpoint
and run the INT8 model (--precision fp32 runs its fp32 model).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.config import check_options
from palm.data import eval_transform, find_palm_layout, list_images
from palm.data import sources
from palm.engine.quantize import (DEFAULT_CALIB_IMAGES, DEFAULT_MAX_AUC_DROP, Comparison,
                                  quantize_to_folder)
from palm.errors import BadConfig, BadData
from palm.io_utils import output_lock
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="NAME.pdparams with NAME.json beside it, or a tools/export.py folder")
    p.add_argument("--output", required=True, help="folder to write the quantized export to")
    p.add_argument("--data-root", help="PALM root: calibrates on its training split and "
                   "validates on its validation split")
    p.add_argument("--calib-dir", help="folder of photos to calibrate on (instead of PALM's "
                   "training split)")
    p.add_argument("--val-dir", help="labelled validation images, one sub-folder per class")
    p.add_argument("--val-csv", help="labelled validation images listed as path,label")
    p.add_argument("--calib-images", type=int, default=DEFAULT_CALIB_IMAGES,
                   help="calibration images drawn from the calibration folder")
    p.add_argument("--max-auc-drop", type=float, default=DEFAULT_MAX_AUC_DROP,
                   help="refuse when the INT8 AUC is more than this below fp32's")
    p.add_argument("--force", action="store_true", help="write the model even if it lost more AUC")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_verbosity_options(p)
    return p


def calibration_paths(args: argparse.Namespace) -> list[str]:
    if args.calib_dir:
        folder = Path(args.calib_dir)
    elif args.data_root:
        folder = find_palm_layout(args.data_root).train_dir
    else:
        raise BadConfig("give --calib-dir or --data-root (PALM) for the calibration images")
    paths = list_images(str(folder))
    if not paths:
        raise BadData(f"{folder}: no images to calibrate on")
    return paths


def main(args: argparse.Namespace) -> Comparison:
    check_options(vars(args))
    if args.calib_images < 1:
        raise BadConfig(f"--calib-images {args.calib_images}: must be at least 1")
    if not math.isfinite(args.max_auc_drop):
        raise BadConfig(f"--max-auc-drop {args.max_auc_drop}: must be a finite number")
    if not (args.data_root or args.val_dir or args.val_csv):  # found out before quantizing
        raise BadConfig("give --data-root, --val-dir or --val-csv: labelled images to validate "
                        "the INT8 model on")
    paths = calibration_paths(args)
    def validation_set(meta: dict[str, Any]):
        return sources.evaluation_set(transform=eval_transform(meta),
                                      classes=meta.get("class_names") or None,
                                      data_root=None if args.val_dir else args.data_root,
                                      val_dir=args.val_dir, val_csv=args.val_csv)

    with trust_checkpoints(args.trust_checkpoint), output_lock(Path(args.output), folder=True):
        result = quantize_to_folder(args.checkpoint, args.output, paths, validation_set,
                                    calib_images=args.calib_images,
                                    max_auc_drop=args.max_auc_drop, force=args.force,
                                    batch_size=args.batch_size, num_workers=args.num_workers)
    print(f"INT8 AUC drop {result.auc_drop:+.4f}, speed {result.speed['int8'] / result.speed['fp32']:.2f}x "
          f"fp32 -> {args.output}")
    return result


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
