"""Ablation sweeps: train a base config with factors varied, tabulate and plot the results.

A factor is a config key (or `model_kwargs.NAME`) with the values to try. `ofat` (one factor
at a time) starts from the base setting and changes one factor per setting, as classic
ablations do; `grid` trains every combination. A factor the base config does not set (a
model option left at the network's default) takes its first value as the base. Every
setting is trained with `repeats` seeds (the config's seed, +1, ...), each run a normal run
folder OUTPUT/<factor=value_...>_seed<N>, so the sweep resumes where it stopped. A run
whose loss becomes NaN/inf is recorded with a `note`, and the sweep goes on.

Outputs in OUTPUT: results.csv (one row per run), summary.csv and summary.md (mean ± sd
per setting), plot_<factor>.png (one per factor) and sweep.json (the base config).

Example:
    factors = [parse_factor("lr=0.01,0.1"), parse_factor("model_kwargs.pooling=max,avg")]
    table = run_sweep(cfg, factors, "runs/sweep", mode="ofat", repeats=3)
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from palm.config import DEFAULTS, load_yaml, validate_config
from palm.data import sources
from palm.engine.runner import build_datasets, order_grades
from palm.experiments.trials import (REPORTED_METRICS, TASK_METRICS, Trial,
                                     check_experiment_record, check_jobs, ordered_result,
                                     run_trials)
from palm.errors import BadConfig
from palm.io_utils import output_lock, write_csv_atomic, write_text_atomic
from palm.models import build_model
from palm.viz.experiments import plot_factor

MODES = ("ofat", "grid")
MODEL_KWARGS_PREFIX = "model_kwargs."
# keys the sweep itself sets, or that name no training choice
NOT_FACTORS = ("output", "resume", "seed", "model_kwargs")
LOG_SCALE_FACTORS = ("lr", "batch_size", "weight_decay")
SWEEP_FILE = "sweep.json"
DEFAULT_METRIC = "final_val_accuracy"
# columns of summary.md (summary.csv has all): the plotted metric comes first
# (a task's headline, quadratic kappa or macro AUC, only when its runs record it)
TABLE_METRICS = ("final_val_accuracy", "best_val_accuracy", "final_val_roc_auc",
                 "final_val_qwk", "final_val_macro_roc_auc", "final_val_loss", "train_seconds")


@dataclass(frozen=True)
class Factor:
    """A config key (dotted for model options) and the values to train it with."""

    key: str
    values: tuple[Any, ...]


def parse_factor(text: str) -> Factor:
    """`key=v1,v2,...` -> Factor; values are read as YAML scalars (0.1, 16, relu, true).

    Raises:
        BadConfig: no `=`, an unknown or unvariable key, or a repeated value.
    """
    key, sep, values_text = text.partition("=")
    key = key.strip()
    if not sep or not key or not values_text.strip():
        raise BadConfig(f"factor {text!r}: expected KEY=VALUE1,VALUE2,... "
                        "(e.g. lr=0.1,0.5 or model_kwargs.activation=relu,sigmoid)")
    if key.startswith(MODEL_KWARGS_PREFIX):
        if not key[len(MODEL_KWARGS_PREFIX):]:
            raise BadConfig(f"factor {text!r}: name the model option after 'model_kwargs.'")
    elif key not in DEFAULTS or key in NOT_FACTORS:
        what = "is set by the sweep" if key in NOT_FACTORS else "is not a config key"
        hint = " (use repeats for seeds)" if key == "seed" else ""
        raise BadConfig(f"factor {key}: {what}{hint}; vary a config key (lr, batch_size, ...) "
                        "or a model option as model_kwargs.NAME")
    values = tuple(load_yaml(v.strip()) for v in values_text.split(","))
    if len(set(map(repr, values))) != len(values):
        raise BadConfig(f"factor {text!r}: a value is listed twice")
    return Factor(key, values)


def check_factors(factors: Sequence[Factor]) -> None:
    keys = [f.key for f in factors]
    if not factors:
        raise BadConfig("give at least one factor KEY=VALUES")
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise BadConfig(f"factor {', '.join(repeated)} given more than once; list all its "
                        "values in one factor")


def get_value(cfg: dict[str, Any], key: str, missing: Any = None) -> Any:
    """cfg[key], or cfg["model_kwargs"][name] for `model_kwargs.name` (`missing` if unset)."""
    if key.startswith(MODEL_KWARGS_PREFIX):
        return (cfg.get("model_kwargs") or {}).get(key[len(MODEL_KWARGS_PREFIX):], missing)
    return cfg.get(key, missing)


def with_values(cfg: dict[str, Any], setting: dict[str, Any]) -> dict[str, Any]:
    """A copy of `cfg` with the setting's factor values in place."""
    cfg = copy.deepcopy(cfg)
    for key, value in setting.items():
        if key.startswith(MODEL_KWARGS_PREFIX):
            cfg["model_kwargs"] = {**(cfg.get("model_kwargs") or {}),
                                   key[len(MODEL_KWARGS_PREFIX):]: value}
        else:
            cfg[key] = value
    return cfg


