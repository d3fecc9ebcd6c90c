"""Ablation sweep: train a base config with factors varied, one run folder per setting and seed.

Examples:
    python tools/sweep.py --base configs/lenet5.yaml --train-dir data/digits/train \\
        --val-dir data/digits/val --vary lr=0.0003,0.001,0.003 \\
        --vary model_kwargs.pooling=max,avg --repeats 3 --output runs/ablation
    python tools/sweep.py --model resnet18 --data-root data/PALM --mode grid \\
        --vary batch_size=8,16 --vary lr=0.001,0.01 --jobs 2 --output runs/grid
    python tools/sweep.py ... --backend ray --address auto   # trials as tasks on a Ray cluster

All flags of tools/train.py apply to the base (--base is --config). Rerunning the same
command resumes: finished runs are skipped, a run cut short continues from its `last`.
OUTPUT receives results.csv, summary.csv, summary.md and plot_<factor>.png.
"""
from __future__ import annotations

import argparse
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import library_call, training_parser, verbosity
from palm.config import parse_training_args, resolved_config

RUNS = "palm.experiments.tasks:run_sweep_task"

# palm.experiments.sweep's MODES and DEFAULT_METRIC and palm.experiments.trials' BACKENDS,
# written out because those modules import Paddle (tests/cli/test_light_parsers.py checks)
MODES = ("ofat", "grid")
DEFAULT_METRIC = "final_val_accuracy"
BACKENDS = ("local", "ray")


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = training_parser(__doc__, prog)
    p.add_argument("--base", dest="config", help="the base config (same as --config)")
    sweep = p.add_argument_group("sweep")
    sweep.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a factor and its values; KEY is a config key or "
                            "model_kwargs.NAME (repeat --vary for more factors)")
    sweep.add_argument("--mode", choices=MODES, default="ofat",
                       help="ofat: one factor at a time from the base (default); grid: all "
                            "combinations")
    sweep.add_argument("--repeats", type=int, default=1,
                       help="runs per setting, with seeds SEED, SEED+1, ...")
    sweep.add_argument("--jobs", type=int, default=1, help="trainings at once on this machine")
    sweep.add_argument("--backend", choices=BACKENDS, default="local",
                       help="local processes, or tasks on a Ray cluster (pip install ray)")
    sweep.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    sweep.add_argument("--metric", default=DEFAULT_METRIC,
                       help=f"metric of the plots (default {DEFAULT_METRIC}; e.g. "
                            "best_val_roc_auc, final_val_loss; graders also best_val_qwk, "
                            "final_val_mae; multi-label best_val_macro_roc_auc, best_val_map)")
    return p


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return parse_training_args(parser, argv)


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"config": resolved_config(args), "vary": args.vary, "mode": args.mode,
            "repeats": args.repeats, "jobs": args.jobs, "backend": args.backend,
            "address": args.address, "metric": args.metric}


def interrupted(args: argparse.Namespace) -> str:
    return "stopped: run the same command again to resume the sweep"


main = library_call(__name__)
cli = functools.partial(run_command, "sweep")


def parse_and_run(argv: list[str] | None = None) -> Any:
    """Parse `argv` and sweep (what `palm sweep` does, without the exit); the results table."""
    args = parse_training_args(get_args_parser(), argv)
    with verbosity(args):
        return main(args)
