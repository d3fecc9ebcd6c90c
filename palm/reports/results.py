"""The results part of the report: the summary line, threshold, data, selection status,
metrics with 95 % intervals, operating points, plots of the evaluation folder, and what
produced the figures (metrics.json's provenance)."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from palm.engine.eval_summary import evaluation_summary
from palm.errors import BadData
from palm.reports.html import (caption, figure, file_data_uri, flatten, fmt, interval_text, note,
                               table)

# Shown first in the metrics table, in this order; the rest follow as metrics.json has them.
HEADLINE_METRICS = ("roc_auc", "average_precision", "accuracy", "sensitivity", "specificity",
                    "precision", "f1", "threshold", "n", "tp", "fp", "tn", "fn")

# metrics.json keys that say what produced the figures rather than measure anything.
METADATA_KEYS = ("checkpoint", "engine", "compute_precision", "threshold_source",
                 "positive_class", "skipped", "dataset", "provenance", "num_classes", "selection",
                 "selection_detail")


def split_metrics(metrics: dict) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """(metric rows, metadata rows) of a metrics.json: figures in the first table, what
    produced them (checkpoint, engine, precision, provenance, ...) in the second. `recall`
    is left out where `sensitivity` shows the same figure; the confusion matrix is drawn
    beside the tables, and class names and counts are named above them."""
    skip = {"confusion_matrix", "class_names", "class_counts", *EVIDENCE_KEYS}
    if "sensitivity" in metrics and metrics.get("recall") == metrics["sensitivity"]:
        skip.add("recall")
    rows = [kv for kv in flatten(metrics) if kv[0].split(".")[0] not in skip]
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
    return [figure(file_data_uri(eval_dir / name), name, name) for name in names
            if (eval_dir / name).is_file()]


def evaluation_section(eval_dir: Path, metrics: dict[str, Any] | None) -> str:
    """The results, first in the report: the summary line eval prints, threshold, data,
    selection status, intervals, ROC and confusion matrix, operating points, then the other
    plots and every metric. What produced them is in `provenance_section`, further down."""
    parts = ['<h2 id="results">Evaluation results</h2>']
    if metrics is None:
        parts.append(note(f"no metrics.json in {eval_dir}"))
        figures = _figures(eval_dir, RESULT_PLOTS + MORE_PLOTS)
        parts.append(f'<div class="figs">{"".join(figures)}</div>')
        return "\n".join(parts)
    parts.append(f'<p class="summary">{html.escape(evaluation_summary(metrics))}</p>')
    threshold = metrics.get("threshold")
    if threshold is not None:
        source = metrics.get("threshold_source")
        parts.append(f"<p>Decision threshold: <b>{fmt(threshold)}</b>"
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
    parts.append("<h3>All metrics</h3>" + table(scores, ("metric", "value")))
    return "\n".join(parts)


PER_LABEL_COLUMNS = ("positives", "roc_auc", "average_precision", "sensitivity", "specificity",
                     "f1", "threshold")


def multilabel_section(eval_dir: Path, metrics: dict[str, Any]) -> str:
    """The results of a multi-label model: the summary line, a row per label (an undefined
    AUC says why), the pooled figures and the per-label ROC grid."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("label", *PER_LABEL_COLUMNS, "note"))
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th>"
        + "".join(f"<td class=\"num\">{html.escape(fmt(row.get(c)))}</td>" for c in PER_LABEL_COLUMNS)
        + f"<td>{html.escape(row.get('undefined') or '')}</td></tr>"
        for name, row in metrics["per_label"].items())
    pooled = [(key, metrics.get(key)) for key in ("macro_roc_auc", "micro_roc_auc", "map",
                                                   "macro_f1", "accuracy")]
    pooled += [(f"odir_{key}", value) for key, value in (metrics.get("odir") or {}).items()]
    return "\n".join([
        '<h2 id="results">Evaluation results</h2>',
        f'<p class="summary">{html.escape(evaluation_summary(metrics))}</p>',
        f"<table><tr>{head}</tr>{rows}</table>",
        table(pooled, ("pooled over labels", "value")),
        f'<div class="figs">{"".join(_figures(eval_dir, ("roc_curve.png",)))}</div>'])


def provenance_section(metrics: dict[str, Any] | None) -> str:
    """What produced the figures: checkpoint, engine, precision, data set, provenance."""
    if metrics is None:
        return ""
    _, about = split_metrics(metrics)
    return ('<h2 id="provenance">About this evaluation</h2>\n'
            + table(about, ("what produced the figures", "")))


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
            rows.append(f"<tr><th>{html.escape(key)}</th><td class=\"num\">{fmt(value)}</td>"
                        f"<td class=\"num\">{interval_text(ci[key])}</td></tr>")
    intervals = []
    if rows:
        method = (metrics.get("ci_method") or {}).get("roc_auc", "")
        intervals.append("<h3>95 % confidence intervals</h3><table><tr><th>metric</th>"
                         f"<th>value</th><th>95 % CI</th></tr>{''.join(rows)}</table>"
                         + caption(f"proportions: Wilson; AUC, AP, F1: {method}; "
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
        boot_text = f"{boot[0]} {interval_text(boot[1])}" if boot else "\u2014"
        body += (f"<tr><th>{html.escape(name)}</th><td class=\"num\">{fmt(p['threshold'])}</td>"
                 f"<td class=\"num\">{fmt(p['sensitivity'])} {interval_text(p['sensitivity_ci'])}</td>"
                 f"<td class=\"num\">{fmt(p['specificity'])} {interval_text(p['specificity_ci'])}</td>"
                 f"<td class=\"num\">{html.escape(boot_text)}</td></tr>")
    return ["<h3>Operating points on these images</h3><table><tr><th>point</th>"
            "<th>threshold</th><th>sensitivity (Wilson 95 % CI)</th>"
            "<th>specificity (Wilson 95 % CI)</th><th>bootstrap 95 % CI, threshold re-chosen</th>"
            f"</tr>{body}</table>"
            + caption("chosen on the images scored here: exploratory; the bootstrap interval "
                       "chooses the threshold again in every resample, so it includes the "
                       "optimism of choosing it; store a point chosen on the selection images "
                       "with eval's --operating-point")]
