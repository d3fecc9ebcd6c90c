"""Trials of an experiment (a CV fold, a sweep setting): each one a normal training run folder.

A trial is done when RUN_DIR/trial.json exists (written last, atomically), so a rerun of
the experiment skips it; a trial cut short continues from its `last` checkpoint; anything
else starts afresh. `run_trials` runs a list of trials one after the other, in N local
processes, or as tasks on a Ray cluster, and returns the results in the list's order
whatever order they finish in.

Example:
    result = run_trial(cfg, "runs/sweep/lr=0.1_seed0")
    result["final_val_accuracy"], result["epochs"], result["train_seconds"]
"""
from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from palm.engine.runner import run_training
from palm.engine.train import NonFiniteLossError, TrainingInterrupted, selection_score
from palm.errors import BadConfig, BadData, StoppedByUser
from palm.io_utils import read_csv, write_json_atomic
from palm.models import IMAGENET
from palm.runtime import exit_with_parent

RESULT_FILE = "trial.json"
LOG_FILE = "train.log"
# Validation metrics a trial of each task reports, at the best epoch and at the final one
# (those the run did not log, e.g. AUC of one-class data, are left out).
TASK_METRICS = {
    "binary": ("val_accuracy", "val_roc_auc", "val_f1", "val_loss"),
    "multiclass": ("val_accuracy", "val_roc_auc", "val_f1", "val_loss"),
    "ordinal": ("val_accuracy", "val_roc_auc", "val_f1", "val_qwk", "val_mae", "val_loss"),
    "multilabel": ("val_accuracy", "val_macro_roc_auc", "val_map", "val_loss"),
}
REPORTED_METRICS = ("val_accuracy", "val_roc_auc", "val_f1", "val_qwk", "val_mae",
                    "val_macro_roc_auc", "val_map", "val_loss")
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Trial:
    """One training run of an experiment: its folder name, its full config, its factors."""

    name: str
    cfg: dict[str, Any]
    labels: dict[str, Any]  # what distinguishes it (factor values, seed, fold), for tables


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The saved result of a finished trial, or None when it has not finished."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """Best-epoch and final-epoch validation metrics, epochs and training seconds of a run.

    The training seconds add up metrics.csv's per-epoch times, so a trial resumed after an
    interruption reports its whole training time.
    """
    path = Path(run_dir) / "metrics.csv"
    history = read_csv(path).to_dict("records")
    if not history:
        raise BadData(f"{path}: no epochs recorded")
    best = max(history, key=lambda row: selection_score(row)[1])
    final = history[-1]
    result: dict[str, Any] = {"epochs": int(final["epoch"]), "best_epoch": int(best["epoch"])}
    for key in REPORTED_METRICS:
        if key in final:
            result[f"best_{key}"] = _number(best[key])
            result[f"final_{key}"] = _number(final[key])
    result["train_seconds"] = round(sum(float(row["train_seconds"]) for row in history), 2)
    return result


def ordered_result(result: dict[str, Any]) -> dict[str, Any]:
    """`result` with its keys in summarize_run's order (trial.json stores them sorted)."""
    order = ["epochs", "best_epoch"] + [f"{when}_{key}" for key in REPORTED_METRICS
                                        for when in ("best", "final")] + ["train_seconds", "note"]
    return {key: result[key] for key in order if key in result}


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@contextmanager
def _run_log(run_dir: Path, echo: bool) -> Iterator[Callable[[str], None]]:
    """A log function appending to RUN_DIR/train.log (and printing, when `echo`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_FILE, "a", encoding="utf-8") as f:
        def log(line: str) -> None:
            f.write(line + "\n")
            f.flush()
            if echo:
                print(line, flush=True)

        yield log


def run_trial(cfg: dict[str, Any], run_dir: str | Path, echo: bool = True,
              keep_diverged: bool = False) -> dict[str, Any]:
    """Train `cfg` into `run_dir` unless it is done already; return its result.

    Args:
        cfg: a validated palm.config dict; its output and resume keys are set here.
        echo: print the training log as well as writing it to RUN_DIR/train.log.
        keep_diverged: a run whose loss became NaN/inf is finished, not an error: its
            result holds the epochs before (none: no metrics) and a `note` saying why.
            A sweep over learning rates expects some to diverge.

    Returns:
        summarize_run's dict, as saved in RUN_DIR/trial.json.
    """
    run_dir = Path(run_dir)
    done = read_result(run_dir)
    if done is not None:
        return done
    resume = (run_dir / "last.pdparams").is_file()
    cfg = {**cfg, "output": str(run_dir), "resume": resume}
    note = None
    with _run_log(run_dir, echo) as log:
        try:
            # a folder with files but no `last` never completed an epoch: start it again
            run_training(cfg, overwrite=not resume, log=log, progress=False)
        except NonFiniteLossError as e:
            if not keep_diverged:
                raise
            note = f"diverged: {e}"
            log(note)
    if note is not None and not (run_dir / "metrics.csv").is_file():
        result: dict[str, Any] = {"epochs": 0}
    else:
        result = summarize_run(run_dir)
    if note is not None:
        result["note"] = note
    write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def check_experiment_record(path: Path, record: dict[str, Any]) -> None:
    """Write the settings of an experiment into its folder, or check a rerun's against them.

    Rerunning an experiment resumes it; its settings must then be the ones it started with,
    or finished runs of one setup would be mixed with new runs of another.

    Raises:
        BadConfig: naming the file and the settings that differ.
    """
    fresh = json.loads(json.dumps(record, default=str))  # as it reads back from JSON
    if not path.is_file():
        write_json_atomic(path, fresh)
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    differs = sorted(_differences(saved, fresh))
    if differs:
        raise BadConfig(f"{path}: this folder holds an experiment with other settings "
                        f"({', '.join(differs)} differ); give another output folder")


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key in set(old) | set(new):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found


def _run_quietly(cfg: dict[str, Any], run_dir: str, keep_diverged: bool) -> dict[str, Any]:
    """run_trial in a worker process: the log goes to the run folder only."""
    return run_trial(cfg, run_dir, echo=False, keep_diverged=keep_diverged)


def check_jobs(jobs: int, backend: str = "local") -> None:
    """Refuse a bad `jobs` or `backend` (callers check before they write anything).

    Raises:
        BadConfig: jobs < 1 or an unknown backend.
    """
    if backend not in BACKENDS:
        raise BadConfig(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}",
                        param="backend")
    if jobs < 1:
        raise BadConfig(f"jobs must be >= 1, got {jobs}", param="jobs")


def run_trials(trials: Sequence[Trial], output: str | Path, *, jobs: int = 1,
               backend: str = "local", address: str | None = None,
               keep_diverged: bool = False,
               log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every trial into OUTPUT/<trial.name>; return their results in `trials` order.

    Args:
        jobs: trainings at once (local backend); 1 trains in this process.
        backend: "local" (this machine) or "ray" (tasks on the Ray cluster at `address`;
            None starts a local Ray instance).
        keep_diverged: as in run_trial.
    """
    check_jobs(jobs, backend)
    output = Path(output)
    dirs = [output / trial.name for trial in trials]
    results: list[dict[str, Any] | None] = [read_result(d) for d in dirs]
    todo = [i for i, result in enumerate(results) if result is None]
    log(f"{len(trials)} runs: {len(trials) - len(todo)} done before, {len(todo)} to train"
        + (f" ({jobs} at once)" if backend == "local" and jobs > 1 and todo else "")
        + (" on Ray" if backend == "ray" and todo else ""))
    try:
        _run_todo(trials, dirs, todo, results, jobs, backend, address, keep_diverged, log)
    except (KeyboardInterrupt, TrainingInterrupted):
        raise StoppedByUser("interrupted: finished runs are kept and a run cut short continues "
                            "from its last checkpoint; run the same command again to resume"
                            ) from None
    return [result for result in results if result is not None]


