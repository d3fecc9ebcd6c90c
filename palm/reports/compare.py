"""Compare models scored on the same images: a leaderboard with 95 % intervals and, for
every pair, the AUC difference (DeLong's paired test, paired bootstrap interval) and
McNemar's test on the decisions. Graders (ordinal) and multi-label models get their task's
figures instead (palm.reports.compare_tasks): quadratic kappa, MAE and the referable AUC;
macro AUC, mAP and DeLong per label. Models of different tasks are refused.

Inputs are evaluation outputs: a predictions.csv, its eval folder, or a run folder holding
eval/predictions.csv (taken before the folder's own predictions.csv, which after the
Quickstart is predict's, without labels); palm.predictions reads them. Rows are matched by
the `path` column; every model must have scored exactly the same images with the same labels.

When the inputs are run folders (or their eval folders), their metrics.csv training curves
are overlaid too (curves_overlay.png): the course's "with / without pretraining" figure.

Example:
    board, pairs = compare_models(["runs/lenet", "runs/resnet18"], "comparison")
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from palm import metrics as M
from palm import predictions as P
from palm.errors import BadData
from palm.io_utils import write_csv_atomic, write_text_atomic
from palm.reports import compare_tasks as T
from palm.viz.plots import plot_history_overlay, plot_roc_overlay

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.csv"
HISTORY = "metrics.csv"
CURVES = "curves_overlay.png"
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_roc_auc")
# a run's metrics.csv holds a row per epoch: a few kB; far more is not one of palm's
MAX_HISTORY_BYTES = 1_000_000
MAX_PLOTTED = 1e12


@dataclass
class ModelPredictions:
    """One model's scores on the shared images, sorted by file."""

    name: str
    source: Path
    files: np.ndarray
    labels: np.ndarray
    y_prob: np.ndarray  # P(positive class)
    y_pred: np.ndarray  # the `prediction` column: 0 or 1


