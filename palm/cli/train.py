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
from palm.cli import add_verbosity_options, command_for, run_tool, verbosity
from palm.config import add_config_options, parse_args_with_config, resolved_config
from palm.data import parse_augment
from palm.engine.runner import prepare_demo_data, run_training
from palm.weights import TRUST_HELP, trust_checkpoints

BOOL = argparse.BooleanOptionalAction


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="network name; picks configs/MODEL.yaml (default resnet50)")
    add_config_options(p)
    p.add_argument("--demo", action="store_true",
                   help="make (once) a synthetic PALM set in demo_data/ and train a short run on it")
    data = p.add_argument_group("data")
    data.add_argument("--data-root", help="PALM root: PALM-Training400, PALM-Validation400, -GT; "
                      "with --train-csv/--val-csv: a folder their paths may lead into")
    data.add_argument("--train-dir", help="training images, one sub-folder per class")
    data.add_argument("--val-dir", help="validation images, one sub-folder per class")
    data.add_argument("--train-csv", help="training list with columns path,label")
    data.add_argument("--val-csv", help="validation list with columns path,label")
    data.add_argument("--image-size", type=int)
    data.add_argument("--num-workers", type=int, help="data loader processes")
    data.add_argument("--cache-dir", help="cache of shrunk images, reused by later epochs and runs "
                      "(default auto: $PALM_CACHE_DIR or ~/.cache/palm/images; none: off)")
    data.add_argument("--cache-size-gb", type=float,
                      help="cache size limit; least recently used images are evicted "
                           "(default $PALM_CACHE_SIZE_GB or 4)")
    data.add_argument("--skip-bad", action=BOOL, help="skip unreadable images instead of stopping")
    data.add_argument("--positive-class", metavar="NAME",
                      help="two classes: the positive one (label 1; sensitivity and "
                           "probabilities refer to it). Default: PM, positive, disease, "
                           "abnormal, 1, yes or true when one class is so named")
    data.add_argument("--augment", metavar="PRESET|KEY=VALUE,...",
                      help="training augmentation: fundus (default for --data-root), natural "
                           "(default otherwise: no flips or rotations), none; plus overrides, "
                           "e.g. natural,hflip=true or rotate=5")
    data.add_argument("--allow-outside-paths", action=BOOL,
                      help="accept CSV paths outside the CSV's folder (absolute, ../)")
    data.add_argument("--max-pixels", type=int,
                      help="refuse images decoding to more pixels (default $PALM_MAX_PIXELS "
                           "or 100000000)")
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
    run.add_argument("--output", help="run folder (default runs/MODEL, or the next free "
                     "runs/MODEL-2, -3, ... when that holds a run)")
    run.add_argument("--resume", nargs="?", const=True, metavar="PATH",
                     help="continue from OUTPUT/last.pdparams, or from PATH (a run folder or "
                          "its last.pdparams)")
    run.add_argument("--exist-ok", action=BOOL,
                     help="start a new run in an --output folder that already holds one")
    run.add_argument("--seed", type=int)
    run.add_argument("--device", choices=("auto", "cpu", "gpu"))
    run.add_argument("--amp", action=BOOL, help="mixed precision (GPU only)")
    run.add_argument("--compile", action=BOOL,
                     help="compile the forward with paddle.jit.to_static (a few %% faster "
                          "per step, seconds of compiling at start; one process only)")
    run.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    run.add_argument("--trust-checkpoint", action="store_true",
                     help="for --pretrained and --resume files: " + TRUST_HELP)
    add_verbosity_options(p)
    return p


def _pos_weight(text: str) -> float | str:
    return text if text == "auto" else float(text)


def parse_args(argv: list[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Command line merged over configs/MODEL.yaml (or --config) and the built-in defaults.

    `parser`: a tool's extension of this one (cv, sweep); default: train's own.
    """
    args = parse_args_with_config(parser or get_args_parser(), argv)
    if isinstance(args.augment, str):  # --augment text (a YAML mapping stays as it is)
        args.augment = parse_augment(args.augment)
    return args


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
