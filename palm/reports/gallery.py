"""The report's gallery: the most confident errors and correct cases, each with its Grad-CAM."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from palm import predictions as P
from palm.errors import BadData
from palm.reports.html import note, rgb_data_uri
from palm.viz.cam import explain_files

def select_cases(predictions: pd.DataFrame, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The k most confident errors and the k most confident correct predictions, taking the
    classes in turn (by true label), so every class shows up when it has cases.

    Confidence is the probability of the predicted class: p or 1 - p from `probability`
    (P(positive), one logit), else the largest `probability_<class>` (multi-class).
    """
    prob_columns = P.class_probability_columns(predictions.columns) or [P.PROBABILITY]
    missing = {P.PATH, P.LABEL, P.PREDICTION, *prob_columns} - set(predictions.columns)
    if missing:
        raise BadData(f"predictions.csv lacks columns {sorted(missing)}")
    df = predictions.dropna(subset=[P.LABEL, P.PREDICTION, *prob_columns]).copy()
    y_prob = P.probabilities_of(df)
    if y_prob.ndim == 1:  # P(positive): the predicted class's is p or 1 - p
        df["confidence"] = np.where(df[P.PREDICTION] == 1, y_prob, 1 - y_prob)
    else:
        df["confidence"] = y_prob.max(axis=1)
    df = df.sort_values("confidence", ascending=False, kind="stable")
    wrong = df[P.LABEL] != df[P.PREDICTION]
    # rank within each true class: all classes' first cases come before any class's second
    df["turn"] = df.groupby([df[P.LABEL], wrong]).cumcount()
    return _take_turns(df[wrong], k), _take_turns(df[~wrong], k)


def _take_turns(cases: pd.DataFrame, k: int) -> pd.DataFrame:
    return cases.sort_values("turn", kind="stable").head(k).drop(columns="turn")


def _resolve(file: str, bases: list[Path]) -> Path:
    """The first of BASE/file that exists (file as written when none does)."""
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
    """Both galleries of `k` cases from EVAL_DIR/predictions.csv, Grad-CAM of `model` (none
    without a checkpoint) at `thumb` px; image paths are tried under each of `bases`."""
    parts = ["<h2>Most confident errors and correct cases</h2>"]
    preds_csv = eval_dir / "predictions.csv"
    if not preds_csv.is_file():
        return parts[0] + note(f"no predictions.csv in {eval_dir}")
    predictions = P.read_predictions_csv(preds_csv, labelled=True)
    if not any(P.is_probability_column(c) for c in predictions.columns):
        return parts[0] + note("a grade regression gives no probabilities to rank its cases by")
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
            parts.append(note("none"))
            continue
        cards = []
        for row in rows.itertuples():
            path = _resolve(str(row.path), bases)
            pred = int(row.prediction)
            images = ""
            if model is not None:
                cam = next(explain_files(model, meta, [path], class_index=pred, max_side=thumb))
                if cam.error:
                    images = note(cam.error)
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
