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
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_device_option, add_num_workers_option, add_output_option,
                             add_predictor_options,
                             add_trust_option, add_verbosity_options, command_parser,
                             library_function, params_of, library_call)

RUNS = "palm.engine.tasks:run_predict"
INTERRUPTED = "palm.engine.tasks:predict_interrupted_hint"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    add_predictor_options(p)
    p.add_argument("--input", required=True, help="an image file or a folder (recursive)")
    add_output_option(p, "CSV to write", default="predictions.csv")
    p.add_argument("-b", "--batch-size", type=int, default=16)
    add_num_workers_option(p, default=2, help="decoding processes")
    p.add_argument("--threshold", type=float, help="decision threshold (default: the checkpoint's)")
    p.add_argument("--tta", action="store_true", help="average over horizontal/vertical flips")
    p.add_argument("--resume", action="store_true",
                   help="keep rows already in OUTPUT(.partial), if made by the same checkpoint, "
                        "threshold, precision and --tta (OUTPUT.json records them)")
    add_device_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay PNG per image to DIR")
    add_trust_option(p)
    p.add_argument("--merge-timeout", type=float, default=3600, metavar="SECONDS",
                   help="under paddle.distributed.launch: how long rank 0 waits for the other "
                        "ranks' parts after finishing its own")
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    params = params_of(args)
    params["progress"] = not params.pop("no_progress")
    return params


def interrupted(args: argparse.Namespace) -> str:
    return library_function(INTERRUPTED)(args.output)


main = library_call(__name__)
# the palm-predict console script (setup.py)
cli = functools.partial(run_command, "predict")
