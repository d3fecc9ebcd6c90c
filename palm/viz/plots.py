"""Training curves, confusion matrix, ROC and PR curves, reliability diagrams as PNG files.

Figures are built with `matplotlib.figure.Figure` (the Agg canvas, no pyplot): no display is
needed, no global backend is switched under a user's notebook, and nothing leaks between
calls. Every file is written atomically.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from palm.io_utils import atomic_path
from palm.metrics import as_binary_inputs, as_multiclass_inputs, is_binary_output

LOSS_KEYS = ("train_loss", "val_loss")
METRIC_KEYS = ("val_accuracy", "val_roc_auc", "val_sensitivity", "val_specificity")


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save `fig` as PNG at `path` atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def _column(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([float(row.get(key, math.nan)) for row in history], dtype=float)


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    keys: Iterable[str],
    path: str | Path,
    title: str,
    ylabel: str,
) -> Path:
    """Plot history[key] against history["epoch"] for each key that has a finite value."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = _column(history, "epoch")
    for key in keys:
        values = _column(history, key)
        if np.isfinite(values).any():
            ax.plot(epochs, values, marker="o", label=key)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return save_figure(fig, path)


def plot_history(history: Sequence[Mapping[str, Any]], run_dir: str | Path) -> list[Path]:
    """loss_curve.png (train/val loss) and metrics_curve.png (val accuracy, AUC, sens, spec)."""
    run_dir = Path(run_dir)
    return [
        plot_curves(history, LOSS_KEYS, run_dir / "loss_curve.png", "Loss", "loss"),
        plot_curves(history, METRIC_KEYS, run_dir / "metrics_curve.png", "Validation", "value"),
    ]


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path
) -> Path:
    """Confusion matrix (rows: truth, columns: prediction) with counts and row percentages."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(class_names)} class names")
    k = len(class_names)
    fig = Figure(figsize=(2 + 0.9 * k, 1.6 + 0.8 * k))
    ax = fig.add_subplot()
    row_sums = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, row_sums, out=np.zeros(cm.shape), where=row_sums > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set(xticks=range(k), yticks=range(k), xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title="Confusion matrix")
    return save_figure(fig, path)


def _one_vs_rest(y_true: Any, y_prob: Any, class_names: Sequence[str]):
    """(name, binary labels, scores) per curve: the positive class, or each class vs rest."""
    if is_binary_output(y_prob):
        y, p = as_binary_inputs(y_true, y_prob)
        return [(class_names[-1] if class_names else "positive", y, p)]
    y, p = as_multiclass_inputs(y_true, y_prob)
    return [(name, (y == c).astype(int), p[:, c]) for c, name in enumerate(class_names)]


def plot_roc_curve(
    y_true: Any,
    y_prob: Any,
    path: str | Path,
    class_names: Sequence[str] = (),
    threshold: float | None = None,
) -> Path:
    """ROC curve(s) with AUC in the legend; marks the operating point at `threshold` (binary)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for name, y, p in _one_vs_rest(y_true, y_prob, class_names):
        if len(np.unique(y)) < 2:
            continue  # undefined: nothing to draw for this class
        fpr, tpr, _ = skm.roc_curve(y, p)
        # the metrics table's precision, so the legend never reads 1.000 beside 0.9996
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y, p):.4f})")
        if threshold is not None and is_binary_output(y_prob):
            pred = p >= threshold
            ax.plot((pred & (y == 0)).sum() / (y == 0).sum(), (pred & (y == 1)).sum() / (y == 1).sum(),
                    "o", color="black", label=f"threshold {threshold:.3g}")
    return _save_roc_figure(fig, ax, path, "ROC curve", "chance (AUC 0.5)")


