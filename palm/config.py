"""Training configuration: flat YAML defaults per model, command-line overrides, saved per run.

`palm/configs/NAME.yaml` (package data, read with importlib.resources) holds what differs from
`DEFAULTS` for one network (image size, batch size, optimizer, learning rate, epochs, ...);
`--config FILE` takes a user's file by path instead. `parse_args_with_config` follows timm's pattern: read `--model` /
`--config` first, `parser.set_defaults(**yaml)`, then parse again, so the command line wins.
Every key is checked against `DEFAULTS` (a typo is an error naming the file and the key)
and numbers against `RANGES`, and the resolved configuration is written into the run folder
as `config.yaml`. YAML numbers such as `1e-3` are numbers (`load_yaml`).

Example:
    args = parse_args_with_config(get_args_parser(), ["--model", "resnet18", "--epochs", "3"])
    args.epochs  # 3, whatever palm/configs/resnet18.yaml says
"""
from __future__ import annotations

import argparse
import logging
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from palm.errors import BadConfig
from palm.io_utils import write_text_atomic
from palm.nested import more_nested_values_than

if TYPE_CHECKING:  # Python 3.11+; a string annotation below on 3.10
    from importlib.resources.abc import Traversable

log = logging.getLogger(__name__)

# The per-model configs shipped inside the package.
CONFIG_DIR: Traversable = resources.files("palm") / "configs"

# Every key a config file may set, with its default. `None` marks an optional value.
DEFAULTS: dict[str, Any] = {
    "model": "resnet50",
    "model_kwargs": {},
    # what the labels are: binary (two classes, one logit), multiclass (K classes, softmax),
    # ordinal (grades 0..K-1: softmax, scored by quadratic kappa and the referable split
    # grade >= referable_grade) or multilabel (a 0/1 CSV column per label, one sigmoid logit
    # each); null = the data's (ordinal for a grading download, multilabel with
    # label_columns), else binary for two classes, multiclass for more
    "task": None,
    # multi-label CSVs: the label columns, in output order (null: every column but path)
    "label_columns": None,
    "referable_grade": 2,
    # ordinal: how the grades are learnt: ce (softmax over K logits), coral (one score and
    # K-1 learned biases, rank consistent; Cao, Mirjalili & Raschka 2020) or regression (one
    # score, MSE, cut into grades at cut-points tuned for kappa on the selection images)
    "ordinal_loss": "ce",
    # share of the training images carved (stratified, seeded) as validation images when the
    # data has none labelled (APTOS-2019); they are listed in RUN/val_split.csv
    "val_fraction": 0.2,  # extra build_model arguments, e.g. {aux_logits: true} for googlenet
    # "imagenet" (Paddle's published weights for the model) or a .pdparams path; the
    # classifier is skipped when its shape differs
    "pretrained": None,
    # data
    "data_root": None,
    "train_dir": None,
    "val_dir": None,
    "train_csv": None,
    "val_csv": None,
    "image_size": 224,
    "normalize": "minus_one_one",
    "fundus_crop": False,
    # training augmentation: null = by data kind (fundus for a PALM data_root, natural for
    # folders/CSVs); a preset (fundus, natural, none), "natural,hflip=true" text, or a
    # mapping {preset: ..., hflip, vflip, rotate, brightness, contrast, random_resized_crop}
    "augment": None,
    # two-class data: the positive class (label 1); null = a known name (PM, positive,
    # disease, abnormal, 1, yes, true), else palm stops and asks
    "positive_class": None,
    "class_names": None,  # class order; for two classes [negative, positive]
    "allow_outside_paths": False,  # CSV paths may leave the CSV's folder / the data root
    "max_pixels": None,  # refuse images decoding to more pixels (null: $PALM_MAX_PIXELS or 100 MP)
    # shrunk images cached between epochs and runs ("auto": $PALM_CACHE_DIR or
    # ~/.cache/palm/images; null: none). Decoding a full-size PALM photo costs far more CPU
    # than reading its shrunk copy, time the network's threads would lose in every epoch
    # (`palm benchmark-data` measures both).
    "cache_dir": "auto",
    # cache size limit in GB, least recently used images evicted (null: $PALM_CACHE_SIZE_GB or 4)
    "cache_size_gb": None,
    "skip_bad": False,
    "num_workers": 2,
    # optimization
    "epochs": 10,
    "batch_size": 8,
    "optimizer": "momentum",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "scheduler": "constant",
    "step_size": 10,  # epochs between decays for scheduler "step"
    "gamma": 0.1,
    "warmup_epochs": 0.0,
    # fine-tuning (palm.engine.finetune): the new head's learning rate x head_lr_mult;
    # layer_decay d scales depth k of D by d**(D-k) (null: off); the head alone trains for
    # freeze_epochs; decay_norm_and_bias false exempts biases, norms and position/class
    # tokens from weight decay; label_smoothing eps moves targets eps/2 (one logit) or
    # eps/K (K classes) towards uniform
    "head_lr_mult": 1.0,
    "layer_decay": None,
    "freeze_epochs": 0,
    "decay_norm_and_bias": True,
    "label_smoothing": 0.0,
    "pos_weight": None,  # BCE weight of positives: a number, or "auto" = negatives/positives
    # multi-class (and ordinal) loss weight per class: "auto" (n / (K * count), scikit-learn's
    # "balanced"), "none" / null, or one number per class in class order
    "class_weights": None,
    # "shuffle" (a permutation per epoch) or "balanced" (draws with replacement, every class
    # equally often)
    "sampler": "shuffle",
    "aux_weight": 0.3,  # GoogLeNet auxiliary classifiers (Szegedy et al. 2014 use 0.3)
    "threshold": 0.5,
    # which images choose the best epoch (and later the operating point and temperature):
    # "val" (then eval figures on val are optimistic) or "holdout", a stratified, seeded
    # share of the training images (holdout_fraction) that training then does not use
    "select_on": "val",
    "holdout_fraction": 0.2,
    # run
    "output": None,  # default runs/<model>
    "seed": 0,
    "device": "auto",
    "amp": False,
    # paddle.jit.to_static (SOT) for the network's forward. Off by default: on CPU the gain
    # is small against seconds of compiling (`palm benchmark --sections compile` measures it
    # on your machine).
    "compile": False,
    "resume": False,
    # reuse an output folder that already holds a run (otherwise the default output gets the
    # next free name, runs/MODEL-2, and an explicit --output holding a run is refused)
    "exist_ok": False,
}

