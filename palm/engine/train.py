"""Training: the loss, one epoch, and `fit` (epochs, validation, logging, checkpoints).

Run folder written by `fit` (main process only):
    metrics.csv                 one row per epoch
    last.pdparams/.pdopt/.json  after every epoch (and on Ctrl-C); .pdopt holds optimizer,
                                LR-scheduler (and AMP scaler) state for --resume
    best.pdparams/.json         the epoch with the best AUC on the selection images
                                (accuracy when AUC is undefined, e.g. one class): the
                                validation set, or with select_on holdout a stratified
                                part of the training data; the JSON's "selection" says which
    best_selection.csv          the selection images' logits at that epoch (for
                                tools/eval.py --fit-temperature / --operating-point)
    After each epoch, last, best (when it improved) and metrics.csv are saved as one unit
    (palm.engine.checkpoint.CheckpointWriter): a crash leaves all of them at the previous
    epoch or all at the new one, so metrics.csv is never ahead of `last` and `best` exists
    whenever the log said "*best".
    loss_curve.png, metrics_curve.png   at the end
    visualdl/                   when VisualDL is installed
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import paddle
from tqdm import tqdm

from palm.engine.checkpoint import (
    CheckpointWriter,
    check_state_matches,
    load_meta,
    load_optimizer_state,
    load_weights,
    recover_folder,
)
from palm.engine.evaluate import EvalResult, evaluate, json_ready
from palm.engine.selection import selection_csv_path, selection_frame
from palm.errors import BadData, StoppedByUser, UserError
from palm.metrics import REFERABLE_GRADE
from palm.predictions import ordinal_loss_of
from palm.io_utils import read_csv, write_csv
from palm.viz.plots import plot_history


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or inf; the optimizer step was not taken."""


class TrainingInterrupted(StoppedByUser):
    """Ctrl-C during training; `last` was saved first."""


def train_one_epoch(
    model: paddle.nn.Layer,
    loss_fn: Callable,
    optimizer: paddle.optimizer.Optimizer,
    loader: paddle.io.DataLoader,
    *,
    epoch: int,
    scheduler: paddle.optimizer.lr.LRScheduler | None = None,
    scaler: paddle.amp.GradScaler | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """One pass over `loader`; the scheduler steps after every optimizer step.

    Args:
        epoch: 1-based, for the progress bar and messages.
        scaler: a GradScaler enables mixed precision (auto_cast) on GPU.

    Returns:
        {"train_loss", "lr", "train_images", "train_seconds", "train_img_per_s"}.

    Raises:
        NonFiniteLossError: a batch's loss is NaN/inf (checked before the step, so the
            weights are still those of the last good step).
    """
    model.train()
    loss_sum, seen = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress,
               dynamic_ncols=True)
    for step, (images, labels) in enumerate(bar, start=1):
        with paddle.amp.auto_cast(enable=scaler is not None), warnings.catch_warnings():
            # paddle's BatchNorm warns on every training forward that it tracks statistics
            warnings.filterwarnings("ignore", message="When training, we now always track")
            loss = loss_fn(model(images), labels)
        value = float(loss)
        if not math.isfinite(value):
            bar.close()
            raise NonFiniteLossError(
                f"epoch {epoch}, batch {step}: training loss is {value}; stopping. "
                "Try a lower --lr, check the data (--skip-bad), or run without --amp."
            )
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.clear_grad()
        if scheduler is not None:
            scheduler.step()
        loss_sum += value * len(labels)
        seen += len(labels)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{optimizer.get_lr():.2e}")
    bar.close()
    seconds = time.perf_counter() - start
    if seen == 0:
        raise BadData("train_one_epoch: the loader yielded no batches (batch size > data set?)")
    return {"train_loss": loss_sum / seen, "lr": float(optimizer.get_lr()), "train_images": seen,
            "train_seconds": seconds, "train_img_per_s": seen / max(seconds, 1e-9)}


# Validation metrics logged per epoch (those a metric dict lacks are left out of the row).
EPOCH_METRICS = ("accuracy", "roc_auc", "sensitivity", "specificity", "precision", "recall",
                 "f1", "average_precision", "qwk", "mae", "macro_roc_auc", "map")