def _save_roc_figure(fig: Figure, ax: Axes, path: str | Path, title: str, chance: str) -> Path:
    """Add the chance diagonal (labelled `chance`), the axes' names, grid and legend; save."""
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label=chance)
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def plot_pr_curve(
    y_true: Any, y_prob: Any, path: str | Path, class_names: Sequence[str] = ()
) -> Path:
    """Precision-recall curve(s) with average precision; the dashed line is the base rate
    (the precision of guessing), labelled in the legend."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for name, y, p in _one_vs_rest(y_true, y_prob, class_names):
        if len(np.unique(y)) < 2:
            continue
        precision, recall, _ = skm.precision_recall_curve(y, p)
        line = ax.step(recall, precision, where="post",
                       label=f"{name} (AP {skm.average_precision_score(y, p):.4f})")[0]
        # a classifier that guesses has precision = the share of positives at every recall
        ax.axhline(y.mean(), ls="--", lw=1, color=line.get_color(),
                   label=f"{name} chance (prevalence {y.mean():.4f})")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall curve",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return save_figure(fig, path)


def plot_reliability_diagram(
    y_true: Any, y_prob: Any, path: str | Path, bins: int = 15,
    uncalibrated: Any | None = None,
) -> Path:
    """Save `reliability_figure` as PNG at `path`."""
    return save_figure(reliability_figure(y_true, y_prob, bins, uncalibrated), path)


def reliability_figure(y_true: Any, y_prob: Any, bins: int = 15,
                       uncalibrated: Any | None = None) -> Figure:
    """Observed frequency against mean predicted probability per equal-width bin
    (scikit-learn's `calibration_curve`), with the histogram of the probabilities below.

    Binary: P(positive) against the share of positives. Multi-class: top-label confidence
    against the share of correct argmax predictions. `uncalibrated` (probabilities before
    temperature scaling, same shape) is drawn too when given. The legend sits right of the
    plot: a curve can pass through any corner of the unit square.
    """
    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfectly calibrated")
    curves = [("before temperature scaling", uncalibrated)] if uncalibrated is not None else []
    curves.append(("model" if uncalibrated is None else "after temperature scaling", y_prob))
    for label, probs in curves:
        outcome, confidence = _calibration_target(y_true, probs)
        if outcome.size == 0:
            continue
        frac, mean = calibration_curve(outcome, confidence, n_bins=bins, strategy="uniform")
        top.plot(mean, frac, marker="o", label=label)
        bottom.hist(confidence, bins=bins, range=(0, 1), alpha=0.6, label=label)
    binary = is_binary_output(y_prob)
    top.set(ylabel="observed share of positives" if binary else "observed accuracy",
            title="Reliability diagram", xlim=(0, 1), ylim=(0, 1.01))
    top.grid(alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize="small")
    bottom.set(xlabel="predicted probability" if binary else "top-label confidence",
               ylabel="images")
    bottom.grid(alpha=0.3)
    return fig


def _calibration_target(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    if is_binary_output(y_prob):
        return as_binary_inputs(y_true, y_prob)
    y, p = as_multiclass_inputs(y_true, y_prob)
    return (p.argmax(axis=1) == y).astype(int), p.max(axis=1)


def plot_roc_overlay(curves: Sequence[tuple[str, Any, Any]], path: str | Path) -> Path:
    """ROC curves of several models on the same images: (name, y_true, P(positive)) each."""
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot()
    for name, y, p in curves:
        y, p = as_binary_inputs(y, p)
        fpr, tpr, _ = skm.roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y, p):.3f})")
    return _save_roc_figure(fig, ax, path, "ROC curves on the same images", "chance")


def plot_history_overlay(histories: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                         path: str | Path) -> Path:
    """Training curves of several runs on shared axes, one colour per run: loss (training
    dashed, validation solid) and validation AUC by epoch, e.g. with and without
    pretrained weights."""
    fig = Figure(figsize=(11, 4))
    loss_ax, auc_ax = fig.subplots(1, 2)
    for index, (name, history) in enumerate(histories):
        epochs, colour = _column(history, "epoch"), f"C{index}"
        loss_ax.plot(epochs, _column(history, "train_loss"), "--", color=colour,
                     label=f"{name} training")
        loss_ax.plot(epochs, _column(history, "val_loss"), "-o", color=colour,
                     label=f"{name} validation")
        auc_ax.plot(epochs, _column(history, "val_roc_auc"), "-o", color=colour, label=name)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    auc_ax.set(xlabel="epoch", ylabel="AUC", title="Validation AUC")
    for ax in (loss_ax, auc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_multilabel_roc(y_true: Any, y_prob: Any, label_names: Sequence[str],
                        path: str | Path) -> Path:
    """One ROC panel per label of a multi-label model (a grid), AUC in each title; a label
    without both classes in the data says so instead of a curve."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    columns = min(4, len(label_names))
    rows = math.ceil(len(label_names) / columns)
    fig = Figure(figsize=(3.2 * columns, 3.2 * rows))
    for j, name in enumerate(label_names):
        ax = fig.add_subplot(rows, columns, j + 1)
        y, p = y_true[:, j], y_prob[:, j]
        if len(np.unique(y)) < 2:
            ax.text(0.5, 0.5, "AUC undefined:\nonly one class", ha="center", va="center")
            ax.set_title(str(name))
        else:
            fpr, tpr, _ = skm.roc_curve(y, p)
            ax.plot(fpr, tpr)
            ax.set_title(f"{name} (AUC {skm.roc_auc_score(y, p):.3f})")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        ax.grid(alpha=0.3)
    fig.supxlabel("1 - specificity")
    fig.supylabel("sensitivity")
    return save_figure(fig, path)
