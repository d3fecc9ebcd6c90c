"""One self-contained `report.html` for a training run and its evaluation.

Everything is embedded (images as base64 `data:` URIs, CSS inline, no scripts), so the file
can be mailed or opened offline. Results come first: the summary line eval prints,
threshold and its source, class counts, the selection warning, metrics with 95 % intervals,
ROC curve and confusion matrix, operating points (Wilson and bootstrap intervals), PR curve,
reliability diagram, every metric; then a gallery of the most confident errors and correct
cases with Grad-CAM overlays; then how the figures were made: training curves, model and
config, the evaluation's provenance, and the data set plots of `data_tools.inspect` when
they are found. Tables wrap rather than scroll sideways, down to phone widths.

Inputs (the layout written by tools/train.py and tools/eval.py):
    RUN_DIR/  config.yaml, metrics.csv, loss_curve.png, metrics_curve.png,
              best.pdparams + best.json (or last.*)
    EVAL_DIR/ metrics.json, predictions.csv (path,label,probability...,prediction,...),
              confusion_matrix.png, roc_curve.png, pr_curve.png, reliability_diagram.png
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import tempfile
from pathlib import Path
from string import Template
from typing import Any

import cv2
import numpy as np
import pandas as pd
import yaml

from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.evaluate import evaluation_summary
from palm.errors import BadConfig, BadData
from palm.io_utils import read_csv, write_text_atomic
from palm.viz.cam import explain_files
from palm.viz.plots import plot_history

# Shown first in the metrics table, in this order; the rest follow as metrics.json has them.
HEADLINE_METRICS = ("roc_auc", "average_precision", "accuracy", "sensitivity", "specificity",
                    "precision", "f1", "threshold", "n", "tp", "fp", "tn", "fn")

# metrics.json keys that say what produced the figures rather than measure anything.
METADATA_KEYS = ("checkpoint", "engine", "compute_precision", "threshold_source",
                 "positive_class", "skipped", "dataset", "provenance", "num_classes", "selection",
                 "selection_detail")

# Plots written by `python -m data_tools.inspect`.
INSPECT_PNGS = ("class_counts.png", "image_sizes.png")

TEMPLATE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1150px; padding: 0 16px 40px;
       color: #222; }
h1 { border-bottom: 3px solid #c0392b; padding-bottom: 6px; }
h2 { margin-top: 36px; border-bottom: 1px solid #ccc; }
/* nothing scrolls sideways: long names, paths and JSON wrap anywhere, wide tables squeeze */
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: 3px 9px; text-align: left; overflow-wrap: anywhere; }
p, code, figcaption { overflow-wrap: anywhere; }
img { max-width: 100%; height: auto; }
.wide table { table-layout: fixed; width: 100%; }
.summary { font-size: 17px; font-weight: 600; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.figs > * { min-width: 0; max-width: 100%; }
.figs figure { margin: 0; }
.figs img { max-width: min(540px, 100%); border: 1px solid #eee; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(260px, 100%), 1fr));
           gap: 12px; }
.case { border: 1px solid #ddd; border-radius: 6px; padding: 6px; font-size: 13px; }
.case img { width: 124px; }
.case.error { border-color: #c0392b; }
.note { color: #777; font-style: italic; }
.caption { color: #555; font-size: 13px; }
.warn { background: #fdecea; border-left: 4px solid #c0392b; padding: 6px 10px; }
.figs h3 { margin-top: 0; }
figcaption { font-size: 13px; color: #555; }
</style>
</head>
<body>
<h1>$title</h1>
<p>Generated $generated from <code>$run_dir</code>$eval_note.</p>
$sections
</body>
</html>
""")


# ---- embedding -------------------------------------------------------------------------

def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}[path.suffix.lower()]
    return data_uri(path.read_bytes(), mime)