def _is_multilabel(csv_path: Path) -> bool:
    try:
        columns = pd.read_csv(csv_path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False
    return any(str(c).startswith(P.PREDICTION_PREFIX) for c in columns)


def _has_labels(csv_path: Path) -> bool:
    try:
        return P.LABEL in pd.read_csv(csv_path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False


def predictions_file(source: str | Path) -> Path:
    """The predictions.csv that `source` (a CSV, an eval folder or a run folder) means.

    In a folder the evaluation's labelled predictions (eval/predictions.csv) come first: a
    run folder also holds predict's unlabelled predictions.csv after the Quickstart.
    A CSV without labels is taken only when named as a file.
    """
    source = Path(source)
    if source.is_file():
        return source
    candidates = [source / "eval" / PREDICTIONS, source / PREDICTIONS]
    for candidate in candidates:
        if candidate.is_file() and (_has_labels(candidate) or _is_multilabel(candidate)):
            return candidate
    if not any(c.is_file() for c in candidates):
        raise BadData(f"{source}: no {PREDICTIONS} here or in {source / 'eval'} (evaluate "
                      "the checkpoint first)")
    looked = [f"{c} ({'no label column' if c.is_file() else 'missing'})" for c in candidates]
    raise BadData(f"{source}: no predictions with labels; looked at {' and '.join(looked)} "
                  "(evaluate the checkpoint first)")


def model_name(csv_path: Path) -> str:
    """runs/NAME/eval/predictions.csv -> NAME; otherwise the CSV's folder (or file) name."""
    folder = csv_path.parent
    if csv_path.name != PREDICTIONS:
        return csv_path.stem
    return folder.parent.name if folder.name == "eval" and folder.parent.name else folder.name


def read_predictions(source: str | Path, name: str | None = None) -> ModelPredictions:
    """Read one model's eval predictions (two classes only).

    Raises:
        BadData: not an eval predictions CSV (e.g. predict's output without labels), a
            multi-class model, repeated files, no rows, one class only, probabilities outside
            [0, 1] or predictions other than 0/1.
    """
    path = predictions_file(source)
    if _is_multilabel(path):
        raise BadData(f"{path}: a multi-label model's predictions; compare handles one-label "
                      "(two-class) models")
    frame = P.read_predictions_csv(path, labelled=True)
    if P.class_probability_columns(frame.columns):
        raise BadData(f"{path}: a multi-class model; compare handles two-class models")
    if P.PROBABILITY not in frame.columns:
        raise BadData(f"{path}: lacks column {P.PROBABILITY}; compare needs the "
                      "predictions.csv of an evaluation (with labels)")
    frame = T.sorted_frame(path, frame)
    try:
        y_true, y_prob = M.as_binary_inputs(
            frame[P.LABEL].to_numpy(), pd.to_numeric(frame[P.PROBABILITY]).to_numpy(np.float64))
    except ValueError as e:
        raise BadData(f"{path}: {' '.join(str(e).split())}") from None
    if ((y_prob < 0) | (y_prob > 1)).any():
        raise BadData(f"{path}: column {P.PROBABILITY} holds values outside [0, 1]")
    y_pred = frame[P.PREDICTION]
    if not y_pred.isin([0, 1]).all():  # NaN, class names or other numbers
        bad = y_pred[~y_pred.isin([0, 1])].iloc[0]
        raise BadData(f"{path}: column {P.PREDICTION} must hold 0 or 1; found {bad!r}")
    if len(np.unique(y_true)) < 2:
        raise BadData(f"{path}: all {len(y_true)} images have label {y_true[0]}; comparing "
                      "AUCs and predictions needs both classes")
    return ModelPredictions(name or model_name(path), path, frame[P.PATH].to_numpy(), y_true,
                            y_prob, y_pred.to_numpy(np.int64))


def training_history(csv_path: Path) -> list[dict] | None:
    """The per-epoch rows (epoch, train_loss, val_loss, val_roc_auc) of the run a predictions
    CSV belongs to (RUN/metrics.csv beside RUN/eval/predictions.csv); None, with a warning
    naming the file when one is there but unusable, when there is none."""
    for folder in (csv_path.parent, csv_path.parent.parent):
        path = folder / HISTORY
        if path.exists():
            rows, problem = _read_history(path)
            if problem:
                log.warning("%s: %s; its training curves are left out of %s", path, problem, CURVES)
            return rows
    return None


def _read_history(path: Path) -> tuple[list[dict] | None, str | None]:
    """(rows, None) or (None, the problem) for one metrics.csv."""
    if not path.is_file():
        return None, "not a file"
    if path.stat().st_size > MAX_HISTORY_BYTES:
        return None, f"larger than {MAX_HISTORY_BYTES // 1_000_000} MB, not a metrics.csv of palm"
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        return None, f"unreadable ({' '.join(str(e).split())[:100]})"
    if not {"epoch", "val_loss"} <= set(frame.columns):
        return None, "no epoch and val_loss columns"
    columns = [c for c in HISTORY_COLUMNS if c in frame.columns]
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    # text, inf and absurd magnitudes (which no plot can scale to) become gaps
    values = values.where(values.abs() <= MAX_PLOTTED)
    values = values[values["epoch"].notna()]
    if values.empty:
        return None, "no row with a numeric epoch"
    return values.to_dict("records"), None


def check_same_images(models: Sequence[ModelPredictions]) -> None:
    """BadData (one line) unless every model scored the same files with the same labels."""
    first = models[0]
    for other in models[1:]:
        if not np.array_equal(first.files, other.files):
            only_a = sorted(set(first.files) - set(other.files))
            only_b = sorted(set(other.files) - set(first.files))
            example = (only_a or only_b)[:1]
            raise BadData(f"{first.source} and {other.source} do not score the same images: "
                          f"{len(only_a)} only in the first, {len(only_b)} only in the second "
                          f"(e.g. {example[0] if example else '?'})")
        if not np.array_equal(first.labels, other.labels):
            differ = (first.labels != other.labels).reshape(len(first.files), -1).any(axis=1)
            where = first.files[np.flatnonzero(differ)[0]]
            raise BadData(f"{first.source} and {other.source} disagree on labels (e.g. {where})")


def leaderboard(models: Sequence[ModelPredictions], resamples: int = M.DEFAULT_RESAMPLES,
                seed: int = 0) -> pd.DataFrame:
    """One row per model, best AUC first: AUC, sensitivity, specificity, accuracy with
    95 % intervals (bootstrap for AUC, Wilson for the proportions, at each model's decisions)."""
    rows = []
    for m in models:
        pos, neg = m.labels == 1, m.labels == 0
        tp, tn = int((m.y_pred[pos] == 1).sum()), int((m.y_pred[neg] == 0).sum())
        auc_ci = M.bootstrap_auc(m.labels, m.y_prob, resamples, seed)
        row = {"model": m.name, "images": len(m.labels), "positives": int(pos.sum()),
               "roc_auc": M.roc_auc(m.labels, m.y_prob),
               "roc_auc_low": auc_ci[0], "roc_auc_high": auc_ci[1]}
        for key, hits, total in (("sensitivity", tp, int(pos.sum())),
                                 ("specificity", tn, int(neg.sum())),
                                 ("accuracy", tp + tn, len(m.labels))):
            low, high = M.wilson_interval(hits, total)
            row.update({key: hits / total if total else np.nan, f"{key}_low": low,
                        f"{key}_high": high})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("roc_auc", ascending=False, kind="stable")


def pairwise(models: Sequence[ModelPredictions], resamples: int = M.DEFAULT_RESAMPLES,
             seed: int = 0) -> pd.DataFrame:
    """For every pair (a, b): AUC(a) - AUC(b) with its paired bootstrap interval and
    DeLong's two-sided p, and McNemar's exact p on the decisions."""
    rows = []
    for a, b in itertools.combinations(models, 2):
        delong = M.delong_test(a.labels, a.y_prob, b.y_prob)
        low, high = M.paired_bootstrap_auc_difference(a.labels, a.y_prob,
                                                      b.y_prob, resamples, seed)
        mcnemar = M.mcnemar_test(a.labels, a.y_pred, b.y_pred)
        rows.append({"model_a": a.name, "model_b": b.name, "auc_difference": delong["difference"],
                     "difference_low": low, "difference_high": high, "delong_p": delong["p"],
                     "only_a_correct": mcnemar["only_a_correct"],
                     "only_b_correct": mcnemar["only_b_correct"], "mcnemar_p": mcnemar["p"]})
    return pd.DataFrame(rows)


def _interval(value: float, low: float, high: float) -> str:
    return f"{value:.3f} ({low:.3f}-{high:.3f})" if np.isfinite([value, low, high]).all() \
        else f"{value:.3f}"


def _p(value: float) -> str:
    return "n/a" if not np.isfinite(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def leaderboard_markdown(board: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """Both tables as Markdown, figures with their 95 % intervals."""
    models = markdown_table(
        ["model", "images (positive)", "AUC (95% CI)", "sensitivity (95% CI)",
         "specificity (95% CI)", "accuracy (95% CI)"],
        [[r.model, f"{r.images} ({r.positives})",
          _interval(r.roc_auc, r.roc_auc_low, r.roc_auc_high),
          _interval(r.sensitivity, r.sensitivity_low, r.sensitivity_high),
          _interval(r.specificity, r.specificity_low, r.specificity_high),
          _interval(r.accuracy, r.accuracy_low, r.accuracy_high)]
         for r in board.itertuples()])
    text = "Models (AUC: stratified bootstrap; proportions: Wilson)\n\n" + models + "\n"
    if len(pairs):
        text += "\nPairs (AUC difference a - b: paired bootstrap CI, DeLong p; decisions: " \
                "exact McNemar p)\n\n" + markdown_table(
                    ["a", "b", "AUC a - b (95% CI)", "DeLong p", "only a right / only b right",
                     "McNemar p"],
                    [[r.model_a, r.model_b,
                      f"{r.auc_difference:+.3f} ({r.difference_low:+.3f} to {r.difference_high:+.3f})",
                      _p(r.delong_p), f"{r.only_a_correct} / {r.only_b_correct}", _p(r.mcnemar_p)]
                     for r in pairs.itertuples()]) + "\n"
    return text


def compare_models(sources: Sequence[str | Path], output_dir: str | Path,
                   names: Sequence[str] | None = None, resamples: int = M.DEFAULT_RESAMPLES,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write leaderboard.md, leaderboard.csv, pairs.csv and roc_overlay.png to `output_dir`,
    and curves_overlay.png when some inputs are runs with a metrics.csv.

    Raises:
        BadData: fewer than two models, unreadable inputs, or different images.
    """
    if len(sources) < 2:
        raise BadData("compare needs the predictions of at least two models")
    if names is not None and len(names) != len(sources):
        raise BadData(f"names: {len(names)} given for {len(sources)} sources")
    paths = [predictions_file(s) for s in sources]
    task = T.common_task(paths)
    if task in T.TASKS:
        return compare_task_models(task, paths, output_dir, names, resamples, seed)
    models = [read_predictions(s, n) for s, n in zip(sources, names or [None] * len(sources))]
    distinct_names(models)
    check_same_images(models)
    histories = [(m.name, training_history(m.source)) for m in models]
    board = leaderboard(models, resamples, seed)
    by_name = {m.name: m for m in models}
    models = [by_name[name] for name in board["model"]]  # pairs read best minus worse
    pairs = pairwise(models, resamples, seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (CURVES, "pairs_per_label.csv"):  # never a file of an earlier comparison
        (out / stale).unlink(missing_ok=True)
    write_text_atomic(out / "leaderboard.md", leaderboard_markdown(board, pairs))
    for frame, name in ((board, "leaderboard.csv"), (pairs, "pairs.csv")):
        write_csv_atomic(out / name, frame)
    plot_roc_overlay([(m.name, m.labels, m.y_prob) for m in models],
                     out / "roc_overlay.png")
    if any(history for _, history in histories):
        plot_history_overlay([(name, h) for name, h in histories if h], out / CURVES)
    return board, pairs


def distinct_names(models: Sequence[ModelPredictions | T.TaskPredictions]) -> None:
    """Two runs named alike stay apart in the tables: the second becomes NAME#2."""
    seen: dict[str, int] = {}
    for m in models:
        seen[m.name] = seen.get(m.name, 0) + 1
        if seen[m.name] > 1:
            m.name = f"{m.name}#{seen[m.name]}"


def ordinal_markdown(board: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """A graders' leaderboard and pairs as Markdown."""
    first = board.iloc[0]
    text = (f"Graders (quadratic kappa and referable AUC, grade >= {first.referable_grade}: "
            "percentile bootstrap)\n\n" + markdown_table(
                ["model", "images (referable)", "quadratic kappa (95% CI)", "MAE", "accuracy",
                 "referable AUC (95% CI)"],
                [[r.model, f"{r.images} ({r.referable_images})",
                  _signed_interval(r.qwk, r.qwk_low, r.qwk_high), f"{r.mae:.3f}",
                  f"{r.accuracy:.3f}",
                  _interval(r.referable_roc_auc, r.referable_roc_auc_low,
                            r.referable_roc_auc_high)] for r in board.itertuples()]) + "\n")
    if len(pairs):
        text += ("\nPairs (kappa a - b: paired bootstrap CI and p; referable AUC a - b: paired "
                 "bootstrap CI, DeLong p)\n\n" + markdown_table(
                     ["a", "b", "kappa a - b (95% CI)", "bootstrap p",
                      "referable AUC a - b (95% CI)", "DeLong p"],
                     [[r.model_a, r.model_b,
                       _difference(r.qwk_difference, r.qwk_difference_low, r.qwk_difference_high),
                       _p(r.qwk_bootstrap_p),
                       _difference(r.referable_auc_difference, r.referable_difference_low,
                                   r.referable_difference_high), _p(r.referable_delong_p)]
                      for r in pairs.itertuples()]) + "\n")
    return text


def multilabel_markdown(board: pd.DataFrame, pairs: pd.DataFrame, per_label: pd.DataFrame,
                        labels: Sequence[str]) -> str:
    """A multi-label leaderboard, its pairs and the per-label DeLong rows as Markdown."""
    text = ("Models (macro AUC: percentile bootstrap of images)\n\n" + markdown_table(
        ["model", "images", "macro AUC (95% CI)", "micro AUC", "mAP",
         *[f"AUC {n}" for n in labels]],
        [[r["model"], str(r["images"]),
          _interval(r["macro_roc_auc"], r["macro_roc_auc_low"], r["macro_roc_auc_high"]),
          f"{r['micro_roc_auc']:.3f}", f"{r['map']:.3f}",
          *[f"{r[f'roc_auc_{n}']:.3f}" for n in labels]] for _, r in board.iterrows()]) + "\n")
    if len(pairs):
        text += ("\nPairs (macro AUC a - b: paired bootstrap CI and p)\n\n" + markdown_table(
            ["a", "b", "macro AUC a - b (95% CI)", "bootstrap p"],
            [[r.model_a, r.model_b, _difference(r.macro_auc_difference, r.macro_difference_low,
                                                r.macro_difference_high),
              _p(r.macro_bootstrap_p)] for r in pairs.itertuples()]) + "\n")
        text += ("\nPer label (AUC a - b: DeLong's paired test)\n\n" + markdown_table(
            ["a", "b", "label", "AUC a", "AUC b", "a - b", "DeLong p"],
            [[r.model_a, r.model_b, r.label, f"{r.auc_a:.3f}", f"{r.auc_b:.3f}",
              f"{r.auc_difference:+.3f}", r.undefined or _p(r.delong_p)]
             for r in per_label.itertuples()]) + "\n")
    return text


def _difference(value: float, low: float, high: float) -> str:
    return f"{value:+.3f} ({low:+.3f} to {high:+.3f})"


def _signed_interval(value: float, low: float, high: float) -> str:
    """A kappa and its interval, which may lie below 0 (so "to", not a dash)."""
    return f"{value:.3f} ({low:.3f} to {high:.3f})" if np.isfinite([value, low, high]).all() \
        else f"{value:.3f}"


def compare_task_models(task: str, paths: Sequence[Path], output_dir: str | Path,
                        names: Sequence[str] | None, resamples: int,
                        seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """compare_models for graders or multi-label models: leaderboard.md, leaderboard.csv,
    pairs.csv (and pairs_per_label.csv for multi-label models), roc_overlay.png of the
    referable split (graders), curves_overlay.png when some inputs are runs."""
    models = [T.read_task_predictions(p, n or model_name(p), task)
              for p, n in zip(paths, names or [None] * len(paths))]
    T.check_same_task_setup(models)
    distinct_names(models)
    check_same_images(models)
    histories = [(m.name, training_history(m.source)) for m in models]
    if task == T.ORDINAL:
        board = T.ordinal_leaderboard(models, resamples, seed)
    else:
        board = T.multilabel_leaderboard(models, resamples, seed)
    by_name = {m.name: m for m in models}
    models = [by_name[name] for name in board["model"]]  # pairs read best minus worse
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (CURVES, "roc_overlay.png", "pairs_per_label.csv"):
        (out / stale).unlink(missing_ok=True)  # never a file of an earlier comparison
    if task == T.ORDINAL:
        pairs = T.ordinal_pairs(models, resamples, seed)
        write_text_atomic(out / "leaderboard.md", ordinal_markdown(board, pairs))
        plot_roc_overlay(T.roc_curves(models), out / "roc_overlay.png")
    else:
        pairs, per_label = T.multilabel_pairs(models, resamples, seed)
        write_text_atomic(out / "leaderboard.md",
                          multilabel_markdown(board, pairs, per_label, models[0].names))
        write_csv_atomic(out / "pairs_per_label.csv", per_label)
    for frame, name in ((board, "leaderboard.csv"), (pairs, "pairs.csv")):
        write_csv_atomic(out / name, frame)
    if any(history for _, history in histories):
        plot_history_overlay([(name, h) for name, h in histories if h], out / CURVES)
    return board, pairs
