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
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli.common import command_for, run_tool, training_parser, verbosity
from palm.config import parse_training_args, resolved_config
from palm.engine.runner import prepare_demo_data, run_training
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    return training_parser(__doc__, TRUST_HELP)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line merged over configs/MODEL.yaml (or --config) and the built-in defaults."""
    return parse_training_args(get_args_parser(), argv)


def main(args: argparse.Namespace) -> Path:
    cfg = resolved_config(args)
    if args.demo:
        prepare_demo_data(cfg["data_root"])
    with trust_checkpoints(args.trust_checkpoint):
        run_dir = run_training(cfg, overwrite=args.demo, progress=not args.no_progress)
    if args.demo:
        ckpt = run_dir / "best.pdparams"
        print(f"next: {command_for('eval')} --checkpoint {ckpt} --data-root {cfg['data_root']} "
              f"--output {run_dir}/eval --exist-ok\n"
              f"      {command_for('predict')} --checkpoint {ckpt} --input "
              f"{cfg['data_root']}/PALM-Validation400 --output {run_dir}/predictions.csv")
    return run_dir


def parse_and_run(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    with verbosity(args):
        return main(args)


def cli() -> None:
    # parsing runs inside run_tool: a bad config file or value is a one-line error too
    run_tool(parse_and_run, None)


if __name__ == "__main__":
    cli()