# Keys config.yaml records about the run that are not settings (loading it again skips them).
RECORD_KEYS = ("provenance",)

CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("momentum", "adam", "adamw"),
    "scheduler": ("constant", "step", "cosine"),
    "normalize": ("minus_one_one", "imagenet"),
    "device": ("auto", "cpu", "gpu"),
    "select_on": ("val", "holdout"),
    "task": ("binary", "multiclass", "ordinal", "multilabel"),
    "ordinal_loss": ("ce", "coral", "regression"),  # palm.predictions.ORDINAL_LOSSES
    "sampler": ("shuffle", "balanced"),
}

# A reduced run for `tools/train.py --demo`: a synthetic PALM set at 128 px (drawn once into
# DEMO_DATA_ROOT) and ResNet18 at 64 px for 4 epochs (the README's quickstart reports its
# time and scores). Loader workers are off: with small cached images their inter-process
# traffic costs more than decoding in the training process.
DEMO_DATA_ROOT = "demo_data/palm"
DEMO_SYNTH = {"n_train": 400, "n_val": 200, "image_size": 128, "difficulty": 0.5, "seed": 0}
DEMO_OVERRIDES: dict[str, Any] = {
    "model": "resnet18",
    "data_root": DEMO_DATA_ROOT,
    "image_size": 64,
    "batch_size": 16,
    "epochs": 4,
    "num_workers": 0,
    "optimizer": "adam",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "scheduler": "cosine",
    "warmup_epochs": 0.5,
    "augment": {},
    "cache_dir": "demo_data/cache",
    "output": "runs/demo",
}


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: low/high bounds (None: unbounded), open or closed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is not allowed
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return (f"in {'(' if self.low_open else '['}{self.low}, {self.high}"
                f"{')' if self.high_open else ']'}")


