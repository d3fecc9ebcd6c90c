"""Plots of experiments: cross-validation ROC curves and sweep factors (as palm.viz.plots:
Agg `Figure`s, no pyplot, written atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import auc, roc_curve

from palm.viz.plots import save_figure

ROC_GRID = np.linspace(0.0, 1.0, 101)


def plot_cv_roc(folds: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | Path,
                title: str = "Cross-validation ROC") -> Path:
    """One thin ROC curve per fold and their mean (TPR averaged on a common FPR grid) ± sd.

    Args:
        folds: (name, labels 0/1, positive-class probabilities) per fold; folds holding one
            class only have no ROC curve and are left out.
    """
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    tprs, aucs = [], []
    for name, labels, probs in folds:
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, probs)
        aucs.append(auc(fpr, tpr))
        ax.plot(fpr, tpr, lw=1, alpha=0.45, label=f"{name} (AUC {aucs[-1]:.3f})")
        grid_tpr = np.interp(ROC_GRID, fpr, tpr)
        grid_tpr[0] = 0.0
        tprs.append(grid_tpr)
    if tprs:
        mean_tpr, sd_tpr = np.mean(tprs, axis=0), np.std(tprs, axis=0)
        mean_tpr[-1] = 1.0
        sd_auc = np.std(aucs, ddof=1) if len(aucs) > 1 else 0.0  # as the printed table
        ax.plot(ROC_GRID, mean_tpr, color="navy", lw=2.2,
                label=f"mean (AUC {np.mean(aucs):.3f} ± {sd_auc:.3f})")
        ax.fill_between(ROC_GRID, np.clip(mean_tpr - sd_tpr, 0, 1),
                        np.clip(mean_tpr + sd_tpr, 0, 1), color="navy", alpha=0.12,
                        label="± 1 sd")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def plot_factor(values: Sequence[Any], means: Sequence[float], sds: Sequence[float],
                factor: str, metric: str, path: str | Path, log_x: bool = False,
                title: str | None = None) -> Path:
    """`metric` (mean with ± sd error bars) against the values of one factor.

    Numbers are placed on a numeric axis (logarithmic with `log_x`), anything else (e.g.
    activation names) at equal spacing in the given order.
    """
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    x = np.asarray(values, dtype=float) if numeric else np.arange(len(values))
    sds = np.nan_to_num(np.asarray(sds, dtype=float))  # one seed: no spread to draw
    ax.errorbar(x, means, yerr=sds, marker="o", capsize=4, lw=1.5)
    if numeric and log_x:
        ax.set_xscale("log", base=2 if factor.endswith("batch_size") else 10)
    if not numeric:
        ax.set_xticks(x, [str(v) for v in values])
        ax.set_xlim(-0.5, len(values) - 0.5)
    ax.set(xlabel=factor, ylabel=metric, title=title or f"{metric} vs {factor}")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
