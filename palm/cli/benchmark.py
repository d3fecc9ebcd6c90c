"""Speed of every way palm runs a network on this machine, side by side in one run.

For each model and image size (random weights; speed does not depend on them):
  train_step      bare training steps on one in-memory batch (forward, loss, backward, step),
                  alternating in three chunks with PyTorch eager's bare step on the same
                  network (train_step_torch, when torch is installed; resnet18/34/50 and the
                  ViTs): train_step_vs_torch (means of the chunks), train_step_vs_torch_best
                  (fastest chunks), and with the loader train_loader_vs_torch
  train_loader    palm's training loop (engine.train.train_one_epoch) fed by the real data
                  loader from PALM-sized JPEGs (2124x2056), augmentations on: the first
                  epoch (decoding, filling the image cache) and the second (cache hits)
  compile         bare training steps eager vs compiled with paddle.jit.to_static
                  (tools/train.py --compile), alternating; and the seconds compiling took
  profile         where a training step's time goes, palm against PyTorch eager (when
                  installed) on the same network: seconds in forward, backward and
                  optimizer; per operator type (paddle.profiler, torch.profiler); and
                  GFLOP/s of the network's convolutions timed alone per kind (forward,
                  data gradient, filter gradient)
  eval_default    dygraph eval as Paddle ships (child process without palm's CPU tuning:
                  one OpenMP thread, MKL's generic path on AMD)
  eval_dygraph    dygraph eval with palm's CPU tuning (threads = cores, MKL_DEBUG_CPU_TYPE)
  inference       the exported model on Paddle Inference (oneDNN, IR optimisation); best of
                  --repeats measurements, before and after the child processes below
  inference_bf16  the same on oneDNN's bfloat16 kernels (predict/eval --precision bf16), on
                  CPUs with AVX512-BF16 or AMX; with its largest logit difference from fp32
  onnxruntime     the same export through paddle2onnx + onnxruntime, when both import
  int8            tools/quantize.py's INT8 model (OpenVINO + NNCF, calibrated on 16 synthetic
                  PALM photos) against the fp32 predictor and PyTorch eager eval of the same
                  network (when torch is installed; resnet18/34/50 and the ViTs), the three
                  alternating --repeats + 1 times; with INT8's largest logit difference
                  from fp32 on those photos, relative to the logits' size
  decode          one PALM-sized JPEG to the model's input size: full decode + resize against
                  the reduced-scale decode read_image picks (1/2, 1/4, 1/8) and a cache hit,
                  ms per image and PSNR against the full decode
  predict         tools/predict.py end to end on folders of PALM-sized JPEGs, as a child
                  process: wall time (fastest of --repeats) and peak memory (main process
                  and all processes) per folder size; the steady rate is
                  (n_big - n_small) / (t_big - t_small), which cancels start-up time.
                  With --precision int8 it predicts with an INT8 folder quantized from the
                  export (calibrated on 16 synthetic PALM photos) and reports the steady
                  rate as a ratio to the INT8 engine's rate on in-memory batches, measured
                  before and after the predict runs (best), with the load average
  stats           (once, not per model) palm.metrics on 400 PALM-like cases (211
                  positive): all 95 % intervals (2000 stratified bootstrap resamples) and
                  the operating points with their bootstrap, against a Python loop of
                  scikit-learn's roc_auc_score over the same number of resamples
Throughputs are images/s. The machine may be shared: compare ratios within one run.

Examples:
    palm benchmark --models resnet50,resnet18 --output bench.json
    palm benchmark --table --output table.json   # every registered model, eval only
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_num_workers_option, add_output_option, add_verbosity_options,
                             command_parser, library_call, params_of)

RUNS = "palm.bench.tasks:run_benchmark_task"

# palm.bench.settings.SECTIONS, written out because that module imports Paddle
# (tests/cli/test_light_parsers.py checks they agree)
SECTIONS = ("train", "loader", "compile", "profile", "default", "eval", "inference", "bf16", "onnx",
            "int8", "decode", "predict", "stats")


def names(text: str) -> list[str]:
    """A comma-separated option as its non-empty items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def numbers(text: str) -> list[int]:
    """A comma-separated option of whole numbers."""
    try:
        return [int(item) for item in names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated whole numbers: {text!r}")


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog, formatter=argparse.RawTextHelpFormatter, split=False)
    p.add_argument("--models", type=names,
                   help="comma-separated model names (default resnet50,resnet18; "
                        "with --table every registered model)")
    p.add_argument("--sizes", type=numbers, default="224", help="comma-separated image sizes")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=10, help="timed batches per eval measurement")
    p.add_argument("--train-iters", type=int, default=24,
                   help="timed bare training steps (a third before, between and after the "
                        "loader epochs)")
    p.add_argument("--train-images", type=int, default=400,
                   help="images per training-loop epoch fed by the data loader (two epochs "
                        "run; default: the PALM training set's size)")
    add_num_workers_option(p, default=2)
    p.add_argument("--predict-images", type=numbers, default="100,500",
                   help="folder sizes for the end-to-end predict runs (two or more)")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each predictor and predict.py measurement; the best counts")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="the predict section's model: the fp32 export, or an INT8 folder "
                        "quantized from it (needs pip install -e '.[int8]')")
    p.add_argument("--sections", type=names, default=",".join(SECTIONS),
                   help=f"subset of {','.join(SECTIONS)}")
    p.add_argument("--table", action="store_true",
                   help="README table: every registered model at 224 px, params, GFLOPs, "
                        "dygraph and inference eval (each model in its own child process)")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "palm-benchmark"),
                   help="synthetic images and exports (reused between runs)")
    add_output_option(p, "JSON results (written atomically)", default="benchmark.json")
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {**params_of(args), "command": " ".join(sys.argv)}


main = library_call(__name__)
cli = functools.partial(run_command, "benchmark")
