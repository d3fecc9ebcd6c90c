"""Honest selection: which images chose a checkpoint, and calibration on them.

Training records in the best checkpoint's sidecar which images chose the epoch
("selection": select_on val or holdout) and saves their predictions at that epoch
(NAME_selection.csv: file, label, logits). Operating points and temperatures are fitted on
those images, never on the scored ones unless they are the same; an evaluation says
whether its figures are "optimistic" (the scored images chose something) or "independent".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from palm import metrics as M
from palm.engine.checkpoint import EXPORT_META, load_meta, update_sidecar
from palm.errors import BadCheckpoint, BadConfig, BadData
from palm.io_utils import read_csv
from palm.predictions import Grader, ordinal_loss_of, probabilities

SELECTION_SUFFIX = "_selection.csv"


def selection_csv_path(params_path: str | Path) -> Path:
    params_path = Path(params_path)
    return params_path.with_name(params_path.stem + SELECTION_SUFFIX)


def selection_frame(files: Sequence[str], labels: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    """path, label (label_0..label_{L-1} of a multi-label model), logit (one logit) or
    logit_0..logit_{K-1}: what a later calibration needs."""
    labels = np.asarray(labels)
    logits = np.asarray(logits, dtype=np.float64).reshape(len(labels), -1)
    frame = pd.DataFrame({"path": [str(Path(f).resolve()) for f in files]})
    if labels.ndim == 2:
        for k in range(labels.shape[1]):
            frame[f"label_{k}"] = labels[:, k]
    else:
        frame["label"] = labels
    names = ["logit"] if logits.shape[1] == 1 else [f"logit_{k}" for k in range(logits.shape[1])]
    for k, name in enumerate(names):
        frame[name] = logits[:, k]
    return frame


def read_selection(checkpoint: str | Path, meta: dict[str, Any]) -> tuple[list[str], np.ndarray,
                                                                          np.ndarray]:
    """(files, labels (N,), or (N, L) of a multi-label model, logits (N, 1) or (N, K)) of the
    images that selected the checkpoint.

    Raises:
        BadCheckpoint: nothing was recorded (a checkpoint saved before selection was
            recorded, or `last`), or the file is damaged.
    """
    record = meta.get("selection") or {}
    path = Path(checkpoint).with_name(record["predictions"]) if "predictions" in record else None
    if "rows" not in record and (path is None or not path.is_file()):
        raise BadCheckpoint(f"{checkpoint}: no selection predictions recorded beside it (train "
                            "again with this palm version and use best.pdparams)")
    if path is None:  # an export carries them in its meta (palm.engine.export)
        path = Path(checkpoint) / EXPORT_META
    try:
        frame = pd.DataFrame(record["rows"]) if "rows" in record else read_csv(path)
        logit_cols = [c for c in frame.columns if c.startswith("logit")]
        logits = frame[logit_cols].to_numpy(np.float64)
        label_cols = [c for c in frame.columns if c.startswith("label_")] or ["label"]
        labels = frame[label_cols].to_numpy(np.int64)
        labels = labels[:, 0] if label_cols == ["label"] else labels
    except (KeyError, ValueError, TypeError, pd.errors.ParserError) as e:
        raise BadCheckpoint(f"{path}: damaged selection predictions ({e})") from None
    if not logit_cols or not np.isfinite(logits).all():
        raise BadCheckpoint(f"{path}: damaged selection predictions (no finite logits)")
    return frame["path"].astype(str).tolist(), labels, logits


def selection_status(checkpoint: str | Path, meta: dict[str, Any], scored_files: Sequence[str],
                     tuned_here: bool) -> tuple[str, str]:
    """("optimistic" | "independent" | "unknown", why) for figures on `scored_files`."""
    if tuned_here:
        return "optimistic", "the threshold was tuned on the scored images (exploratory)"
    record = meta.get("selection")
    if not record:
        return "unknown", "the checkpoint does not record which images selected it"
    try:
        chosen = set(read_selection(checkpoint, meta)[0])
    except BadCheckpoint:
        return "unknown", "the checkpoint's selection predictions are missing"
    overlap = sum(str(Path(f).resolve()) in chosen for f in scored_files)
    tuned = meta.get("threshold_source") or meta.get("thresholds_source")
    chosen_parts = ["epoch"] + (["threshold"] if tuned else []) + \
        (["temperature"] if meta.get("temperature", 1.0) != 1.0 else [])
    what = " and ".join(chosen_parts) if len(chosen_parts) < 3 else "epoch, threshold and temperature"
    if overlap:
        return "optimistic", (f"{overlap} of the {len(scored_files)} scored images chose the "
                              f"checkpoint's {what} (select_on: {record.get('select_on')})")
    return "independent", (f"the {what} {'were' if len(chosen_parts) > 1 else 'was'} chosen "
                           f"on {len(chosen)} other images "
                           f"(select_on: {record.get('select_on')})")


def calibrate_checkpoint(checkpoint: str | Path, meta: dict[str, Any], fit_temperature: bool,
                         operating_point: str | None,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit a temperature and/or choose an operating-point threshold on the checkpoint's
    selection images, store them in its sidecar (so eval, predict and export use them) and
    return the new meta.

    A multi-label model gets one threshold per label (`thresholds`: {label: t}), each at the
    operating point on that label's probabilities.

    Raises:
        BadCheckpoint: an export folder (calibrate the checkpoint, then export), or no
            selection predictions.
        ValueError: a bad operating point, or one for a multi-class model.
    """
    if Path(checkpoint).is_dir():
        raise BadCheckpoint(f"{checkpoint}: an exported model cannot be changed; calibrate "
                            "the .pdparams checkpoint, then export it again")
    kind, target = M.parse_operating_point(operating_point) if operating_point else ("", 0.0)
    if fit_temperature and ordinal_loss_of(meta) != "ce":
        raise BadConfig(f"fit_temperature applies to softmax and sigmoid models; this one grades "
                        f"with ordinal_loss {ordinal_loss_of(meta)}", param="fit_temperature")
    _, labels, logits = read_selection(checkpoint, meta)
    where = f"{len(labels)} {meta['selection'].get('select_on', '?')} images"
    changes: dict[str, Any] = {}
    old_t = float(meta.get("temperature", 1.0))
    temperature = old_t
    if fit_temperature:
        temperature = M.fit_temperature(labels, logits)
        changes["temperature"] = temperature
        changes["temperature_source"] = f"fitted on {where}"
        if meta["num_classes"] == 1:  # keep the decisions of the threshold in use
            changes["threshold"] = M.rescale_threshold(float(meta.get("threshold", 0.5)), old_t,
                                                       temperature)
        log(f"temperature {temperature:.3f} (NLL {M.negative_log_likelihood(labels, logits):.4f}"
            f" -> {M.negative_log_likelihood(labels, logits, temperature):.4f} on {where})")
    if kind and meta.get("task") == "multilabel":
        changes.update(_label_operating_points(labels, logits, meta, kind, target,
                                               f"{operating_point} per label on {where}", log))
    elif kind:
        if meta["num_classes"] != 1:
            raise BadConfig("operating_point applies to two-class (one-logit) models",
                            param="operating_point")
        probs = M.apply_temperature(logits, temperature)
        threshold = float(np.clip(M.threshold_for(labels, probs, kind, target), 0.0, 1.0))
        changes["threshold"] = threshold
        changes["threshold_source"] = f"operating point {operating_point} on {where}"
        log(f"threshold {threshold:.4f}: {operating_point} on {where}")
    return update_sidecar(checkpoint, changes)


