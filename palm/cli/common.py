"""The one way every entry point turns an exception into a one-line message and exit code,
the table of `palm` subcommands, the option groups the commands share, the generic runner
`cli(NAME)`, and how a printed hint names another command.

A command module (palm/cli/NAME.py) declares `get_args_parser(prog)`, built from the groups
here with light imports only (no Paddle), and `RUNS = "module:function"`, the library
function it calls; optionally `to_params(args)` (Namespace -> that function's keyword
arguments; default: every option but -q/-v, by dest), `parse(parser, argv)` and
`interrupted(args)` (the line printed on Ctrl-C) and `exit_code(result)` (the exit code
of the function's result, e.g. 1 when a load test saw errors). `cli(NAME)` parses, then imports the
function, so `--help` and argument errors answer before Paddle is imported.

Exit codes: 0 done, 1 `error: ...` (or `stopped: ...`) on one line, 2 a malformed command
line (argparse). PALM_DEBUG=1 shows the traceback of every error instead.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, NamedTuple, NoReturn, Sequence

from palm.config import add_config_options
from palm.errors import BadConfig, StoppedByUser, UserError, describe_os_error
from palm.runtime import setup_logging

__all__ = ["COMMANDS", "DEBUG_VAR", "ENGINES", "PRECISIONS", "USER_ERRORS", "Command", "StoppedByUser", "add_data_source",
           "add_data_options", "add_device_option", "add_image_size_option",
           "add_predictor_options", "add_num_workers_option", "add_option",
           "add_output_option", "add_reading_options", "add_trust_option",
           "add_verbosity_options", "cli", "command_for", "command_parser", "data_source",
           "flag_message", "flags_of", "library_call", "library_function", "params_of", "run_tool",
           "training_parser", "verbosity"]

BOOL = argparse.BooleanOptionalAction

DATA_HELP = "PALM root, PALM-Training400 folder, path,label CSV or class-folder root"

DEBUG_VAR = "PALM_DEBUG"

# Errors that mean "the input or the command was wrong": the message says which file and why,
# so a traceback would only bury it. OSError is handled by errno (disk full, read-only,
# permissions, ...). Anything else, ValueError and RuntimeError included, is a bug or a
# failure inside Paddle and keeps its traceback.
USER_ERRORS = (UserError,)

# palm.weights.TRUST_HELP's text; kept here because palm.weights imports Paddle
# (tests/cli/test_light_parsers.py checks the two agree).
TRUST_HELP = ("read weight files with plain pickle (paddle.load), for old files holding objects "
              "the safe reader refuses. RISK: a malicious file then runs any command as you; "
              "use it only for files whose origin you trust")
DEVICES = ("auto", "cpu", "gpu")
# palm.engine.inference's ENGINES and PRECISIONS, written out here because that module imports
# Paddle (tests/cli/test_light_parsers.py checks they agree).
ENGINES = ("auto", "dygraph", "inference")
PRECISIONS = ("fp32", "bf16", "int8")


# --- parsers and the shared option groups -----------------------------------------------------

def command_parser(doc: str, prog: str | None, *,
                   formatter: type[argparse.HelpFormatter] = argparse.RawDescriptionHelpFormatter,
                   split: bool = True) -> argparse.ArgumentParser:
    """A command's parser: its docstring's first line as description and the rest as epilog
    (`split`), or the whole docstring as description."""
    if split:
        return argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0],
                                       epilog=doc.split("\n", 2)[2],
                                       formatter_class=formatter)
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=formatter)


def add_option(parser: Any, *flags: str, hidden: Sequence[str] = (), **kwargs: Any
               ) -> argparse.Action:
    """parser.add_argument(*flags, **kwargs), also accepting the old spellings `hidden`, which
    --help does not show."""
    action = parser.add_argument(*flags, *hidden, **kwargs)
    # the parser still maps the old spellings to the action; without them in option_strings,
    # --help and argparse's messages ("required: --output") name the new flag only
    action.option_strings = list(flags)
    return action


def add_output_option(parser: Any, help: str, *, required: bool = False, default: Any = None,
                      hidden: Sequence[str] = ("--out",)) -> argparse.Action:
    """--output: where the command writes (`hidden`: old spellings, --out on every command)."""
    return add_option(parser, "--output", hidden=hidden, required=required, default=default,
                      help=help)


def add_data_options(parser: Any, *, splits: Sequence[str] = ("val",), data_root_help: str,
                     split_help: Mapping[str, tuple[str, str]] | None = None
                     ) -> argparse._ArgumentGroup:
    """The labelled data a command reads: --data-root, and --SPLIT-dir / --SPLIT-csv per split.

    `split_help`: per split, the help of its -dir and -csv options. Returns the group, so a
    command adds its own data options beside these.
    """
    group = parser.add_argument_group("data")
    group.add_argument("--data-root", help=data_root_help)
    helps = split_help or {}
    for split in splits:
        dir_help, csv_help = helps.get(split, (f"{split} images, one sub-folder per class",
                                               f"{split} images listed as path,label"))
        group.add_argument(f"--{split}-dir", help=dir_help)
    for split in splits:
        dir_help, csv_help = helps.get(split, (f"{split} images, one sub-folder per class",
                                               f"{split} images listed as path,label"))
        group.add_argument(f"--{split}-csv", help=csv_help)
    return group


def add_num_workers_option(parser: Any, *, default: int | None = None,
                           help: str = "data loader processes") -> argparse.Action:
    """--num-workers (--workers, the old spelling of some tools, is kept hidden)."""
    return add_option(parser, "--num-workers", hidden=("--workers",), type=int, default=default,
                      help=help)


def add_image_size_option(parser: Any, *, default: int | None = None, help: str | None = None,
                          hidden: Sequence[str] = ("--size",)) -> argparse.Action:
    """--image-size: the model's input side in px (`hidden`: old spellings, --size on every
    command)."""
    return add_option(parser, "--image-size", hidden=hidden, type=int, default=default, help=help)


def add_predictor_options(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --engine and --precision: which model runs, and how (eval, predict)."""
    parser.add_argument("--checkpoint", required=True,
                        help="NAME.pdparams with NAME.json beside it, or a tools/export.py or "
                             "tools/quantize.py folder")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="auto: Paddle Inference for an export folder, and for a checkpoint "
                             "when there are enough images to repay a temporary export; else "
                             "dygraph")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="default: int8 for a tools/quantize.py folder, else fp32. bf16: about "
                             "2x faster on CPUs with AVX512-BF16/AMX; check reduced precisions "
                             "with tools/eval.py before predicting with them")


