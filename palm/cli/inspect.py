"""Inspect a data set: class counts, image sizes, corrupt or unusable files.

Writes to --out: `class_counts.png` (bar chart per split), `image_sizes.png` (width x height
scatter, marker area ~ number of images) and `inspect.json` (all figures and every problem).

Example:
    python -m data_tools.inspect --data-root demo_data/palm --out runs/inspect
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from palm.cli.common import add_data_source, add_verbosity_options, data_source, run_tool
from palm.data import ImageSet, PalmTrainSet, build_transform, open_image_set
from palm.data.datasets import PALM_TRAIN_DIR
from palm.io_utils import atomic_path, write_json_atomic


def load_splits(source: str | os.PathLike) -> dict[str, ImageSet]:
    """Every split of `source` (PALM root: train and val; otherwise one "all" split).

    Sets are opened with skip_bad=True and a tiny decode size, so every file is decoded
    (at 1/8 scale where possible) and problems land in `.skipped` instead of raising.
    """
    kw = {"transform": build_transform(32, train=False), "skip_bad": True}
    first = open_image_set(source, split="train", **kw)
    if isinstance(first, PalmTrainSet) and Path(source).name.lower() != PALM_TRAIN_DIR.lower():
        return {"train": first, "val": open_image_set(source, split="val", **kw)}
    return {"all": first}


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.size


def summarize(splits: dict[str, ImageSet]) -> dict:
    """Counts per split and class, size histogram per split, and all problems."""
    report: dict = {"splits": {}}
    for name, ds in splits.items():
        counts = np.bincount(ds.labels, minlength=len(ds.classes))
        sizes = Counter(image_size(p) for p, _ in ds.samples)
        report["splits"][name] = {
            "classes": ds.classes,
            "counts": dict(zip(ds.classes, counts.tolist())),
            "images": len(ds),
            "sizes": [{"width": w, "height": h, "count": n} for (w, h), n in sorted(sizes.items())],
            "problems": [{"where": w, "problem": p} for w, p in ds.skipped],
        }
    return report


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


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_source(p)
    p.add_argument("--out", default="runs/inspect", help="folder for the plots and inspect.json")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    data = data_source(args)
    report = summarize(load_splits(data))
    report["source"] = str(data)
    plot_class_counts(report, out / "class_counts.png")
    plot_image_sizes(report, out / "image_sizes.png")
    write_json_atomic(out / "inspect.json", report)
    for name, split in report["splits"].items():
        counts = ", ".join(f"{c} {n}" for c, n in split["counts"].items())
        sizes = ", ".join(f"{s['width']}x{s['height']} ({s['count']})" for s in split["sizes"])
        print(f"{name}: {split['images']} images: {counts}; sizes: {sizes}")
        for problem in split["problems"]:
            print(f"  BAD {problem['where']}: {problem['problem']}")
    print(f"wrote {out / 'class_counts.png'}, {out / 'image_sizes.png'}, {out / 'inspect.json'}")
    return report


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