def _label_operating_points(labels: np.ndarray, logits: np.ndarray, meta: dict[str, Any],
                            kind: str, target: float, source: str,
                            log: Callable[[str], None]) -> dict[str, Any]:
    """A multi-label model's `thresholds` ({label: t}, each label's operating point on its
    own sigmoid probabilities) and their source, for the sidecar.

    Raises:
        BadData: a label lacks positives or negatives among the selection images.
    """
    probs = probabilities(logits, float(meta.get("temperature", 1.0)), multilabel=True)
    thresholds = {}
    for j, name in enumerate(meta["class_names"]):
        try:
            cut = M.threshold_for(labels[:, j], probs[:, j], kind, target)
        except BadData as e:
            raise BadData(f"label {name}: {e}") from None
        thresholds[name] = float(np.clip(cut, 0.0, 1.0))
    log("thresholds " + ", ".join(f"{n} {t:.4f}" for n, t in thresholds.items()) + f": {source}")
    return {"thresholds": thresholds, "thresholds_source": f"operating point {source}"}


def tune_checkpoint_cut_points(checkpoint: str | Path) -> str:
    """Tune a grade regression's cut-points for quadratic kappa on the images and scores
    that chose the checkpoint's epoch (its selection predictions), store them in its
    sidecar (eval, predict, export and the service then use them) and say so in one line.

    Raises:
        BadCheckpoint: no selection predictions beside the checkpoint.
    """
    meta = load_meta(checkpoint)
    grader = Grader.from_meta({**meta, "cut_points": None})
    if grader is None or grader.ordinal_loss != "regression":
        raise BadConfig(f"{checkpoint}: cut-points belong to a grade regression "
                        f"(ordinal_loss regression)", param="ordinal_loss")
    _, grades, logits = read_selection(checkpoint, meta)
    scores = grader.scores(logits)
    before = M.quadratic_kappa(grades, grader.read(scores).grades, grader.num_grades)
    cuts = M.tune_cut_points(scores, grades, grader.num_grades)
    after = M.quadratic_kappa(grades, M.grades_at(scores, cuts), grader.num_grades)
    where = f"{len(grades)} {meta['selection'].get('select_on', '?')} images"
    update_sidecar(checkpoint, {"cut_points": [float(c) for c in cuts],
                                "cut_points_source": f"tuned for kappa on {where}"})
    return (f"cut-points {', '.join(f'{c:.3f}' for c in cuts)} tuned on {where}: quadratic "
            f"kappa {before:.4f} at k - 0.5 -> {after:.4f} (optimistic there)")
