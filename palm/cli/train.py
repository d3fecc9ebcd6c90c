"""Train a network on PALM (or any folder-per-class / CSV data set).

Examples:
    python tools/train.py --model resnet50 --data-root data/PALM
    python tools/train.py --model resnet18 --train-dir data/train --val-dir data/val --epochs 20
    python tools/train.py --model resnet50 --data-root data/PALM --resume runs/resnet50
    python tools/train.py --model alexnet -o epochs=3 -o model_kwargs.dropout=0.2 -b 16
    python tools/train.py --demo      # synthetic PALM set, a few minutes on 2 CPU cores

Defaults come from configs/MODEL.yaml (or -c/--config FILE), then -o KEY=VALUE, then flags. The run
folder receives config.yaml, metrics.csv, last/best checkpoints and the curves.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_data_options, add_device_option, add_output_option,
                             add_reading_options, add_trust_option, add_verbosity_options,
                             command_for, command_parser, library_call, verbosity)
from palm.config import add_config_options, parse_args_with_config, resolved_config

RUNS = "palm.engine.tasks:run_train"
BOOL = argparse.BooleanOptionalAction


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    p.add_argument("--model", help="network name; picks configs/MODEL.yaml (default resnet50)")
    add_config_options(p)
    p.add_argument("--demo", action="store_true",
                   help="make (once) a synthetic PALM set in demo_data/ and train a short run on it")
    data = add_data_options(
        p, splits=("train", "val"),
        data_root_help="PALM root: PALM-Training400, PALM-Validation400, -GT; with "
                       "--train-csv/--val-csv: a folder their paths may lead into",
        split_help={"train": ("training images, one sub-folder per class",
                              "training list with columns path,label"),
                    "val": ("validation images, one sub-folder per class",
                            "validation list with columns path,label")})
    data.add_argument("--image-size", type=int)
    add_reading_options(data)
    data.add_argument("--augment", metavar="PRESET|KEY=VALUE,...",
                      help="training augmentation: fundus (default for --data-root), natural "
                           "(default otherwise: no flips or rotations), none; plus overrides, "
                           "e.g. natural,hflip=true or rotate=5")
    opt = p.add_argument_group("optimization")
    opt.add_argument("--epochs", type=int)
    opt.add_argument("-b", "--batch-size", type=int)
    opt.add_argument("--lr", type=float, help="base learning rate")
    opt.add_argument("--optimizer", choices=("momentum", "adam", "adamw"))
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--scheduler", choices=("constant", "step", "cosine"))
    opt.add_argument("--warmup-epochs", type=float)
    opt.add_argument("--pos-weight", type=_pos_weight, help="BCE weight of positives, or 'auto'")
    opt.add_argument("--pretrained", help="ImageNet .pdparams to start from (no download)")
    opt.add_argument("--select-on", choices=("val", "holdout"),
                     help="images that choose the best epoch: val, or holdout (a stratified "
                          "part of the training data, so figures on val stay independent)")
    opt.add_argument("--holdout-fraction", type=float,
                     help="share of the training images held out with --select-on holdout")
    run = p.add_argument_group("run")
    add_output_option(run, "run folder (default runs/MODEL, or the next free runs/MODEL-2, "
                           "-3, ... when that holds a run)")
    run.add_argument("--resume", nargs="?", const=True, metavar="PATH",
                     help="continue from OUTPUT/last.pdparams, or from PATH (a run folder or "
                          "its last.pdparams)")
    run.add_argument("--exist-ok", action=BOOL,
                     help="start a new run in an --output folder that already holds one")
    run.add_argument("--seed", type=int)
    add_device_option(run, default=None)
    run.add_argument("--amp", action=BOOL, help="mixed precision (GPU only)")
    run.add_argument("--compile", action=BOOL,
                     help="compile the forward with paddle.jit.to_static (a few %% faster "
                          "per step, seconds of compiling at start; one process only)")
    run.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    add_trust_option(run, about="for --pretrained and --resume files: ")
    add_verbosity_options(p)
    return p


def _pos_weight(text: str) -> float | str:
    return text if text == "auto" else float(text)


def parse_args(argv: list[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Command line merged over configs/MODEL.yaml (or --config) and the built-in defaults.

    `parser`: a tool's extension of this one (cv, sweep); default: train's own. --augment
    stays text (palm.data.resolve_augment reads it).
    """
    return parse_args_with_config(parser or get_args_parser(), argv)


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return parse_args(argv, parser)


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"config": resolved_config(args), "demo": args.demo,
            "progress": not args.no_progress, "trust_checkpoint": args.trust_checkpoint,
            "next_commands": (command_for("eval"), command_for("predict"))}


main = library_call(__name__)
# the palm-train console script (setup.py)
cli = functools.partial(run_command, "train")


def parse_and_run(argv: list[str] | None = None) -> Path:
    """Parse `argv` and train (what `palm train` does, without the exit)."""
    args = parse_args(argv)
    with verbosity(args):
        return main(args)