def _run_todo(trials: Sequence[Trial], dirs: Sequence[Path], todo: Sequence[int],
              results: list[dict[str, Any] | None], jobs: int, backend: str,
              address: str | None, keep_diverged: bool, log: Callable[[str], None]) -> None:
    """Fill results[i] for every i in `todo` by training it."""
    if backend == "ray":
        for i, result in _run_on_ray([trials[i] for i in todo], [dirs[i] for i in todo],
                                     address, keep_diverged):
            results[todo[i]] = result
            log(f"done {trials[todo[i]].name}")
    elif jobs > 1:
        context = multiprocessing.get_context("spawn")  # paddle is not fork-safe
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=exit_with_parent) as pool:
            futures = {pool.submit(_run_quietly, trials[i].cfg, str(dirs[i]), keep_diverged): i
                       for i in todo}
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                log(f"done {trials[i].name}")
    else:
        for i in todo:
            log(f"== {trials[i].name}")
            results[i] = run_trial(trials[i].cfg, dirs[i], keep_diverged=keep_diverged)


# values of those keys that are settings, not paths
SETTING_WORDS = ("auto", "none", IMAGENET)
PATH_KEYS = ("data_root", "train_dir", "val_dir", "train_csv", "val_csv", "pretrained",
             "cache_dir")


def _absolute_paths(cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with its paths made absolute: Ray workers need not start in this folder."""
    return {**cfg, **{key: str(Path(cfg[key]).resolve()) for key in PATH_KEYS
                      if cfg.get(key) and str(cfg[key]).strip().lower() not in SETTING_WORDS}}


def _run_on_ray(trials: Sequence[Trial], dirs: Sequence[Path], address: str | None,
                keep_diverged: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, result) of every trial as Ray tasks finish them (one CPU each)."""
    try:
        import ray  # optional: pip install "palm[ray]"
    except ImportError:
        raise BadConfig("the ray backend needs Ray: pip install 'ray>=2'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(_run_quietly)
        pending = {task.remote(_absolute_paths(trial.cfg), str(d.resolve()), keep_diverged): i
                   for i, (trial, d) in enumerate(zip(trials, dirs))}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()