def rgb_data_uri(rgb: np.ndarray, quality: int = 88) -> str:
    """A uint8 RGB array as an embedded JPEG (photos; far smaller than PNG)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data_uri(buf.tobytes(), "image/jpeg")


def _img(uri: str, alt: str, caption: str | None = None) -> str:
    tag = f'<img src="{uri}" alt="{html.escape(alt)}">'
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{tag}{cap}</figure>"


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>" if header else ""
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td{_num_class(v)}>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table>{head}{body}</table>"


def _num_class(v: Any) -> str:
    return ' class="num"' if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else ""


def _fmt(v: Any) -> str:
    if v is None:  # unset config values; metrics.json stores undefined metrics (NaN) as null
        return "\u2014"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _note(text: str) -> str:
    """Something the report could not show (a missing file, a redrawn plot)."""
    return f'<p class="note">{html.escape(text)}</p>'


def _caption(text: str) -> str:
    """How the figures above were obtained."""
    return f'<p class="caption">{html.escape(text)}</p>'


# ---- inputs ------------------------------------------------------------------------------

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


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


# ---- sections ------------------------------------------------------------------------------

def summary_section(run_dir: Path, checkpoint: Path | None, meta: dict | None, model) -> str:
    blocks = []
    if meta is not None:
        n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
        rows = [
            ("model", meta["model"]),
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
        rows += [(k, v) for k, v in _flatten(meta.get("metrics") or {}) if k.startswith("val_")
                 and "loss" not in k]
        blocks.append("<div><h3>Model</h3>" + _table(rows) + "</div>")
    else:
        blocks.append(_note(f"no checkpoint (best/last .pdparams + .json) in {run_dir}"))
    config = run_dir / "config.yaml"
    if config.is_file():
        rows = _flatten(_read_yaml(config))
        half = (len(rows) + 1) // 2
        # two short columns instead of one long one
        blocks.append(f'<div><h3>config.yaml</h3><div class="figs">{_table(rows[:half])}'
                      f"{_table(rows[half:])}</div></div>")
    return f'<h2>Model and configuration</h2>\n<div class="figs">{"".join(blocks)}</div>'


def _redraw_curves(metrics_csv: Path) -> list[str]:
    """Training curves from metrics.csv, for runs stopped before their PNGs were drawn."""
    history = read_csv(metrics_csv).to_dict("records")
    with tempfile.TemporaryDirectory() as tmp:
        return [_img(file_data_uri(p), p.stem, f"{p.name} (redrawn from metrics.csv)")
                for p in plot_history(history, tmp)]


def curves_section(run_dir: Path) -> str:
    parts = ["<h2>Training curves</h2>"]
    pngs = [run_dir / n for n in ("loss_curve.png", "metrics_curve.png") if (run_dir / n).is_file()]
    metrics_csv = run_dir / "metrics.csv"
    if pngs:
        figs = [_img(file_data_uri(p), p.stem, p.name) for p in pngs]
    elif metrics_csv.is_file():
        figs = _redraw_curves(metrics_csv)
    else:
        return parts[0] + _note(f"no loss_curve.png, metrics_curve.png or metrics.csv in {run_dir}")
    parts.append(f'<div class="figs">{"".join(figs)}</div>')
    if metrics_csv.is_file():
        df = read_csv(metrics_csv)
        table = df.to_html(index=False, float_format="%.4f", border=0)
        parts.append(f'<h3>metrics.csv</h3><div class="wide">{table}</div>')
    return "\n".join(parts)


def split_metrics(metrics: dict) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(metric rows, metadata rows) of a metrics.json: figures in the first table, what
    produced them (checkpoint, engine, precision, provenance, ...) in the second. `recall`
    is left out where `sensitivity` shows the same figure; the confusion matrix is drawn
    beside the tables, and class names and counts are named above them."""
    skip = {"confusion_matrix", "class_names", "class_counts", *EVIDENCE_KEYS}
    if "sensitivity" in metrics and metrics.get("recall") == metrics["sensitivity"]:
        skip.add("recall")
    rows = [kv for kv in _flatten(metrics) if kv[0].split(".")[0] not in skip]
    is_metric = {k: k not in METADATA_KEYS and not k.startswith(tuple(f"{m}." for m in METADATA_KEYS))
                 for k, _ in rows}
    scores = dict(kv for kv in rows if is_metric[kv[0]])
    first = [k for k in HEADLINE_METRICS if k in scores]
    ordered = [(k, scores[k]) for k in first] + [(k, v) for k, v in scores.items() if k not in first]
    return ordered, [kv for kv in rows if not is_metric[kv[0]]]


