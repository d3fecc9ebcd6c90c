"""What `palm cv` and `palm sweep` do, as functions of plain parameters (see palm.engine.tasks).

`config` is a validated palm.config dict (palm.config.resolved_config of the command line).
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from palm.engine.runner import prepare_demo_data
from palm.experiments.cv import run_cv
from palm.experiments.sweep import DEFAULT_METRIC, parse_factor, run_sweep


def run_cv_task(config: dict[str, Any], *, demo: bool = False, folds: int = 5, repeats: int = 1,
                pool_val: bool = False, predict_val: bool = False, jobs: int = 1
                ) -> dict[str, Any]:
    """Cross-validate `config` into its output (default runs/cv_MODEL); `demo` first makes the
    synthetic PALM set in config['data_root']. Returns the summary."""
    if demo:
        prepare_demo_data(config["data_root"])
    output = config["output"] or f"runs/cv_{config['model']}"
    return run_cv(config, output, folds=folds, repeats=repeats, pool_val=pool_val,
                  predict_val=predict_val, jobs=jobs)


def run_sweep_task(config: dict[str, Any], *, vary: Sequence[str] = (), mode: str = "ofat",
                   repeats: int = 1, jobs: int = 1, backend: str = "local",
                   address: str | None = None, metric: str = DEFAULT_METRIC) -> pd.DataFrame:
    """Sweep the factors `vary` (`KEY=V1,V2,...` each) over base `config` into its output
    (default runs/sweep_MODEL). Returns the results table."""
    output = config["output"] or f"runs/sweep_{config['model']}"
    factors = [parse_factor(text) for text in vary]
    return run_sweep(config, factors, output, mode=mode, repeats=repeats, jobs=jobs,
                     backend=backend, address=address, metric=metric)
