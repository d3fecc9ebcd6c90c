"""The one-line summaries of an evaluation that eval prints and the report leads with, and
the confusion matrix as text."""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd


def confusion_text(cm: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """The confusion matrix as an aligned text table (rows: truth, columns: prediction)."""
    frame = pd.DataFrame(cm, index=[f"true {n}" for n in class_names],
                         columns=[f"pred {n}" for n in class_names])
    return frame.to_string()


def with_ci(metrics: dict[str, Any], key: str, digits: int = 3) -> str:
    """`metrics[key]` with its 95 % interval from `metrics["ci95"]` when there is one."""
    value = metrics.get(key)
    if value is None:
        return "n/a"
    ci = (metrics.get("ci95") or {}).get(key)
    if ci and None not in ci:
        return f"{value:.{digits}f} ({ci[0]:.{digits}f}-{ci[1]:.{digits}f})"
    return f"{value:.{digits}f}"


def multilabel_summary(metrics: dict[str, Any]) -> str:
    """One line of a multi-label evaluation: macro AUC, micro AUC, mAP and each label's AUC."""
    ci = (metrics.get("ci95") or {}).get("macro_roc_auc")
    macro = _fmt(metrics["macro_roc_auc"]) + (f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci and None not in ci else "")
    per_label = ", ".join(f"{name} {_fmt(row['roc_auc'])}" + (f" ({row['undefined']})" if row.get("undefined") else "")
                          for name, row in metrics["per_label"].items())
    return (f"{metrics['n']} images, {metrics['num_labels']} labels: macro AUC {macro}, micro AUC "
            f"{_fmt(metrics['micro_roc_auc'])}, mAP {_fmt(metrics['map'])}; AUC per label: {per_label}")


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def evaluation_summary(metrics: dict[str, Any]) -> str:
    """One line: n, accuracy, AUC (with 95 % CIs when computed), sensitivity/specificity
    (binary) or macro F1, threshold and where it came from, selection status."""
    if "per_label" in metrics:
        return multilabel_summary(metrics) + (f", selection {metrics['selection']}"
                                              if "selection" in metrics else "")
    parts = [f"{metrics.get('n', '?')} images", f"accuracy {with_ci(metrics, 'accuracy')}"]
    if "roc_auc" in metrics:  # a grade regression has no probabilities to score
        parts.append(f"AUC {with_ci(metrics, 'roc_auc')}")
    if "sensitivity" in metrics:
        parts += [f"sensitivity {with_ci(metrics, 'sensitivity')}",
                  f"specificity {with_ci(metrics, 'specificity')}",
                  f"threshold {metrics['threshold']:.4f} "
                  f"({metrics.get('threshold_source', 'source not recorded')})"]
    elif "f1" in metrics:
        parts.append(f"macro F1 {with_ci(metrics, 'f1')}")
    if "qwk" in metrics:
        referable = metrics["referable"]
        referable_ci = {"roc_auc": (metrics.get("ci95") or {}).get("referable_roc_auc")}
        parts += [f"quadratic kappa {with_ci(metrics, 'qwk')}", f"MAE {metrics['mae']:.3f}",
                  f"referable (grade >= {metrics['referable_grade']}) AUC "
                  f"{with_ci({**referable, 'ci95': referable_ci}, 'roc_auc')}, sensitivity "
                  f"{with_ci(referable, 'sensitivity')}, specificity "
                  f"{with_ci(referable, 'specificity')}"]
    if "selection" in metrics:
        parts.append(f"selection {metrics['selection']}")
    return ", ".join(parts)