def epoch_row(epoch: int, train_stats: dict[str, float], val: EvalResult, threshold: float) -> dict[str, Any]:
    """One metrics.csv row: epoch, lr, train_loss, val_loss, val_<metric>..., speed."""
    metrics = val.metrics(threshold)
    row: dict[str, Any] = {"epoch": epoch, "lr": train_stats["lr"],
                           "train_loss": train_stats["train_loss"], "val_loss": val.loss}
    row.update({f"val_{k}": metrics[k] for k in EPOCH_METRICS if k in metrics})
    row["train_img_per_s"] = train_stats["train_img_per_s"]
    row["train_seconds"] = train_stats["train_seconds"]
    return row


def selection_score(row: dict[str, Any], prefix: str = "val") -> tuple[str, float]:
    """(metric name, value) that picks `best` on the selection images (`prefix` val or
    holdout): quadratic kappa for grading (ordinal), macro AUC for several labels, else AUC;
    accuracy when the one before is undefined."""
    for metric in ("qwk", "macro_roc_auc", "roc_auc"):
        value = row.get(f"{prefix}_{metric}", math.nan)
        if value is not None and math.isfinite(value):
            return f"{prefix}_{metric}", float(value)
    return f"{prefix}_accuracy", float(row[f"{prefix}_accuracy"])


def selection_key(row: dict[str, Any], prefix: str = "val") -> tuple[float, float]:
    """What `best` maximises: the selection score, then the lower selection loss, because
    kappa and accuracy on a small validation set tie often (and a tie went to epoch 1)."""
    loss = row.get(f"{prefix}_loss", math.nan)
    return selection_score(row, prefix)[1], -float(loss) if loss is not None else math.nan


@dataclass
class Selection:
    """The images that choose `best`: the validation set (loader None: reuse its results)
    or a holdout carved from the training data.

    Attributes:
        files: image paths, in loader order.
        record: what best.json's "selection" says (select_on, holdout_fraction, seed, ...).
    """

    files: list[str]
    record: dict[str, Any]
    loader: paddle.io.DataLoader | None = None

    @property
    def prefix(self) -> str:
        return "val" if self.loader is None else "holdout"


def holdout_columns(result: EvalResult, threshold: float) -> dict[str, Any]:
    """holdout_loss, holdout_accuracy, holdout_roc_auc (and holdout_qwk when grading) for a
    metrics.csv row."""
    metrics = result.metrics(threshold)
    return {"holdout_loss": result.loss, "holdout_accuracy": metrics["accuracy"],
            "holdout_roc_auc": metrics.get("roc_auc", math.nan),
            **({"holdout_qwk": metrics["qwk"]} if "qwk" in metrics else {})}


def summary_line(row: dict[str, Any], epochs: int, best: bool) -> str:
    """`epoch 3/10 train_loss 0.41 val_loss 0.30 acc 0.912 auc 0.951 sens 0.90 spec 0.92 ...`"""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}",
             f"val_loss {row['val_loss']:.4f}"]
    for key, short in (("val_accuracy", "acc"), ("val_roc_auc", "auc"), ("val_macro_roc_auc", "macro_auc"), ("val_sensitivity", "sens"),
                       ("val_specificity", "spec"), ("val_f1", "f1"),
                       ("val_qwk", "qwk"), ("val_mae", "mae"), ("holdout_roc_auc", "holdout_auc"),
                       ("holdout_qwk", "holdout_qwk")):
        if key in row and not (isinstance(row[key], float) and math.isnan(row[key])):
            parts.append(f"{short} {row[key]:.3f}")  # undefined ones (a grade's AUC) left out
    parts += [f"lr {row['lr']:.2e}", f"{row['train_img_per_s']:.1f} img/s"]
    return "  ".join(parts) + ("  *best" if best else "")


