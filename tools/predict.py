"""Predict fundus photos in bulk: a folder (searched recursively) or one file -> CSV.

Examples:
    python tools/predict.py --checkpoint runs/resnet50/best.pdparams --input photos/ --output preds.csv
    python tools/predict.py --checkpoint exported/resnet50 --input photos/ --output preds.csv
    python tools/predict.py --checkpoint best.pdparams --input photos/ --output preds.csv --tta --resume

Rows: path, probability (of the positive class; of the predicted class for multi-class),
prediction, class_name, error. A file that cannot be read gets an error row; the exit code is
0 when the run finished. The CSV appears atomically at the end; --resume after an
interruption skips the rows already done, if OUTPUT.json (written beside the CSV) shows they
were made by the same checkpoint, threshold, precision and --tta.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import run_tool
from palm.config import check_options
from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.device import select_device
from palm.engine.inference import ENGINES, PRECISIONS, as_layer, load_predictor, weights_sha256
from palm.engine.predict import (PredictSummary, check_output, journal_path, list_images,
                                 predict_to_csv)
from palm.viz.cam import write_cam_overlays
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="NAME.pdparams with NAME.json beside it, or a tools/export.py or "
                        "tools/quantize.py folder")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto: Paddle Inference for an export folder, and for a checkpoint when "
                        "there are enough images to repay a temporary export; else dygraph")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="default: int8 for a tools/quantize.py folder, else fp32. bf16: about "
                        "2x faster on CPUs with AVX512-BF16/AMX; check reduced precisions "
                        "with tools/eval.py before predicting with them")
    p.add_argument("--input", required=True, help="an image file or a folder (recursive)")
    p.add_argument("--output", default="predictions.csv", help="CSV to write")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--num-workers", type=int, default=2, help="decoding processes")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the checkpoint's)")
    p.add_argument("--tta", action="store_true", help="average over horizontal/vertical flips")
    p.add_argument("--resume", action="store_true",
                   help="keep rows already in OUTPUT(.partial), if made by the same checkpoint, "
                        "threshold, precision and --tta (OUTPUT.json records them)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay PNG per image to DIR")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    return p


def main(args: argparse.Namespace) -> PredictSummary:
    check_options(vars(args))
    with trust_checkpoints(args.trust_checkpoint):
        return _predict(args)


def _predict(args: argparse.Namespace) -> PredictSummary:
    select_device(args.device)
    paths = list_images(args.input)
    check_output(args.output, paths)  # before the model is loaded; checked again under the lock
    # Grad-CAM needs gradients, so --cam keeps one dygraph model for both jobs
    engine = ("dygraph" if args.cam and args.engine == "auto" and args.precision in (None, "fp32")
              else args.engine)
    predictor = load_predictor(args.checkpoint, engine=engine, n_images=len(paths),
                               precision=args.precision)
    model, meta = as_layer(predictor), predictor.meta
    summary = predict_to_csv(model, meta, paths, args.output, batch_size=args.batch_size,
                             num_workers=args.num_workers, tta=args.tta, threshold=args.threshold,
                             resume=args.resume, progress=not args.no_progress,
                             checkpoint_sha256=weights_sha256(args.checkpoint),
                             precision=predictor.precision)
    print(summary.line())
    if args.cam:
        if predictor.engine != "dygraph":
            model, meta = load_checkpoint_model(args.checkpoint)
        # bad files are already reported in the CSV's error column
        written, _ = write_cam_overlays(model, meta, paths, args.cam, batch_size=args.batch_size,
                                        root=args.input if Path(args.input).is_dir() else None)
        print(f"{written} Grad-CAM overlays written to {args.cam}")
    return summary


def cli() -> None:
    args = get_args_parser().parse_args()
    resume_hint = f"interrupted; finished rows are in {journal_path(Path(args.output))}: rerun with --resume"
    run_tool(main, args, interrupted=resume_hint)


if __name__ == "__main__":
    cli()
