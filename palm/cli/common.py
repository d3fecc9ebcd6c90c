"""The one way every entry point turns an exception into a one-line message and exit code,
the table of `palm` subcommands, and how a printed hint names another command.

Exit codes: 0 done, 1 `error: ...` (or `stopped: ...`) on one line, 2 a malformed command
line (argparse). PALM_DEBUG=1 shows the traceback of every error instead.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from palm.config import add_config_options
from palm.errors import BadConfig, StoppedByUser, UserError, describe_os_error
from palm.runtime import setup_logging

__all__ = ["COMMANDS", "DEBUG_VAR", "USER_ERRORS", "Command", "StoppedByUser", "add_data_source",
           "add_verbosity_options", "command_for", "data_source", "run_tool", "training_parser",
           "verbosity"]

BOOL = argparse.BooleanOptionalAction

DATA_HELP = "PALM root, PALM-Training400 folder, path,label CSV or class-folder root"

DEBUG_VAR = "PALM_DEBUG"

# Errors that mean "the input or the command was wrong": the message says which file and why,
# so a traceback would only bury it. OSError is handled by errno (disk full, read-only,
# permissions, ...). Anything else, ValueError and RuntimeError included, is a bug or a
# failure inside Paddle and keeps its traceback.
USER_ERRORS = (UserError,)


def add_data_source(parser: argparse.ArgumentParser) -> None:
    """The data set of a data tool, as a positional DATA or as --data-root DATA (the training
    tools' spelling); `data_source` reads it."""
    parser.add_argument("data", nargs="?", help=DATA_HELP)
    parser.add_argument("--data-root", help="the same as DATA")


def data_source(args: argparse.Namespace) -> str:
    """The one data set given to a data tool (see add_data_source).

    Raises:
        BadConfig: none or two different ones given.
    """
    given = {v for v in (args.data, args.data_root) if v}
    if len(given) != 1:
        raise BadConfig("give the data set once, as DATA or --data-root DATA "
                        f"({'two were given' if given else 'none was given'})")
    return given.pop()


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet and -v/--verbose, the same on every tool."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="print only warnings and errors (no progress bars or summaries)")
    group.add_argument("-v", "--verbose", action="store_true", help="also print debug messages")


def training_parser(doc: str, trust_help: str) -> argparse.ArgumentParser:
    """The options of a training command (train, and cv and sweep, which train per fold or
    setting), described by the command's module docstring `doc` (first line: description,
    from the third on: epilog).

    Args:
        trust_help: help of --trust-checkpoint (palm.weights.TRUST_HELP: passed in, so that
            importing this module does not load Paddle).
    """
    p = argparse.ArgumentParser(description=doc.split("\n")[0], epilog=doc.split("\n", 2)[2],
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
                     help="for --pretrained and --resume files: " + trust_help)
    add_verbosity_options(p)
    return p


def _pos_weight(text: str) -> float | str:
    return text if text == "auto" else float(text)


@contextlib.contextmanager
def verbosity(args: Any) -> Iterator[None]:
    """Set up logging for `args.quiet` / `args.verbose`. Quiet also drops what the tool prints
    and its progress bars (stdout and stderr); log warnings and the final `error:` line of
    run_tool still show."""
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    setup_logging(-1 if quiet else 1 if verbose else 0)
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        yield


def run_tool(main: Callable[[Any], Any], args: Any, *, interrupted: str | None = None) -> None:
    """Call `main(args)` and exit: 0 (or main's int result), 1 with `error: ...` on bad input.

    Args:
        interrupted: message printed on Ctrl-C (e.g. how to resume); default re-raises.
    """
    debug = os.environ.get(DEBUG_VAR) == "1"
    try:
        with verbosity(args):
            result = main(args)
    except KeyboardInterrupt:
        if interrupted is None or debug:
            raise
        sys.exit(interrupted)
    except USER_ERRORS as e:
        if debug:
            raise
        prefix = "stopped" if isinstance(e, StoppedByUser) else "error"
        sys.exit(f"{prefix}: {e}")
    except OSError as e:
        line = describe_os_error(e)
        if line is None or debug:
            raise
        sys.exit(f"error: {line}")
    sys.exit(result if isinstance(result, int) else 0)


class Command(NamedTuple):
    """One `palm NAME` subcommand: the module whose `cli()` runs it, and its checkout script."""

    module: str
    checkout: str  # how a source checkout runs it, relative to the repository root
    help: str


# `palm NAME ...` runs COMMANDS[NAME].module's cli(); a new tool is one line here.
COMMANDS: dict[str, Command] = {
    "train": Command("palm.cli.train", "python tools/train.py", "train a network"),
    "eval": Command("palm.cli.eval", "python tools/eval.py", "evaluate a checkpoint on labelled images"),
    "predict": Command("palm.cli.predict", "python tools/predict.py", "predict a folder of photos to a CSV"),
    "cam": Command("palm.cli.cam", "python tools/cam.py", "Grad-CAM overlays for photos"),
    "export": Command("palm.cli.export", "python tools/export.py", "export a checkpoint for Paddle Inference"),
    "compare": Command("palm.cli.compare", "python tools/compare.py", "leaderboard and paired tests of several models"),
    "report": Command("palm.cli.report", "python tools/report.py", "HTML report of a run and its evaluation"),
    "cv": Command("palm.cli.cv", "python tools/cv.py", "stratified k-fold cross-validation"),
    "sweep": Command("palm.cli.sweep", "python tools/sweep.py", "ablation sweeps: one factor at a time or a grid"),
    "quantize": Command("palm.cli.quantize", "python tools/quantize.py", "validated INT8 model for CPU inference"),
    "serve": Command("palm.cli.serve", "python tools/serve.py", "screening web page and JSON API on this machine"),
    "loadtest": Command("palm.cli.loadtest", "python tools/loadtest.py", "throughput and latency of the service under load"),
    "cache": Command("palm.cli.cache", "python tools/cache.py", "where the image cache is, how big, and clearing it"),
    "benchmark": Command("palm.cli.benchmark", "python tools/benchmark.py", "speed of every way palm runs a network"),
    "benchmark-data": Command("palm.cli.benchmark_data", "python tools/benchmark_data.py", "speed of the input pipeline"),
    "inspect": Command("palm.cli.inspect", "python -m data_tools.inspect", "class counts, sizes and unreadable files of a data set"),
    "prepare": Command("palm.cli.prepare", "python -m data_tools.prepare", "XLSX to CSV, stratified splits and k folds"),
    "stats": Command("palm.cli.stats", "python -m data_tools.stats", "per-channel mean and std of a data set"),
    "digits": Command("palm.cli.digits", "python -m data_tools.digits", "scikit-learn's digits as class folders"),
    "synth": Command("palm.cli.synth", "python -m data_tools.synth_palm", "draw a synthetic PALM data set"),
}

# The repository root when palm runs from a source checkout (tools/ beside the package).
_CHECKOUT = Path(__file__).resolve().parents[2]


def command_for(name: str) -> str:
    """How to run subcommand `name` in a printed hint: the checkout's script when palm runs from
    a source checkout, else the installed `palm NAME` command."""
    checkout = COMMANDS[name].checkout
    script = checkout.split()[-1]
    in_checkout = (_CHECKOUT / script).is_file() if script.endswith(".py") else \
        (_CHECKOUT / (script.replace(".", "/") + ".py")).is_file()
    return checkout if in_checkout else f"palm {name}"