def write_metrics_csv(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write metrics.csv with every epoch so far to `path` (fit stages it with the checkpoint)."""
    write_csv(path, pd.DataFrame(list(history)))


def read_metrics_csv(path: str | Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """Rows of an earlier metrics.csv for epochs <= up_to_epoch (used on --resume)."""
    path = Path(path)
    if not path.is_file():
        return []
    frame = read_csv(path)
    return frame[frame["epoch"] <= up_to_epoch].to_dict("records")


def open_visualdl(run_dir: Path):
    """A VisualDL LogWriter in run_dir/visualdl, or None when VisualDL is not installed."""
    try:
        from visualdl import LogWriter
    except ImportError:
        return None
    return LogWriter(logdir=str(run_dir / "visualdl"))


def unwrap(model: paddle.nn.Layer) -> paddle.nn.Layer:
    """The network inside paddle.DataParallel (its state dict has no `_layers.` prefix)."""
    return model._layers if isinstance(model, paddle.DataParallel) else model


def param_names(model: paddle.nn.Layer) -> dict[str, str]:
    """Structured name ("layer1.0.conv1.weight") -> paddle's global parameter name."""
    return {name: p.name for name, p in unwrap(model).named_parameters()}


def remap_optimizer_state(opt_state: dict[str, Any], saved_names: dict[str, str],
                          model: paddle.nn.Layer) -> dict[str, Any]:
    """Rename optimizer accumulators from the saving process's parameter names to ours.

    Paddle keys optimizer state by global parameter names ("conv2d_40.w_0_moment1_0"), which
    depend on how many layers the process built before; structured names are stable.
    """
    current = param_names(model)
    rename = {old: current[name] for name, old in saved_names.items() if name in current}

    def new_key(key: str) -> str:
        old = max((o for o in rename if key == o or key.startswith(o + "_")), key=len, default=None)
        return key if old is None else rename[old] + key[len(old):]

    return {new_key(k): ({new_key(a): b for a, b in v.items()} if k == "master_weights" else v)
            for k, v in opt_state.items()}


@dataclass
class RunState:
    """What `fit` carries between epochs and across --resume.

    Attributes:
        epoch: epochs completed.
        best_score: selection score of `best` so far (-inf before the first epoch).
        best_loss: its selection loss, which breaks a tie in the score (a resumed run saved
            before ties were broken has -inf: there, as then, a tie never wins).
        history: metrics.csv rows so far.
    """

    epoch: int = 0
    best_score: float = -math.inf
    best_loss: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)


def stage_run_checkpoint(
    save: CheckpointWriter,
    path: Path,
    model: paddle.nn.Layer,
    meta: dict[str, Any],
    state: RunState,
    optimizer: paddle.optimizer.Optimizer | None = None,
    scheduler: paddle.optimizer.lr.LRScheduler | None = None,
    scaler: paddle.amp.GradScaler | None = None,
    **meta_extra: Any,
) -> None:
    """Stage weights + sidecar (+ optimizer, scheduler, scaler state and best score when an
    optimizer is given) in `save`."""
    last_row = state.history[-1] if state.history else {}
    full_meta = {**meta, "epoch": state.epoch, "metrics": json_ready(dict(last_row)), **meta_extra}
    opt_state = None
    if optimizer is not None:
        opt_state = {"optimizer": optimizer.state_dict(), "best_score": state.best_score,
                    "best_loss": state.best_loss,
                     "param_names": param_names(model),
                     "scheduler": scheduler.state_dict() if scheduler is not None else None,
                     "scaler": scaler.state_dict() if scaler is not None else None}
    save.add_checkpoint(path, unwrap(model).state_dict(), full_meta, opt_state)


def save_epoch(
    run_dir: Path,
    model: paddle.nn.Layer,
    meta: dict[str, Any],
    state: RunState,
    optimizer: paddle.optimizer.Optimizer,
    scheduler: paddle.optimizer.lr.LRScheduler | None,
    scaler: paddle.amp.GradScaler | None,
    best: tuple[str, dict[str, Any], pd.DataFrame] | None,
    **meta_extra: Any,
) -> None:
    """Save `last`, `best` and metrics.csv as one unit.

    `best` is (metric that made it best, selection record, the selection images'
    predictions) when this epoch is the best so far, else None.
    """
    with CheckpointWriter(run_dir) as save:
        stage_run_checkpoint(save, run_dir / "last.pdparams", model, meta, state, optimizer,
                             scheduler, scaler, **meta_extra)
        if best is not None:
            best_metric, record, frame = best
            best_path = run_dir / "best.pdparams"
            record = {**record, "metric": best_metric}
            if len(frame):
                predictions = selection_csv_path(best_path)
                record["predictions"] = predictions.name
                save.add_file(predictions, lambda tmp: write_csv(tmp, frame))
            stage_run_checkpoint(save, best_path, model, meta, state, best_metric=best_metric,
                                 selection=record)
        save.add_file(run_dir / "metrics.csv", lambda tmp: write_metrics_csv(state.history, tmp))
        save.commit()


