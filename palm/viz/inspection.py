"""Plots of a data set's inspection (palm.data.inspection), and the inspection written as
files: class_counts.png (bar chart per split), image_sizes.png (width x height scatter,
marker area ~ number of images) and inspect.json (all figures and every problem).

Example:
    report = inspect_data_set("demo_data/palm", "runs/inspect")
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from palm.data.inspection import load_splits, summarize
from palm.io_utils import atomic_path, write_json_atomic

__all__ = ["inspect_data_set", "plot_class_counts", "plot_image_sizes"]


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def plot_class_counts(report: dict, path: Path) -> None:
    splits = report["splits"]
    classes = next(iter(splits.values()))["classes"]
    fig = Figure(
        figsize=(max(4.5, 1.2 * len(classes) * len(splits) + 2), 3.6), layout="constrained"
    )
    ax = fig.subplots()
    width = 0.8 / len(splits)
    x = np.arange(len(classes))
    for i, (name, split) in enumerate(splits.items()):
        values = [split["counts"].get(c, 0) for c in classes]
        bars = ax.bar(
            x + (i - (len(splits) - 1) / 2) * width,
            values,
            width,
            label=f"{name} ({split['images']})",
        )
        ax.bar_label(bars, padding=2)
    ax.set_xticks(x, classes)
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    ax.margins(y=0.15)
    ax.legend(frameon=False)
    _save(fig, path)


def plot_image_sizes(report: dict, path: Path) -> None:
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    most = max(s["count"] for split in report["splits"].values() for s in split["sizes"])
    for i, (name, split) in enumerate(report["splits"].items()):
        w = [s["width"] for s in split["sizes"]]
        h = [s["height"] for s in split["sizes"]]
        n = np.array([s["count"] for s in split["sizes"]])
        points = ax.scatter(w, h, s=20 + 500 * np.sqrt(n / most), alpha=0.5, label=name)
        for wi, hi, ni in zip(w, h, n):
            # one text line per split beside the point, so splits sharing a size stay legible
            ax.annotate(
                f"{name}: {ni}",
                (wi, hi),
                xytext=(14, 6 - 12 * i),
                textcoords="offset points",
                fontsize=8,
                color=points.get_facecolor()[0][:3],
                va="center",
            )
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Image sizes (marker area ~ number of images)")
    ax.margins(0.25)
    ax.legend(frameon=False, markerscale=0.4)
    _save(fig, path)


def inspect_data_set(source: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Inspect every split of `source` (PALM root: train and val; else one "all" split) and
    write OUT/class_counts.png, OUT/image_sizes.png and OUT/inspect.json; return the report."""
    out = Path(out)
    report = summarize(load_splits(source))
    report["source"] = str(source)
    plot_class_counts(report, out / "class_counts.png")
    plot_image_sizes(report, out / "image_sizes.png")
    write_json_atomic(out / "inspect.json", report)
    return report