def add_reading_options(group: Any, *, cache_dir_default: str | None = None) -> None:
    """How images are read: workers, unreadable files, the image cache, the positive class,
    paths outside a CSV's folder and the pixel limit (train and eval)."""
    add_num_workers_option(group)
    group.add_argument("--skip-bad", action=argparse.BooleanOptionalAction,
                       help="skip unreadable images (listing them) instead of stopping")
    group.add_argument("--cache-dir", default=cache_dir_default,
                       help="cache of shrunk images, reused by later epochs, runs and evals "
                            "(default auto: $PALM_CACHE_DIR or ~/.cache/palm/images; none: off)")
    group.add_argument("--cache-size-gb", type=float,
                       help="cache size limit; least recently used images are evicted "
                            "(default $PALM_CACHE_SIZE_GB or 4)")
    group.add_argument("--positive-class", metavar="NAME",
                       help="two classes: the positive one (label 1; sensitivity and "
                            "probabilities refer to it). Default: the checkpoint's, else PM, "
                            "positive, disease, abnormal, 1, yes or true when one class is so "
                            "named")
    group.add_argument("--allow-outside-paths", action=argparse.BooleanOptionalAction,
                       help="accept CSV paths outside the CSV's folder (absolute, ../)")
    group.add_argument("--max-pixels", type=int,
                       help="refuse images decoding to more pixels (default $PALM_MAX_PIXELS "
                            "or 100000000)")