# Allowed ranges of config keys and of the tools' numeric options of the same name. An
# out-of-range value is an error naming the option, never a crash deep inside (a negative
# pos_weight trains towards the wrong class, image_size 60000 asks for 40 GiB). image_size
# is also the range a checkpoint's sidecar is held to, so every run trained is loadable.
RANGES: dict[str, Range] = {
    "image_size": Range(16, 4096),
    "num_workers": Range(0),
    "epochs": Range(1),
    "batch_size": Range(1),
    "merge_timeout": Range(0, low_open=True),
    "lr": Range(0, low_open=True),
    "momentum": Range(0, 1, high_open=True),
    "weight_decay": Range(0),
    "step_size": Range(1),
    "gamma": Range(0, 1, low_open=True),
    "warmup_epochs": Range(0),
    "head_lr_mult": Range(0, low_open=True),
    "layer_decay": Range(0, 1, low_open=True),
    "freeze_epochs": Range(0),
    "label_smoothing": Range(0, 1, high_open=True),
    "pos_weight": Range(0, low_open=True),
    "aux_weight": Range(0),
    "threshold": Range(0, 1),
    "holdout_fraction": Range(0, 1, low_open=True, high_open=True),
    "referable_grade": Range(1),
    "val_fraction": Range(0, 1, low_open=True, high_open=True),
    "seed": Range(0, 2**32 - 1),  # numpy's seed range
    "max_pixels": Range(1),
    "cache_size_gb": Range(0),
    # options of tools/eval.py, predict.py, cam.py, report.py
    "alpha": Range(0, 1),
    "max_side": Range(0),
    "gallery_size": Range(0),
    # all resamples are drawn at once as (resamples x images) index matrices: 10x the
    # default keeps that within memory, 10**8 asked for gigabytes and was killed
    "ci_resamples": Range(1, 20_000),
}


def _bad(key: str, source: str | None, problem: str) -> BadConfig:
    """BadConfig about `key`: from a file or mapping `source` it says `SOURCE: key ...`; as a
    parameter (source None) it says `key ...` and carries param=key, which the command line
    turns into the flag's name."""
    if source is None:
        return BadConfig(f"{key} {problem}", param=key)
    return BadConfig(f"{source}: {key} {problem}")


