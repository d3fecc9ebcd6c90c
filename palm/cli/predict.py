"""Predict fundus photos in bulk: a folder (searched recursively) or one file -> CSV.

Examples:
    python tools/predict.py --checkpoint runs/resnet50/best.pdparams --input photos/ --output preds.csv
    python tools/predict.py --checkpoint exported/resnet50 --input photos/ --output preds.csv
    python tools/predict.py --checkpoint best.pdparams --input photos/ --output preds.csv --tta --resume
    python -m paddle.distributed.launch --nnodes 2 --master 10.0.0.1:8090 --nproc_per_node 2 \
        tools/predict.py --checkpoint best.pdparams --input /shared/photos --output /shared/preds.csv

Rows: path, probability (of the positive class; probability_<class> each for multi-class),
prediction, class_name, error. A file that cannot be read gets an error row; the exit code is
0 when the run finished. The CSV appears atomically at the end; --resume after an
interruption skips the rows already done, if OUTPUT.json (written beside the CSV) shows they
were made by the same checkpoint, threshold, precision and --tta.

Under paddle.distributed.launch each process predicts every Nth image into its own part
beside OUTPUT, and rank 0 merges the parts into OUTPUT, the same CSV one process would write
(palm/engine/predict_shards.py). --resume continues every rank's part, or reuses the
rows of a finished OUTPUT.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.cli.predictor_options import add_predictor_options
from palm.config import check_options
from palm.data import list_images
from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.device import select_device
from palm.engine.inference import as_layer, load_predictor, weights_sha256
from palm.engine.predict import PredictSummary, check_output, journal_path, predict_to_csv
from palm.engine.predict_shards import (RANK_ENV, clear_marker, mark_done, merge_parts,
                                        part_path, seed_part_from_output, shard_from_env,
                                        shard_paths, wait_for_parts)
from palm.errors import BadData
from palm.viz.cam import write_cam_overlays
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predictor_options(p)
    p.add_argument("--input", required=True, help="an image file or a folder (recursive)")
    p.add_argument("--output", default="predictions.csv", help="CSV to write")
    p.add_argument("-b", "--batch-size", type=int, default=16)
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
    p.add_argument("--merge-timeout", type=float, default=3600, metavar="SECONDS",
                   help="under paddle.distributed.launch: how long rank 0 waits for the other "
                        "ranks' parts after finishing its own")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> PredictSummary:
    check_options(vars(args))
    with trust_checkpoints(args.trust_checkpoint):
        return _predict(args)


def _predict(args: argparse.Namespace) -> PredictSummary:
    select_device(args.device)
    shard = shard_from_env()
    all_paths = list_images(args.input)
    if not all_paths:
        raise BadData(f"no images in {args.input}")
    check_output(args.output, all_paths)  # before the model is loaded; checked again under the lock
    paths = shard_paths(all_paths, shard)
    if shard.distributed:
        clear_marker(args.output, shard)
        if args.resume:
            seed_part_from_output(args.output, shard, paths)
    rows_file = part_path(args.output, shard) if shard.distributed else args.output
    # Grad-CAM needs gradients, so --cam keeps one dygraph model for both jobs
    engine = ("dygraph" if args.cam and args.engine == "auto" and args.precision in (None, "fp32")
              else args.engine)
    predictor = load_predictor(args.checkpoint, engine=engine, n_images=len(paths),
                               precision=args.precision)
    model, meta = as_layer(predictor), predictor.meta
    summary = predict_to_csv(model, meta, paths, rows_file, batch_size=args.batch_size,
                             num_workers=args.num_workers, tta=args.tta, threshold=args.threshold,
                             resume=args.resume, progress=not args.no_progress,
                             checkpoint_sha256=weights_sha256(args.checkpoint),
                             precision=predictor.precision)
    print(f"rank {shard.rank}: {summary.line()}" if shard.distributed else summary.line())
    if shard.distributed:
        mark_done(args.output, shard, paths, summary)
    if args.cam:
        if predictor.engine != "dygraph":
            model, meta = load_checkpoint_model(args.checkpoint)
        # bad files are already reported in the CSV's error column
        written, _ = write_cam_overlays(model, meta, paths, args.cam, batch_size=args.batch_size,
                                        root=args.input if Path(args.input).is_dir() else None)
        print(f"{written} Grad-CAM overlays written to {args.cam}")
    if shard.distributed and shard.rank == 0:
        summary = _merge(args, all_paths, shard.world_size)
    return summary


def _merge(args: argparse.Namespace, all_paths: list[str], world_size: int) -> PredictSummary:
    """Rank 0: wait for every rank's part, then write OUTPUT from them."""
    markers = wait_for_parts(args.output, all_paths, world_size, timeout=args.merge_timeout)
    summary = merge_parts(args.output, all_paths, world_size, markers)
    print(f"merged {world_size} parts: {summary.line()}")
    return summary


def cli() -> None:
    args = get_args_parser().parse_args()
    rows_at = (f"the parts beside {args.output}" if RANK_ENV in os.environ
               else journal_path(Path(args.output)))
    resume_hint = f"interrupted; finished rows are in {rows_at}: rerun with --resume"
    run_tool(main, args, interrupted=resume_hint)


if __name__ == "__main__":
    cli()