def add_trust_option(parser: Any, *, about: str = "") -> argparse.Action:
    """--trust-checkpoint (`about`: which files it applies to, e.g. 'for --pretrained ...: ')."""
    return parser.add_argument("--trust-checkpoint", action="store_true", help=about + TRUST_HELP)


def add_device_option(parser: Any, *, default: str | None = "auto") -> argparse.Action:
    """--device auto|cpu|gpu."""
    return parser.add_argument("--device", choices=DEVICES, default=default)


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


def training_parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The options of a training command (train, and cv and sweep, which train per fold or
    setting), described by the command's module docstring `doc`."""
    p = command_parser(doc, prog)
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
    add_image_size_option(data)
    add_reading_options(data)
    data.add_argument("--task", choices=("binary", "multiclass", "ordinal", "multilabel"),
                      help="what the labels are (default: binary for two classes, multiclass "
                           "for more); ordinal: grades 0..K-1, scored by quadratic kappa; "
                           "multilabel: a 0/1 CSV column per label")
    data.add_argument("--label-columns", type=_names, metavar="A,B,...",
                      help="multi-label CSVs: the label columns (default: all but path)")
    data.add_argument("--referable-grade", type=int,
                      help="ordinal: grades >= this are the positive class of the referable "
                           "split (default 2, referable diabetic retinopathy)")
    data.add_argument("--ordinal-loss", choices=("ce", "coral", "regression"),
                      help="ordinal: softmax cross-entropy over the grades (ce, default), CORAL "
                           "(one score, K-1 learned biases; Cao et al. 2020) or regression (one "
                           "score, MSE, cut-points tuned for kappa on the selection images)")
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
    opt.add_argument("--head-lr-mult", type=float,
                     help="learning rate of the new classifier x this (e.g. 10 when fine-tuning)")
    opt.add_argument("--layer-decay", type=float,
                     help="layer-wise learning-rate decay: depth k of D learns at lr*d**(D-k)")
    opt.add_argument("--freeze-epochs", type=int,
                     help="train only the classifier for this many first epochs")
    opt.add_argument("--decay-norm-and-bias", action=BOOL,
                     help="apply weight decay to biases, norms and ViT tokens too (default yes)")
    opt.add_argument("--label-smoothing", type=float, help="label smoothing epsilon (0: none)")
    opt.add_argument("--pos-weight", type=_pos_weight, help="BCE weight of positives, or 'auto'")
    opt.add_argument("--class-weights", type=_class_weights, metavar="auto|none|W1,W2,...",
                     help="multi-class: cross-entropy weight per class (auto: n / (K * count))")
    opt.add_argument("--sampler", choices=("shuffle", "balanced"),
                     help="balanced: draw every class equally often (with replacement)")
    opt.add_argument("--pretrained", metavar="imagenet|FILE",
                     help="start from Paddle's ImageNet weights for the model (downloaded once "
                          "into the cache, MD5-checked; `palm weights list`) or a .pdparams file")
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


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give column names such as a,b,c")
    return names


def _class_weights(text: str) -> str | list[float]:
    if text in ("auto", "none"):
        return text
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give auto, none or numbers such as 1,2,0.5") from None


VERBOSITY_DESTS = ("quiet", "verbose")


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


# --- errors: parameters -> flags -----------------------------------------------------------

def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the option's first long spelling (`batch_size` -> `--batch-size`)."""
    flags = {}
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if long and action.dest not in flags:
            flags[action.dest] = long[0]
    return flags


def flag_message(error: UserError, flags: Mapping[str, str] | None = None) -> str:
    """`error`'s message with its parameter(s) (error.param) named as flags: from `flags` (a
    parser's flags_of), else the usual spelling (`max_wait_ms` -> `--max-wait-ms`).

    A path in the message that contains the parameter's name is left alone."""
    text = str(error)
    params = error.param if isinstance(error.param, tuple) else (error.param,)
    for param in filter(None, params):
        flag = (flags or {}).get(param) or "--" + param.replace("_", "-")
        text = re.sub(rf"(?<![\w/.\-]){re.escape(param)}(?![\w/.\-])", flag, text)
    return text


