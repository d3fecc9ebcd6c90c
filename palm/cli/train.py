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
from palm.cli.common import command_for, library_call, training_parser, verbosity
from palm.config import parse_training_args, resolved_config

RUNS = "palm.engine.tasks:run_train"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    return training_parser(__doc__, prog)


def parse_args(argv: list[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Command line merged over configs/MODEL.yaml (or --config) and the built-in defaults,
    with --augment text read into its setting. `parser`: a tool's extension of this one."""
    return parse_training_args(parser or get_args_parser(), argv)


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
