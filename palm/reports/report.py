"""One self-contained `report.html` for a training run and its evaluation.

Everything is embedded (images as base64 `data:` URIs, CSS inline, no scripts), so the file
can be mailed or opened offline. Results come first: the summary line eval prints,
threshold and its source, class counts, the selection warning, metrics with 95 % intervals,
ROC curve and confusion matrix, operating points (Wilson and bootstrap intervals), PR curve,
reliability diagram, every metric; then a gallery of the most confident errors and correct
cases with Grad-CAM overlays; then how the figures were made: training curves, model and
config, the evaluation's provenance, and the data set plots of `data_tools.inspect` when
they are found. Tables wrap rather than scroll sideways, down to phone widths.

Inputs (the layout written by training and evaluation):
    RUN_DIR/  config.yaml, metrics.csv, loss_curve.png, metrics_curve.png,
              best.pdparams + best.json (or last.*)
    EVAL_DIR/ metrics.json, predictions.csv (path,label,probability...,prediction,...),
              confusion_matrix.png, roc_curve.png, pr_curve.png, reliability_diagram.png
"""
from __future__ import annotations

import datetime as dt
import html
import tempfile
from pathlib import Path

import numpy as np
import yaml

from palm.engine.checkpoint import load_checkpoint_model
from palm.errors import BadConfig, BadData
from palm.io_utils import read_csv, write_text_atomic
from palm.reports.gallery import gallery_section
from palm.reports.html import TEMPLATE, figure, file_data_uri, flatten, note, table
from palm.reports.results import (evaluation_section, multilabel_section, provenance_section,
                                  read_metrics)
from palm.viz.plots import plot_history

# Plots written by `python -m data_tools.inspect`.
INSPECT_PNGS = ("class_counts.png", "image_sizes.png")


def find_checkpoint(run_dir: Path) -> Path | None:
    """best.pdparams (by validation AUC) when present, else last.pdparams."""
    for name in ("best.pdparams", "last.pdparams"):
        if (run_dir / name).is_file() and (run_dir / name).with_suffix(".json").is_file():
            return run_dir / name
    return None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise BadConfig(f"{path}: not valid YAML ({e})") from None
    return data if isinstance(data, dict) else {}


def summary_section(run_dir: Path, checkpoint: Path | None, meta: dict | None, model) -> str:
    blocks = []
    if meta is not None:
        n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
        rows = [
            ("model", meta["model"]),
            ("task", meta.get("task") or ("binary" if meta["num_classes"] == 1 else "multiclass")),
            ("parameters", f"{n_params:,}"),
            ("classes", ", ".join(meta.get("class_names") or []) or meta["num_classes"]),
            ("positive class", meta.get("positive_class") or "n/a"),
            ("image size", meta["image_size"]),
            ("normalization", meta.get("normalize", "")),
            ("fundus crop", meta.get("fundus_crop", False)),
            ("checkpoint", checkpoint.name),
            ("checkpoint epoch", meta.get("epoch", "")),
            ("decision threshold", meta.get("threshold", "")),
        ]
        # validation figures of that epoch; loss, lr and timings are in metrics.csv below
        rows += [(k, v) for k, v in flatten(meta.get("metrics") or {}) if k.startswith("val_")
                 and "loss" not in k]
        blocks.append("<div><h3>Model</h3>" + table(rows) + "</div>")
    else:
        blocks.append(note(f"no checkpoint (best/last .pdparams + .json) in {run_dir}"))
    config = run_dir / "config.yaml"
    if config.is_file():
        rows = flatten(_read_yaml(config))
        half = (len(rows) + 1) // 2
        # two short columns instead of one long one
        blocks.append(f'<div><h3>config.yaml</h3><div class="figs">{table(rows[:half])}'
                      f"{table(rows[half:])}</div></div>")
    return f'<h2>Model and configuration</h2>\n<div class="figs">{"".join(blocks)}</div>'


def _redraw_curves(metrics_csv: Path) -> list[str]:
    """Training curves from metrics.csv, for runs stopped before their PNGs were drawn."""
    history = read_csv(metrics_csv).to_dict("records")
    with tempfile.TemporaryDirectory() as tmp:
        return [figure(file_data_uri(p), p.stem, f"{p.name} (redrawn from metrics.csv)")
                for p in plot_history(history, tmp)]