def check_options(options: Mapping[str, Any], source: str | None = None) -> None:
    """Check every number in `options` whose key is in RANGES (None and "auto" pass).

    Raises:
        BadConfig: one line naming the parameter (`epochs`; param="epochs"), or `SOURCE:
            epochs` for a file's key, the allowed range and the value.

    Example:
        check_options({"epochs": 0})  # BadConfig: epochs must be >= 1, got 0
    """
    for key, value in options.items():
        if key not in RANGES or value is None or value == "auto":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(key, source, f"must be a number, got {value!r}")
        if value not in RANGES[key]:
            finite = "a finite number " if not math.isfinite(value) else ""
            raise _bad(key, source, f"must be {finite}{RANGES[key]}, got {value!r}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` and `5E+4` as floats.

    PyYAML follows YAML 1.1, whose float pattern needs a dot (`1.0e-3`), so `lr: 1e-3`
    would be the string "1e-3". This is the YAML 1.2 core-schema float pattern.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$
                   |^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""", re.X),
    list("-+0123456789."),
)


# values a config may hold once its YAML aliases are followed: nine lines of aliases, each
# listing the one above nine times, are 9**9 values, and printing one in an error message
# took minutes and gigabytes
MAX_CONFIG_VALUES = 100_000
MAX_CLASS_WEIGHT = 1e6


def load_yaml(text: str) -> Any:
    """`yaml.safe_load` with YAML 1.2 floats (see _Loader).

    Raises:
        yaml.YAMLError: not YAML, or more than MAX_CONFIG_VALUES values with aliases followed.
    """
    data = yaml.load(text, Loader=_Loader)
    if more_nested_values_than(MAX_CONFIG_VALUES, data):
        raise yaml.YAMLError(f"more than {MAX_CONFIG_VALUES} values once its aliases "
                             "(*name) are followed")
    return data


def config_path_for_model(name: str, config_dir: str | Path | Traversable = CONFIG_DIR
                          ) -> Path | Traversable:
    config_dir = Path(config_dir) if isinstance(config_dir, str) else config_dir
    return config_dir / f"{name}.yaml"


def _check_value(key: str, value: Any, source: str | None) -> None:
    default = DEFAULTS[key]
    if value is None:
        # null stands for "not set" only where the default is null or a word ("auto")
        if isinstance(default, (bool, int, float)):
            raise _bad(key, source, f"must be {type(default).__name__}, not null")
        return
    if key in CHOICES and value not in CHOICES[key]:
        raise _bad(key, source, f"{value!r}: choose from {', '.join(CHOICES[key])}")
    if key == "class_weights":
        # up to 1e6: a larger ratio is a typo, and 1e308 overflowed the float32 loss to NaN
        listed = isinstance(value, list) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_CLASS_WEIGHT
            for v in value)
        if value not in ("auto", "none") and not listed:
            raise _bad(key, source, f"must be auto, none or a list of positive numbers up to "
                                    f"{MAX_CLASS_WEIGHT:g} (one per class), got {value!r}")
        return
    if key == "pos_weight":
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _bad(key, source, f"must be a number or 'auto', got {value!r}")
    elif default is not None and not isinstance(default, str):  # else optional paths, names
        _check_type(key, value, default, source)
    check_options({key: value}, source)  # optional numbers (default None) too


def _check_type(key: str, value: Any, default: Any, source: str | None) -> None:
    expected: tuple[type, ...]
    if isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, float):
        expected = (int, float)
    else:
        expected = (type(default),)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise _bad(key, source,
                   f"must be {expected[-1].__name__}, got {type(value).__name__} {value!r}")


def validate_config(cfg: dict[str, Any], source: str | None = "config") -> dict[str, Any]:
    """Check keys and value types against DEFAULTS; return `cfg` unchanged. Source None: the
    keys are parameters (see check_options).

    Raises:
        BadConfig (a ValueError): unknown key, wrong type or out of range, naming `source`
            and the key.
    """
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise BadConfig(
            f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(DEFAULTS))}"
        )
    for key, value in cfg.items():
        _check_value(key, value, source)
    return cfg


def load_config(path: str | Path | Traversable) -> dict[str, Any]:
    """Read a flat YAML config (a file, or a packaged resource) and validate it. An empty file
    is an empty config."""
    path = Path(path) if isinstance(path, str) else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        cfg = load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as e:
        raise BadConfig(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise BadConfig(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(cfg, dict):
        raise BadConfig(f"{path}: expected a mapping of keys to values, got {type(cfg).__name__}")
    cfg = {k: v for k, v in cfg.items() if k not in RECORD_KEYS}  # a run's config.yaml loads too
    return validate_config(cfg, str(path))


def model_config(name: str, config_dir: str | Path | Traversable = CONFIG_DIR) -> dict[str, Any]:
    """palm/configs/NAME.yaml with `model: NAME`; only DEFAULTS (and a logged warning) when absent."""
    path = config_path_for_model(name, config_dir)
    if not path.is_file():
        log.warning("%s not found; using built-in defaults for %s", path, name)
        return {"model": name}
    return {**load_config(path), "model": name}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """`-c/--config FILE` and `-o/--override KEY=VALUE` (repeatable), as PaddleClas spells them."""
    parser.add_argument("-c", "--config", help="a YAML config file instead of configs/MODEL.yaml")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config key (YAML value; dotted keys reach into mappings, "
                             "e.g. -o model_kwargs.aux_logits=false); flags still win")


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`cfg` with each `KEY=VALUE` (or `KEY.SUB=VALUE`) set; values are read as YAML.

    Raises:
        BadConfig: no `=`, an unknown top-level key (named, with the known keys), a dotted
            key into a key that is not a mapping, or a value that is not valid YAML.

    Example:
        apply_overrides(DEFAULTS, ["epochs=3", "model_kwargs.aux_logits=false"])
    """
    cfg = dict(cfg)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadConfig(f"-o {item!r}: expected KEY=VALUE, e.g. -o epochs=3")
        top, *path = key.split(".")
        if top not in DEFAULTS:
            raise BadConfig(f"-o {key}: unknown key {top!r}; known keys: {', '.join(sorted(DEFAULTS))}")
        try:
            value = load_yaml(text) if text.strip() else None
        except yaml.YAMLError:
            raise BadConfig(f"-o {key}: {text!r} is not a valid YAML value") from None
        if not path:
            cfg[top] = value
        elif not isinstance(cfg.get(top) or {}, dict):
            raise BadConfig(f"-o {key}: {top} is {cfg[top]!r}, not a mapping")
        else:
            cfg[top] = node = dict(cfg.get(top) or {})
            for part in path[:-1]:
                node[part] = node = dict(node.get(part) or {})
            node[path[-1]] = value
        # checked here, so a bad value is named as the -o it came from
        _check_value(top, cfg[top], f"-o {item}")
    return cfg


def _resume_target(resume: Any) -> Path | None:
    """The run folder `--resume PATH` names (a folder or a file in it); None for bare --resume."""
    if not isinstance(resume, str):
        return None
    path = Path(resume)
    return path if path.is_dir() or not path.suffix else path.parent


def parse_augment(text: str) -> dict[str, Any]:
    """`--augment` text -> setting: "fundus", "none,contrast=0.1", "hflip=true,rotate=5".

    A bare word is a preset; key=value pairs are overrides (values read as YAML scalars).
    """
    setting: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            key, value = (x.strip() for x in part.split("=", 1))
            try:
                setting[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                setting[key] = value  # reported by resolve_augment as a bad value
        elif "preset" in setting:
            raise BadConfig(f"augment {text!r}: two presets ({setting['preset']}, {part})",
                            param="augment")
        else:
            setting["preset"] = part
    return setting


def parse_args_with_config(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    config_dir: str | Path | Traversable = CONFIG_DIR,
) -> argparse.Namespace:
    """Parse `argv` with defaults from DEFAULTS < config file < --demo settings < `-o` < flags.

    The parser must define `--config` and `--model` (and may define `--demo`, `-o`, see
    `add_config_options`); arguments named like a DEFAULTS key (dest) get their default from
    the merged config. `--resume PATH` (a run folder or its last.pdparams) means
    `--output FOLDER --resume`.
    """
    first, _ = parser.parse_known_args(argv)
    demo = getattr(first, "demo", False)
    cfg: dict[str, Any] = dict(DEFAULTS)
    if first.config:
        cfg.update(load_config(first.config))
    else:
        default_model = DEMO_OVERRIDES["model"] if demo else DEFAULTS["model"]
        cfg.update(model_config(first.model or default_model, config_dir))
    if demo:
        # the demo's reduced settings apply to whichever network was chosen
        cfg.update({k: v for k, v in DEMO_OVERRIDES.items() if k != "model"})
    cfg = apply_overrides(cfg, getattr(first, "override", None) or [])
    parser.set_defaults(**cfg)
    args = parser.parse_args(argv)
    target = _resume_target(args.resume)
    if target is not None:
        if args.output and Path(args.output) != target:
            parser.error(f"--resume {args.resume} and --output {args.output} name different runs")
        args.output, args.resume = str(target), True
    validate_config({k: getattr(args, k) for k in DEFAULTS}, None)
    return args


def resolved_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys of `args` as a plain dict (what the run actually used)."""
    return {k: getattr(args, k) for k in DEFAULTS}


def save_config(cfg: dict[str, Any], run_dir: str | Path,
                provenance: dict[str, Any] | None = None) -> Path:
    """Write `cfg` (and what produced the run, under `provenance:`) to RUN_DIR/config.yaml
    atomically; loadable again with `load_config`, which skips the provenance record."""
    path = Path(run_dir) / "config.yaml"
    record = {**cfg, **({"provenance": provenance} if provenance else {})}
    write_text_atomic(path, yaml.safe_dump(record, sort_keys=True, allow_unicode=True))
    return path


def parse_training_args(parser: argparse.ArgumentParser,
                        argv: Sequence[str] | None = None) -> argparse.Namespace:
    """A training command line (train, cv, sweep) merged over its config file and DEFAULTS
    (parse_args_with_config), with `--augment` text read into its setting."""
    args = parse_args_with_config(parser, argv)
    if isinstance(args.augment, str):  # --augment text (a YAML mapping stays as it is)
        args.augment = parse_augment(args.augment)
    return args