def fit(
    model: paddle.nn.Layer,
    loss_fn: Callable,
    optimizer: paddle.optimizer.Optimizer,
    train_loader: paddle.io.DataLoader,
    val_loader: paddle.io.DataLoader,
    *,
    epochs: int,
    run_dir: str | Path,
    meta: dict[str, Any],
    scheduler: paddle.optimizer.lr.LRScheduler | None = None,
    scaler: paddle.amp.GradScaler | None = None,
    state: RunState | None = None,
    selection: Selection | None = None,
    is_main: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    before_epoch: Callable[[int], None] | None = None,
    val_loss_fn: Callable | None = None,
) -> RunState:
    """Train from `state.epoch` to `epochs`, validating and checkpointing after every epoch.

    Args:
        meta: checkpoint sidecar fields (model, num_classes, class_names, image_size,
            normalize, fundus_crop, threshold, model_kwargs); epoch and metrics are added.
        state: where to continue (from `load_resume_state`); a fresh run when None.
        selection: the images that pick `best` (default: the validation set, files unknown).
        is_main: write files (rank 0 of a distributed run).
        before_epoch: called with each 0-based epoch before it trains (e.g. to freeze the
            backbone, palm.engine.finetune.backbone_freezer).
        val_loss_fn: the loss reported on validation and holdout images when it is not
            `loss_fn` (training with label smoothing reports the plain loss there).

    Returns:
        The final RunState.

    Raises:
        TrainingInterrupted: Ctrl-C; `last` holds the weights at that moment and the count
            of completed epochs, so --resume repeats the interrupted epoch.
        NonFiniteLossError: NaN/inf loss (metrics.csv and `last` keep the last good epoch).
    """
    run_dir = Path(run_dir)
    state = state or RunState()
    threshold = float(meta.get("threshold", 0.5))
    selection = selection or Selection([], {"select_on": "val"})
    writer = open_visualdl(run_dir) if is_main else None
    unsaved_best = None  # best of a finished epoch whose save did not complete
    try:
        for epoch in range(state.epoch, epochs):
            if before_epoch is not None:
                before_epoch(epoch)
            row, chosen_by = _train_and_validate(
                model, loss_fn, val_loss_fn or loss_fn, optimizer, train_loader, val_loader,
                epoch=epoch,
                selection=selection, threshold=threshold, scheduler=scheduler, scaler=scaler,
                progress=progress and is_main, task=meta.get("task"),
                referable_grade=int(meta.get("referable_grade", REFERABLE_GRADE)),
                label_names=meta.get("class_names") or (), ordinal_loss=ordinal_loss_of(meta))
            best = _record_epoch(state, epoch + 1, row, selection, chosen_by)
            if best is not None:
                unsaved_best = best
            if is_main:
                save_epoch(run_dir, model, meta, state, optimizer, scheduler, scaler, unsaved_best)
                unsaved_best = None
                _log_scalars(writer, row)
                log(summary_line(row, epochs, best is not None))
    except KeyboardInterrupt:
        if is_main:
            # Ctrl-C may have hit a save: finish or drop it, then save (again) from memory
            recover_folder(run_dir)
            save_epoch(run_dir, model, meta, state, optimizer, scheduler, scaler, unsaved_best,
                       interrupted=True)
        raise TrainingInterrupted(
            f"interrupted in epoch {state.epoch + 1}; saved {run_dir / 'last.pdparams'} "
            f"({state.epoch} epochs completed). Continue with --resume."
        ) from None
    finally:
        if writer is not None:
            writer.close()
    if is_main and state.history:
        plot_history(state.history, run_dir)
    return state