def run_tool(main: Callable[[Any], Any], args: Any, *, interrupted: str | None = None,
             flags: Mapping[str, str] | None = None) -> NoReturn:
    """Call `main(args)` and exit: 0 (or main's int result), 1 with `error: ...` on bad input.

    Args:
        interrupted: message printed on Ctrl-C (e.g. how to resume); default re-raises.
        flags: dest -> flag of the command's parser, naming an error's parameter.
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
        sys.exit(f"{prefix}: {flag_message(e, flags)}")
    except OSError as e:
        line = describe_os_error(e)
        if line is None or debug:
            raise
        sys.exit(f"error: {line}")
    sys.exit(result if isinstance(result, int) else 0)


# --- the generic runner --------------------------------------------------------------------

def library_function(target: str) -> Callable[..., Any]:
    """The function a `"package.module:function"` string names (imported now)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    """The library function's keyword arguments: every option by dest, but -q/-v."""
    return {k: v for k, v in vars(args).items() if k not in VERBOSITY_DESTS}


def library_call(command: ModuleType | str) -> Callable[[argparse.Namespace], Any]:
    """`main(args)` of a command module: its library function called with the parameters of
    parsed `args` (what `cli` runs; tests and scripts call it with their own Namespace)."""
    def main(args: argparse.Namespace) -> Any:
        module = importlib.import_module(command) if isinstance(command, str) else command
        to_params = getattr(module, "to_params", params_of)
        return library_function(module.RUNS)(**to_params(args))
    return main


def cli(name: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Run `palm NAME argv...` (default argv: the command line after the program name)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"palm {name}"
    module = importlib.import_module(COMMANDS[name].module)
    parser = module.get_args_parser(prog)
    parse = getattr(module, "parse", argparse.ArgumentParser.parse_args)
    interrupted: str | None = None  # the command's line for Ctrl-C, once its options are known

    def run(_: Any) -> Any:
        nonlocal interrupted
        # parsing runs inside run_tool: a bad config file or value is a one-line error too
        args = parse(parser, argv)
        if hasattr(module, "interrupted"):
            interrupted = module.interrupted(args)
        with verbosity(args):
            result = library_call(module)(args)
        return module.exit_code(result) if hasattr(module, "exit_code") else result

    try:
        run_tool(run, None, flags=flags_of(parser))
    except KeyboardInterrupt:
        if interrupted is None or os.environ.get(DEBUG_VAR) == "1":
            raise
        sys.exit(interrupted)


class Command(NamedTuple):
    """One `palm NAME` subcommand: the module that declares it, and its checkout script."""

    module: str
    checkout: str  # how a source checkout runs it, relative to the repository root
    help: str


# `palm NAME ...` runs COMMANDS[NAME].module through cli(NAME); a new tool is one line here.
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
    "convert": Command("palm.cli.convert", "python tools/convert.py", "a PyTorch checkpoint as a palm .pdparams"),
    "weights": Command("palm.cli.weights", "python tools/weights.py", "Paddle's ImageNet weights: list, download, verify"),
    "benchmark": Command("palm.cli.benchmark", "python tools/benchmark.py", "speed of every way palm runs a network"),
    "benchmark-data": Command("palm.cli.benchmark_data", "python tools/benchmark_data.py", "speed of the input pipeline"),
    "inspect": Command("palm.cli.inspect", "python -m data_tools.inspect", "class counts, sizes and unreadable files of a data set"),
    "prepare": Command("palm.cli.prepare", "python -m data_tools.prepare", "XLSX to CSV, stratified splits and k folds"),
    "stats": Command("palm.cli.stats", "python -m data_tools.stats", "per-channel mean and std of a data set"),
    "digits": Command("palm.cli.digits", "python -m data_tools.digits", "scikit-learn's digits as class folders"),
    "synth": Command("palm.cli.synth", "python -m data_tools.synth_palm", "draw a synthetic PALM data set"),
    "odir-csv": Command("palm.cli.odir_csv", "python -m data_tools.odir", "ODIR-5K annotation sheet to a per-eye multi-label CSV"),
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