def _evaluated_data(metrics: dict) -> str:
    """One line: which data set, how many cases of each class."""
    counts = metrics.get("class_counts") or {}
    order = [c for c in metrics.get("class_names") or [] if c in counts] or list(counts)
    per_class = ", ".join(f"{html.escape(str(name))} {counts[name]}" for name in order)
    where = f" on <b>{html.escape(str(metrics['dataset']))}</b>" if metrics.get("dataset") else ""
    total = metrics.get("n")
    return (f"<p>Evaluated{where}: {total if total is not None else '?'} images"
            f"{f' ({per_class})' if per_class else ''}.</p>")


def read_metrics(eval_dir: Path) -> dict[str, Any] | None:
    """EVAL_DIR/metrics.json, or None when there is none."""
    metrics_json = eval_dir / "metrics.json"
    if not metrics_json.is_file():
        return None
    try:
        return json.loads(metrics_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadData(f"{metrics_json}: not valid JSON ({e})") from None


def _figures(eval_dir: Path, names: tuple[str, ...]) -> list[str]:
    return [_img(file_data_uri(eval_dir / name), name, name) for name in names
            if (eval_dir / name).is_file()]


def evaluation_section(eval_dir: Path, metrics: dict[str, Any] | None) -> str:
    """The results, first in the report: the summary line eval prints, threshold, data,
    selection status, intervals, ROC and confusion matrix, operating points, then the other
    plots and every metric. What produced them is in `provenance_section`, further down."""
    parts = ['<h2 id="results">Evaluation results</h2>']
    if metrics is None:
        parts.append(_note(f"no metrics.json in {eval_dir}"))
        figures = _figures(eval_dir, RESULT_PLOTS + MORE_PLOTS)
        parts.append(f'<div class="figs">{"".join(figures)}</div>')
        return "\n".join(parts)
    parts.append(f'<p class="summary">{html.escape(evaluation_summary(metrics))}</p>')
    threshold = metrics.get("threshold")
    if threshold is not None:
        source = metrics.get("threshold_source")
        parts.append(f"<p>Decision threshold: <b>{_fmt(threshold)}</b>"
                     f"{f' (from {html.escape(str(source))})' if source else ''}; "
                     "a probability at or above it counts as positive.</p>")
    parts.append(_evaluated_data(metrics))
    selection, intervals, points = evidence_parts(metrics)
    parts += selection
    parts.append(f'<div class="figs"><div>{"".join(intervals)}</div>'
                 f'{"".join(_figures(eval_dir, RESULT_PLOTS))}</div>')
    parts += points
    scores, _ = split_metrics(metrics)
    parts.append(f'<div class="figs">{"".join(_figures(eval_dir, MORE_PLOTS))}</div>')
    parts.append("<h3>All metrics</h3>" + _table(scores, ("metric", "value")))
    return "\n".join(parts)


def provenance_section(metrics: dict[str, Any] | None) -> str:
    """What produced the figures: checkpoint, engine, precision, data set, provenance."""
    if metrics is None:
        return ""
    _, about = split_metrics(metrics)
    return ('<h2 id="provenance">About this evaluation</h2>\n'
            + _table(about, ("what produced the figures", "")))


# ROC and confusion matrix lead the results; the others follow the operating points
RESULT_PLOTS = ("roc_curve.png", "confusion_matrix.png")
MORE_PLOTS = ("pr_curve.png", "reliability_diagram.png")

# shown in their own tables (evidence_parts), not in the metrics table
EVIDENCE_KEYS = ("ci95", "ci_method", "operating_points")
CI_ROWS = ("roc_auc", "roc_auc_delong", "average_precision", "accuracy", "sensitivity",
           "specificity", "ppv", "npv", "f1")
SELECTION_TEXT = {
    "optimistic": "so the figures overstate how the model does on new images; report them as "
                  "exploratory, or train with select_on: holdout",
    "independent": "so the figures are fit to report",
    "unknown": "so whether the figures are optimistic cannot be told",
}


def evidence_parts(metrics: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(selection status, metrics with 95 % intervals, operating points) as HTML parts."""
    selection = []
    status = metrics.get("selection")
    if status in SELECTION_TEXT:
        detail = metrics.get("selection_detail") or "no detail recorded"
        text = f"{status}: {detail}, {SELECTION_TEXT[status]}."
        selection.append(f'<p class="{"warn" if status == "optimistic" else "caption"}">'
                         f"Selection: {html.escape(text)}</p>")
    ci = metrics.get("ci95") or {}
    rows = []
    for key in CI_ROWS:
        value = metrics.get("roc_auc" if key == "roc_auc_delong" else
                            "precision" if key == "ppv" else key)
        if key == "npv" and None not in (metrics.get("tn"), metrics.get("fn")):
            total = metrics["tn"] + metrics["fn"]
            value = metrics["tn"] / total if total else None
        if key in ci:
            rows.append(f"<tr><th>{html.escape(key)}</th><td class=\"num\">{_fmt(value)}</td>"
                        f"<td class=\"num\">{_interval(ci[key])}</td></tr>")
    intervals = []
    if rows:
        method = (metrics.get("ci_method") or {}).get("roc_auc", "")
        intervals.append("<h3>95 % confidence intervals</h3><table><tr><th>metric</th>"
                         f"<th>value</th><th>95 % CI</th></tr>{''.join(rows)}</table>"
                         + _caption(f"proportions: Wilson; AUC, AP, F1: {method}; "
                                    "roc_auc_delong: DeLong"))
    return selection, intervals, operating_point_parts(metrics.get("operating_points") or {})


def operating_point_parts(points: dict[str, dict[str, Any]]) -> list[str]:
    """The operating points table: each rate with its Wilson interval at the threshold, and
    the bootstrap interval of the optimised rate (threshold chosen again in every resample),
    which metrics.json holds as `<rate>_bootstrap_ci` (`j_bootstrap_ci` for Youden)."""
    if not points:
        return []
    body = ""
    for name, p in points.items():
        boot = next(((key.removesuffix("_bootstrap_ci"), p[key]) for key in p
                     if key.endswith("_bootstrap_ci")), None)
        boot_text = f"{boot[0]} {_interval(boot[1])}" if boot else "\u2014"
        body += (f"<tr><th>{html.escape(name)}</th><td class=\"num\">{_fmt(p['threshold'])}</td>"
                 f"<td class=\"num\">{_fmt(p['sensitivity'])} {_interval(p['sensitivity_ci'])}</td>"
                 f"<td class=\"num\">{_fmt(p['specificity'])} {_interval(p['specificity_ci'])}</td>"
                 f"<td class=\"num\">{html.escape(boot_text)}</td></tr>")
    return ["<h3>Operating points on these images</h3><table><tr><th>point</th>"
            "<th>threshold</th><th>sensitivity (Wilson 95 % CI)</th>"
            "<th>specificity (Wilson 95 % CI)</th><th>bootstrap 95 % CI, threshold re-chosen</th>"
            f"</tr>{body}</table>"
            + _caption("chosen on the images scored here: exploratory; the bootstrap interval "
                       "chooses the threshold again in every resample, so it includes the "
                       "optimism of choosing it; store a point chosen on the selection images "
                       "with eval's --operating-point")]


def _interval(ci: Any) -> str:
    if not isinstance(ci, list) or len(ci) != 2 or None in ci:
        return "\u2014"
    return f"({ci[0]:.3f}\u2013{ci[1]:.3f})"


def select_cases(predictions: pd.DataFrame, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The k most confident errors and the k most confident correct predictions, taking the
    classes in turn (by true label), so every class shows up when it has cases.

    Confidence is the probability of the predicted class: p or 1 - p from `probability`
    (P(positive), one logit), else the largest `probability_<class>` (multi-class).
    """
    prob_columns = [c for c in predictions.columns if c.startswith("probability_")]
    one_logit = not prob_columns
    needed = {"path", "label", "prediction"} | ({"probability"} if one_logit else set())
    missing = needed - set(predictions.columns)
    if missing:
        raise BadData(f"predictions.csv lacks columns {sorted(missing)}")
    df = predictions.dropna(subset=["label", "prediction", *(["probability"] if one_logit
                                                              else prob_columns)]).copy()
    if one_logit:
        p = df["probability"].astype(float)
        df["confidence"] = np.where(df["prediction"] == 1, p, 1 - p)
    else:
        df["confidence"] = df[prob_columns].astype(float).max(axis=1)
    df = df.sort_values("confidence", ascending=False, kind="stable")
    wrong = df["label"] != df["prediction"]
    # rank within each true class: all classes' first cases come before any class's second
    df["turn"] = df.groupby([df["label"], wrong]).cumcount()
    return _take_turns(df[wrong], k), _take_turns(df[~wrong], k)


def _take_turns(cases: pd.DataFrame, k: int) -> pd.DataFrame:
    return cases.sort_values("turn", kind="stable").head(k).drop(columns="turn")


def _resolve(file: str, bases: list[Path]) -> Path:
    path = Path(file)
    if path.is_absolute():
        return path
    for base in bases:
        if (base / path).is_file():
            return base / path
    return path


def gallery_section(
    eval_dir: Path, model, meta: dict | None, k: int, thumb: int, bases: list[Path]
) -> str:
    parts = ["<h2>Most confident errors and correct cases</h2>"]
    preds_csv = eval_dir / "predictions.csv"
    if not preds_csv.is_file():
        return parts[0] + _note(f"no predictions.csv in {eval_dir}")
    # a class named "NA" stays a name; evaluations before the shared schema said `file`
    predictions = read_csv(preds_csv, keep_default_na=False, na_values=[""]).rename(
        columns={"file": "path"})
    errors, correct = select_cases(predictions, k)
    names = (meta or {}).get("class_names") or []

    def label(i: int) -> str:
        return f"{names[i]} ({i})" if 0 <= i < len(names) else str(i)

    parts.append("<p>Grad-CAM explains the predicted class: warm colours mark the regions "
                 "that pushed the network towards its answer.</p>")
    for title, rows, css in (("Most confident errors", errors, "case error"),
                             ("Most confident correct", correct, "case")):
        parts.append(f"<h3>{title} ({len(rows)})</h3>")
        if rows.empty:
            parts.append(_note("none"))
            continue
        cards = []
        for row in rows.itertuples():
            path = _resolve(str(row.path), bases)
            pred = int(row.prediction)
            images = ""
            if model is not None:
                cam = next(explain_files(model, meta, [path], class_index=pred, max_side=thumb))
                if cam.error:
                    images = _note(cam.error)
                else:
                    images = (f'<img src="{rgb_data_uri(cam.photo)}" alt="photo">'
                              f'<img src="{rgb_data_uri(cam.overlay)}" alt="Grad-CAM">')
            cards.append(
                f'<div class="{css}">{images}<div><b>{html.escape(Path(str(row.path)).name)}</b><br>'
                f"label {html.escape(label(int(row.label)))}, predicted "
                f"{html.escape(label(pred))}<br>"
                f"probability of the predicted class {row.confidence:.3f}</div></div>"
            )
        parts.append(f'<div class="gallery">{"".join(cards)}</div>')
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
    figs = "".join(_img(file_data_uri(p), p.stem, str(p)) for p in found.values())
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
    if eval_dir is not None:
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