def _train_and_validate(
    model: paddle.nn.Layer,
    loss_fn: Callable,
    val_loss_fn: Callable,
    optimizer: paddle.optimizer.Optimizer,
    train_loader: paddle.io.DataLoader,
    val_loader: paddle.io.DataLoader,
    *,
    epoch: int,
    selection: Selection,
    threshold: float,
    scheduler: paddle.optimizer.lr.LRScheduler | None,
    scaler: paddle.amp.GradScaler | None,
    progress: bool,
    task: str | None = None,
    referable_grade: int = REFERABLE_GRADE,
    label_names: Sequence[str] = (),
    ordinal_loss: str = "ce",
) -> tuple[dict[str, Any], EvalResult]:
    """One epoch of `fit` (0-based `epoch`): train, validate, and score the selection images
    (with the metrics of the run's `task`; a grading run's outputs read as `ordinal_loss`
    trains them, a regression's at the default cut-points k - 0.5).

    Returns:
        (metrics.csv row, the result that chooses `best`: the validation result, or the
        holdout's when the selection has its own loader).
    """
    sampler = train_loader.batch_sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)  # a resumed run sees the same batch order
    train_stats = train_one_epoch(model, loss_fn, optimizer, train_loader, epoch=epoch + 1,
                                  scheduler=scheduler, scaler=scaler, progress=progress)
    val_result = evaluate(model, val_loader, val_loss_fn, task=task,
                          referable_grade=referable_grade, label_names=label_names,
                          ordinal_loss=ordinal_loss)
    row = epoch_row(epoch + 1, train_stats, val_result, threshold)
    chosen_by = val_result
    if selection.loader is not None:
        chosen_by = evaluate(model, selection.loader, val_loss_fn, task=task,
                             referable_grade=referable_grade, label_names=label_names,
                             ordinal_loss=ordinal_loss)
        row.update(holdout_columns(chosen_by, threshold))
    return row, chosen_by


def _record_epoch(state: RunState, epochs_done: int, row: dict[str, Any], selection: Selection,
                  chosen_by: EvalResult) -> tuple[str, dict[str, Any], pd.DataFrame] | None:
    """Add a finished epoch to `state`; when it beats `best`, the `best` argument of
    `save_epoch` (metric, selection record, the selection images' predictions), else None."""
    state.epoch = epochs_done
    state.history.append(row)
    metric_name = selection_score(row, selection.prefix)[0]
    key = selection_key(row, selection.prefix)
    # written so, a NaN score (or a tie with a NaN loss) is never an improvement
    if not key > (state.best_score, -state.best_loss):
        return None
    state.best_score, state.best_loss = key[0], -key[1]
    frame = (selection_frame(selection.files, chosen_by.labels, chosen_by.logits)
             if selection.files else pd.DataFrame())
    return metric_name, selection.record, frame


def _log_scalars(writer, row: dict[str, Any]) -> None:
    """The newest metrics row to VisualDL (when it is installed)."""
    if writer is None:
        return
    for key, value in row.items():
        if key != "epoch" and value is not None and math.isfinite(value):
            writer.add_scalar(tag=key, value=float(value), step=int(row["epoch"]))


def load_resume_state(
    params_path: str | Path,
    model: paddle.nn.Layer,
    optimizer: paddle.optimizer.Optimizer,
    scheduler: paddle.optimizer.lr.LRScheduler | None = None,
    scaler: paddle.amp.GradScaler | None = None,
) -> RunState:
    """Load `last` weights, optimizer/scheduler/scaler state; return where training stopped.

    The history comes from metrics.csv beside the checkpoint (epochs <= the saved epoch).
    Every file is checked (hashes, safe unpickling, names and shapes) before anything is set.
    """
    params_path = Path(params_path)
    meta = load_meta(params_path)
    weights = load_weights(params_path, meta)
    check_state_matches(unwrap(model), weights, params_path)
    opt_state = load_optimizer_state(params_path, meta)
    model.set_state_dict(weights)
    with warnings.catch_warnings():
        # LinearWarmup's own state_dict holds its inner schedule under a key that the base
        # class reports as unused although LinearWarmup restores it (paddle 3.3)
        warnings.filterwarnings("ignore", message="There are some unused values in state_dict")
        optimizer.set_state_dict(remap_optimizer_state(opt_state["optimizer"],
                                                       opt_state.get("param_names", {}), model))
        if scheduler is not None and opt_state.get("scheduler") is not None:
            scheduler.set_state_dict(opt_state["scheduler"])
    if scaler is not None and opt_state.get("scaler") is not None:
        scaler.load_state_dict(opt_state["scaler"])
    epoch = int(meta.get("epoch", 0))
    history = read_metrics_csv(params_path.parent / "metrics.csv", epoch)
    return RunState(epoch=epoch, best_score=float(opt_state.get("best_score", -math.inf)),
                    best_loss=float(opt_state.get("best_loss", -math.inf)),
                    history=history)