def curves_section(run_dir: Path) -> str:
    parts = ["<h2>Training curves</h2>"]
    pngs = [run_dir / n for n in ("loss_curve.png", "metrics_curve.png") if (run_dir / n).is_file()]
    metrics_csv = run_dir / "metrics.csv"
    if pngs:
        figs = [figure(file_data_uri(p), p.stem, p.name) for p in pngs]
    elif metrics_csv.is_file():
        figs = _redraw_curves(metrics_csv)
    else:
        return parts[0] + note(f"no loss_curve.png, metrics_curve.png or metrics.csv in {run_dir}")
    parts.append(f'<div class="figs">{"".join(figs)}</div>')
    if metrics_csv.is_file():
        df = read_csv(metrics_csv)
        table = df.to_html(index=False, float_format="%.4f", border=0)
        parts.append(f'<h3>metrics.csv</h3><div class="wide">{table}</div>')
    return "\n".join(parts)


def data_dirs(config: dict) -> list[Path]:
    """Data folders named in a run's config (data root, train/val folders and CSV folders)."""
    dirs = []
    for key in ("data_root", "train_dir", "val_dir", "train_csv", "val_csv"):
        value = config.get(key)
        if value:
            path = Path(value)
            dirs.append(path.parent if path.suffix else path)
    return list(dict.fromkeys(dirs))


def inspect_section(folders: list[Path]) -> str:
    """The plots `data_tools.inspect` wrote, searched in `folders` and their inspect/ subfolder."""
    found: dict[str, Path] = {}
    for folder in folders:
        for where in (folder, folder / "inspect"):
            for name in INSPECT_PNGS:
                if name not in found and (where / name).is_file():
                    found[name] = where / name
    if not found:
        return ""
    figs = "".join(figure(file_data_uri(p), p.stem, str(p)) for p in found.values())
    return f'<h2>Data set</h2>\n<div class="figs">{figs}</div>'


RUN_OUTPUTS = ("config.yaml", "metrics.csv", "best.pdparams", "last.pdparams")
EVAL_OUTPUTS = ("metrics.json", "predictions.csv")


def check_report_inputs(run_dir: Path, eval_dir: Path | None) -> None:
    """Refuse folders without anything to report (a typo, an empty folder), which would give
    an empty page.

    Raises:
        BadData: naming the folder and the files it lacks.
    """
    for folder, wanted, what in ((run_dir, RUN_OUTPUTS, "a training run"),
                                 (eval_dir, EVAL_OUTPUTS, "an evaluation")):
        if folder is not None and not any((folder / name).is_file() for name in wanted):
            raise BadData(f"{folder}: not {what} folder (none of {', '.join(wanted)}); "
                          "nothing to report")


def build_report(
    run_dir: str | Path,
    eval_dir: str | Path | None = None,
    output: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    gallery_size: int = 6,
    thumb_size: int = 256,
) -> Path:
    """Write the HTML report of a run (and its evaluation); returns the report's path.

    Args:
        run_dir: the training run folder.
        eval_dir: a tools/eval.py output folder; without it the report has no metrics table,
            evaluation plots or gallery.
        output: report path; default `report.html` in eval_dir, else in run_dir.
        checkpoint: the checkpoint to describe and explain; default best, else last, in run_dir.
        gallery_size: cases shown per gallery row (errors, correct).
        thumb_size: longer side of the gallery thumbnails, px.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder not found")
    eval_dir = Path(eval_dir) if eval_dir is not None else None
    if eval_dir is not None and not eval_dir.is_dir():
        raise FileNotFoundError(f"{eval_dir}: evaluation folder not found")
    output = Path(output) if output else (eval_dir or run_dir) / "report.html"
    check_report_inputs(run_dir, eval_dir)

    checkpoint = Path(checkpoint) if checkpoint else find_checkpoint(run_dir)
    model, meta = load_checkpoint_model(checkpoint) if checkpoint else (None, None)
    config = _read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
    # data_tools.inspect writes to runs/inspect by default, beside the run folders
    folders = [run_dir, run_dir.parent, *data_dirs(config)]

    # results first; how they were made (config, model, provenance) after them
    sections = []
    metrics = read_metrics(eval_dir) if eval_dir is not None else None
    if metrics is not None and "per_label" in metrics:  # multi-label: no one-label gallery
        sections.append(multilabel_section(eval_dir, metrics))
    elif eval_dir is not None:
        sections.append(evaluation_section(eval_dir, metrics))
        sections.append(gallery_section(eval_dir, model, meta, gallery_size, thumb_size,
                                        [eval_dir, run_dir, Path.cwd(), *data_dirs(config)]))
    sections += [curves_section(run_dir), summary_section(run_dir, checkpoint, meta, model),
                 provenance_section(metrics), inspect_section(folders)]

    title = f"palm report: {meta['model'] if meta else run_dir.name}"
    page = TEMPLATE.substitute(
        title=html.escape(title),
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        run_dir=html.escape(str(run_dir)),
        eval_note=f" and <code>{html.escape(str(eval_dir))}</code>" if eval_dir else "",
        sections="\n".join(s for s in sections if s),
    )
    write_text_atomic(output, page)
    return output