def base_setting(cfg: dict[str, Any], factors: Sequence[Factor]) -> dict[str, Any]:
    """Each factor's value in the base config, or its first value when the base leaves it unset."""
    unset = object()
    base = {}
    for factor in factors:
        value = get_value(cfg, factor.key, unset)
        base[factor.key] = factor.values[0] if value is unset else value
    return base


def settings(cfg: dict[str, Any], factors: Sequence[Factor], mode: str) -> list[dict[str, Any]]:
    """The settings to train, each a full {factor: value}, without repeats.

    ofat: the base setting, then each factor's other values with the rest at the base.
    grid: every combination, in the order of the factors' values.
    """
    if mode not in MODES:
        raise BadConfig(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_factors(factors)
    base = base_setting(cfg, factors)
    if mode == "grid":
        found = [dict(zip(base, combo)) for combo in
                 itertools.product(*(factor.values for factor in factors))]
    else:
        found = [base] + [{**base, factor.key: value}
                          for factor in factors for value in factor.values]
    unique: list[dict[str, Any]] = []
    for setting in found:
        if setting not in unique:
            unique.append(setting)
    return unique


def _text(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "-", str(value))


def trial_name(setting: dict[str, Any], seed: int) -> str:
    """Folder name of one run: `lr=0.1_model_kwargs.pooling=avg_seed0`."""
    return "_".join(f"{key}={_text(value)}" for key, value in setting.items()) + f"_seed{seed}"


def plan_trials(cfg: dict[str, Any], factors: Sequence[Factor], mode: str,
                repeats: int) -> list[Trial]:
    """Every run of the sweep, each config validated (and its network built once, so a bad
    model option stops the sweep before any training)."""
    if repeats < 1:
        raise BadConfig(f"repeats must be >= 1, got {repeats}", param="repeats")
    trials, checked_models = [], []
    for setting in settings(cfg, factors, mode):
        for repeat in range(repeats):
            seed = int(cfg["seed"]) + repeat
            trial_cfg = validate_config({**with_values(cfg, setting), "seed": seed},
                                        f"setting {', '.join(f'{k}={v}' for k, v in setting.items())}")
            model_key = (trial_cfg["model"], repr(trial_cfg["model_kwargs"]))
            if model_key not in checked_models:
                _check_model(trial_cfg)
                checked_models.append(model_key)
            trials.append(Trial(trial_name(setting, seed), trial_cfg, {**setting, "seed": seed}))
    return trials


def _check_model(cfg: dict[str, Any]) -> None:
    kwargs = cfg["model_kwargs"]
    if not isinstance(kwargs, dict):
        raise BadConfig(f"model_kwargs must be a mapping, got {kwargs!r}")
    build_model(cfg["model"], 1, **kwargs)


def results_table(trials: Sequence[Trial], results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """results.csv: trial, the factor values, seed, then the run's result columns."""
    rows = [{"trial": trial.name, **trial.labels, **ordered_result(result)}
            for trial, result in zip(trials, results)]
    return pd.DataFrame(rows)


def metric_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(("best_val_", "final_val_"))]


def summary_table(table: pd.DataFrame, factor_keys: Sequence[str]) -> pd.DataFrame:
    """Mean and sd (over seeds) of every metric and of the training time, per setting, in
    the order the settings were run."""
    columns = metric_columns(table) + ["train_seconds"]
    setting = table[list(factor_keys)].apply(lambda row: repr(tuple(row)), axis=1)
    rows = []
    for key in setting.unique():
        group = table[setting == key]
        row: dict[str, Any] = {k: group.iloc[0][k] for k in factor_keys}
        row["runs"] = len(group)
        for column in columns:
            numbers = pd.to_numeric(group[column], errors="coerce")
            row[f"{column}_mean"] = numbers.mean()
            row[f"{column}_sd"] = numbers.std()  # NaN for a single run
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_sd(mean: float, sd: float, digits: int = 4) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def summary_markdown(summary: pd.DataFrame, factor_keys: Sequence[str],
                     metric: str = DEFAULT_METRIC) -> str:
    """summary.md: one row per setting, `metric` and TABLE_METRICS as mean ± sd."""
    wanted = [metric] + [m for m in TABLE_METRICS if m != metric]
    metrics = [m for m in wanted if f"{m}_mean" in summary.columns]
    header = list(factor_keys) + ["runs"] + metrics
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [str(row[k]) for k in factor_keys] + [str(int(row["runs"]))]
        cells += [_mean_sd(row[f"{m}_mean"], row[f"{m}_sd"], 1 if m == "train_seconds" else 4)
                  for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def factor_rows(table: pd.DataFrame, factor: Factor, base: dict[str, Any],
                mode: str) -> pd.DataFrame:
    """The runs that show `factor`'s effect: ofat, the others at the base; grid, all runs."""
    if mode == "grid":
        return table
    others = [k for k in base if k != factor.key]
    keep = np.ones(len(table), dtype=bool)
    for key in others:
        keep &= table[key].map(repr).eq(repr(base[key])).to_numpy()
    return table[keep]


def plot_factors(table: pd.DataFrame, factors: Sequence[Factor], base: dict[str, Any],
                 mode: str, metric: str, output: Path) -> list[Path]:
    """plot_<factor>.png: `metric` (mean ± sd over seeds, and over the other factors in a
    grid) against each factor's values, in the order given."""
    paths = []
    for factor in factors:
        rows = factor_rows(table, factor, base, mode)
        values, means, sds = [], [], []
        for value in factor.values:
            runs = rows.loc[rows[factor.key].map(repr).eq(repr(value)), metric].astype(float)
            if len(runs):
                values.append(value)
                means.append(float(runs.mean()))
                sds.append(float(runs.std()) if len(runs) > 1 else math.nan)
        name = factor.key.removeprefix(MODEL_KWARGS_PREFIX)
        log_x = name in LOG_SCALE_FACTORS and all(
            isinstance(v, (int, float)) and v > 0 for v in values)
        seeds = table["seed"].nunique()
        paths.append(plot_factor(values, means, sds, factor.key, metric,
                                 output / f"plot_{_text(factor.key)}.png", log_x,
                                 title=f"{metric} vs {factor.key} ({mode}, {seeds} seed"
                                       f"{'s' if seeds > 1 else ''})"))
    return paths


def result_columns(task: str | None = None) -> list[str]:
    """The metric columns of a results table: those a run of `task` records (None: any)."""
    reported = REPORTED_METRICS if task is None else TASK_METRICS[task]
    return [f"{when}_{key}" for key in reported for when in ("best", "final")] + ["train_seconds"]


def check_metric(metric: str, task: str | None = None) -> None:
    """Raises BadConfig unless `metric` is a column a results table (of runs of `task`;
    None: of any task) can have; the message lists the ones it can."""
    known = result_columns(task)
    if metric not in known:
        of_task = f"the {task} task's " if task else ""
        raise BadConfig(f"metric {metric}: not a result of a run; choose from {of_task}"
                        f"{', '.join(known)}")


def data_task(cfg: dict[str, Any]) -> str:
    """The task the sweep's runs will have: the config's, else the data's (as training
    resolves it)."""
    train_set, val_set = build_datasets(cfg)
    order_grades(cfg["task"], train_set, val_set)
    return sources.resolve_task(cfg["task"], list(train_set.classes),
                                getattr(train_set, "task", None))


def run_sweep(cfg: dict[str, Any], factors: Sequence[Factor], output: str | Path, *,
              mode: str = "ofat", repeats: int = 1, jobs: int = 1, backend: str = "local",
              address: str | None = None, metric: str = DEFAULT_METRIC,
              log: Callable[[str], None] = print) -> pd.DataFrame:
    """Train every run of the sweep not done yet, then write the tables and plots.

    Returns:
        The results table (results.csv).
    """
    check_jobs(jobs, backend)
    output = Path(output)
    trials = plan_trials(cfg, factors, mode, repeats)
    # refused before sweep.json is written: it would hold the rejected settings, and the
    # corrected rerun would be refused as "an experiment with other settings"
    check_metric(metric)
    check_metric(metric, data_task(cfg))
    with output_lock(output, folder=True):
        check_experiment_record(output / SWEEP_FILE, {
            "base": {k: v for k, v in cfg.items() if k not in ("output", "resume")}})
        # a diverging setting (too high a learning rate) is a result, not a failure
        results = run_trials(trials, output, jobs=jobs, backend=backend, address=address,
                             keep_diverged=True, log=log)
        table = results_table(trials, results)
        if metric not in table.columns:
            raise BadConfig(f"metric {metric!r}: not in the results; choose from "
                            f"{', '.join(metric_columns(table))}")
        keys = [f.key for f in factors]
        summary = summary_table(table, keys)
        markdown = summary_markdown(summary, keys, metric)
        write_csv_atomic(output / "results.csv", table)
        write_csv_atomic(output / "summary.csv", summary)
        write_text_atomic(output / "summary.md", markdown)
        plots = plot_factors(table, factors, base_setting(cfg, factors), mode, metric, output)
    log(markdown)
    log(f"wrote {output / 'results.csv'}, summary.csv, summary.md and "
        f"{', '.join(p.name for p in plots)} in {output}")
    return table
