"""Batch prediction over a folder (recursive) or one file, streamed to a CSV.

Memory stays flat whatever the folder size: images are decoded in DataLoader workers a
batch at a time and every batch's rows are appended to `OUTPUT.partial` at once. When the
run finishes, the journal is copied atomically to OUTPUT and removed, so OUTPUT is either
complete or absent. After an interruption, `resume=True` keeps every successful row of the
journal (and of an existing OUTPUT) for a file of this run's inputs and predicts only the
rest; files that failed are tried again, rows of files no longer asked for are dropped.
The kept and new rows are merged in the inputs' order, so a resumed run's OUTPUT is the
uninterrupted run's (exactly so when the kept rows are in that order, as an interrupted
run of the same inputs leaves them).
`OUTPUT.json` records what made the rows (checkpoint SHA-256, threshold, precision, TTA,
columns); resuming with anything else is refused, saying what differs. A kept row must
be complete and well-formed (a row torn by a crash or a full disk, or edited by hand into
something else, is predicted again).

A file that cannot be used (empty, truncated, not an image, unreadable), or for which the
model's output is not finite (NaN or inf), becomes a row with its `error` and no
probability, never a crash. Grayscale, RGBA and 16-bit images are
converted by palm.data.read_image.

OUTPUT is locked for the run (`OUTPUT.lock`, palm.io_utils.output_lock): a second run
into it is refused at once. OUTPUT may only be a predictions CSV written by palm (or a new
file): a checkpoint, an image, one of the inputs or any other file is never overwritten.
"""
from __future__ import annotations

import csv
import heapq
import itertools
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import paddle
from tqdm import tqdm

from palm.data import IMAGE_EXTENSIONS, FileImageSet, eval_transform
from palm.engine.checkpoint import decision_threshold, label_thresholds
from palm.engine.evaluate import NON_FINITE_OUTPUT, finite_probabilities, finite_rows
from palm.engine.inference import Predictor
from palm.engine.pipeline import run_ahead, runs_ahead, takes_arrays
from palm.errors import BadConfig, BadData, OutputRefused
from palm.io_utils import (atomic_path, escape_formula, escape_row, naming_write_errors,
                           output_lock, unescape_row, write_json_atomic)
from palm.predictions import (ERROR, EXPECTED_GRADE, PATH, PREDICTION, PREDICTION_PREFIX, PROBABILITY,
                              REQUIRED_COLUMNS, Grader, is_probability_column, main_output,
                              multilabel_columns, ordinal_loss_of, prediction_columns)
from palm.runtime import worker_init

# files a predictions CSV must never replace, whether or not they exist yet
FOREIGN_SUFFIXES = (".pdparams", ".pdopt", ".pdiparams", ".pdmodel", ".json", ".yaml", ".yml",
                    ".py", ".lock") + IMAGE_EXTENSIONS


@paddle.no_grad()
def predict_probabilities(model: paddle.nn.Layer, images: paddle.Tensor, tta: bool = False,
                          temperature: float = 1.0, multilabel: bool = False,
                          grader: Grader | None = None) -> np.ndarray:
    """Probabilities for a batch: (B,) for one logit, (B, K) for K classes, (B, L) sigmoids
    of a multi-label model (of the logits divided by the checkpoint's `temperature`); a
    grading model's `grader.scores`; NaN for an image whose logits are not finite.

    With `tta`, the mean over the image and its horizontal and vertical flips (a fundus
    photo flipped is still a plausible fundus: left and right eyes mirror each other).
    """
    views = [images, paddle.flip(images, [3]), paddle.flip(images, [2])] if tta else [images]
    logits = main_output(model(paddle.concat(views))).numpy()
    return _mean_over_views(logits, len(views), temperature, multilabel, grader)


def predict_array_probabilities(predictor: Predictor, images: np.ndarray, tta: bool = False,
                                temperature: float = 1.0, multilabel: bool = False,
                                grader: Grader | None = None) -> np.ndarray:
    """`predict_probabilities` of an NCHW numpy batch through an exported or INT8 predictor."""
    views = [images, images[..., ::-1], images[:, :, ::-1]] if tta else [images]
    logits = predictor.predict(np.concatenate(views) if tta else images)
    return _mean_over_views(logits, len(views), temperature, multilabel, grader)


def _mean_over_views(logits: np.ndarray, n_views: int, temperature: float, multilabel: bool,
                     grader: Grader | None) -> np.ndarray:
    """Probabilities (or a grader's scores) of logits stacked view by view, averaged over the
    views; NaN rows where logits are not finite."""
    if grader is None:
        probs = finite_probabilities(logits, temperature, multilabel)
    else:
        probs = grader.scores(logits)
        probs[~finite_rows(logits)] = np.nan
    return probs.reshape(n_views, len(logits) // n_views, *probs.shape[1:]).mean(axis=0)


@dataclass
class PredictSummary:
    images: int  # rows in the output
    errors: int  # rows with an error
    reused: int  # rows kept from an earlier run (--resume)
    output: Path

    def line(self) -> str:
        reused = f", {self.reused} reused from the earlier run" if self.reused else ""
        return f"{self.images} images, {self.errors} errors{reused} -> {self.output}"


def check_output(output: str | Path, inputs: Sequence[str] = ()) -> None:
    """Refuse an OUTPUT that palm did not write as a predictions CSV.

    Raises:
        OutputRefused: OUTPUT is a folder, has a checkpoint/config/image extension, is one
            of `inputs`, or exists without palm's predictions header.
    """
    output = Path(output)
    why = ""
    if output.is_dir():
        why = "is a folder"
    elif output.suffix.lower() in FOREIGN_SUFFIXES:
        why = f"has a {output.suffix} extension (a checkpoint, config or image, not a CSV)"
    elif os.path.abspath(output) in {os.path.abspath(p) for p in inputs}:
        why = "is one of the input images"
    elif output.exists() and not _is_palm_csv(output):
        why = "exists and is not a predictions CSV written by palm"
    else:
        # the files kept beside OUTPUT: `--output run/best` would replace run/best.json,
        # a checkpoint's sidecar, with the prediction record
        journal = journal_path(output)
        foreign = [p for p in (journal, record_path(output), record_path(journal))
                   if p.exists() and not (_is_palm_csv(p) if p == journal else _is_record(p))]
        if foreign:
            why = (f"would replace {foreign[0]}, which palm did not write "
                   "(choose a name ending in .csv)")
    if why:
        raise OutputRefused(f"output {output} {why}; predictions go to a new or earlier "
                            "predictions .csv file", param="output")


def _is_palm_csv(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        first = f.readline(4096)
    header = first.decode("utf-8", "replace").rstrip("\r\n").split(",")
    multilabel = ERROR in header and any(c.startswith(PREDICTION_PREFIX) for c in header)
    return header[:1] == [PATH] and (set(REQUIRED_COLUMNS) <= set(header) or multilabel)


def _is_record(path: Path) -> bool:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a folder, unreadable, not JSON or not text
        return False
    return isinstance(saved, dict) and {"checkpoint_sha256", "columns"} <= saved.keys()


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def record_path(csv_path: Path) -> Path:
    """CSV.json beside OUTPUT and its journal: what made their rows."""
    return csv_path.with_name(csv_path.name + ".json")


def _check_record(csv_path: Path, record: dict[str, Any]) -> None:
    """Refuse to mix rows made by another checkpoint, threshold, precision or TTA."""
    path = record_path(csv_path)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadData(f"{path}: missing, so nothing says which checkpoint, threshold and "
                      f"precision made the rows of {csv_path}; run without resume",
                      param="resume") from None
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested too deep
        raise BadData(f"{path}: not valid JSON ({e}); run without resume",
                      param="resume") from None
    if not isinstance(saved, dict):
        raise BadData(f"{path}: not a prediction record; run without resume", param="resume")
    differs = [f"{key} {saved.get(key)!r} there, {value!r} now" for key, value in record.items()
               if saved.get(key) != value]
    if differs:
        raise BadConfig(f"resume: the rows of {csv_path} were made differently "
                        f"({'; '.join(differs)}); run without resume or use another output",
                        param=("resume", "output"))


def _row_ok(row: dict[str, Any], columns: Sequence[str], class_names: Sequence[str]) -> bool:
    """A successful row with every column, a probability in [0, 1] and a valid prediction."""
    if not row.get("path") or row.get("error") or None in row \
            or any(row.get(c) is None for c in columns):  # None key: more fields than columns
        return False
    try:
        probs = [float(row[c]) for c in columns if is_probability_column(c)]
        if PREDICTION not in columns:  # a multi-label model: a 0/1 decision per label
            return (all(math.isfinite(p) and 0 <= p <= 1 for p in probs)
                    and all(row[c] in ("0", "1") for c in columns
                            if c.startswith(PREDICTION_PREFIX)))
        pred = int(row["prediction"])
    except ValueError:
        return False
    return (all(math.isfinite(p) and 0 <= p <= 1 for p in probs)
            and 0 <= pred < max(len(class_names), 2)
            and row["class_name"] == (class_names[pred] if pred < len(class_names) else ""))


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _done_rows(files: Sequence[Path], columns: Sequence[str], class_names: Sequence[str],
               wanted: set[str]) -> Iterator[dict[str, str]]:
    """Complete successful rows of earlier outputs for `wanted` paths, each path once
    (streamed, not loaded whole)."""
    seen: set[str] = set()
    for path in files:
        torn = not _ends_with_newline(path)  # the last line was cut mid-write
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows: Iterator[dict[str, str]] = map(unescape_row, csv.DictReader(f))
            if torn:
                rows = (row for row, _ in itertools.pairwise(rows))  # all but the last
            for row in rows:
                if _row_ok(row, columns, class_names) and row["path"] in wanted \
                        and row["path"] not in seen:
                    seen.add(row["path"])
                    yield row


def _start_journal(output: Path, columns: list[str], class_names: Sequence[str],
                   record: dict[str, Any], resume: bool, paths: Sequence[str]) -> set[str]:
    """Record what makes the rows, and create the journal with a header (+ the earlier rows
    that are still valid when resuming, for the `paths` of this run only)."""
    journal = journal_path(output)
    earlier = [p for p in (output, journal) if p.is_file()] if resume else []
    for path in earlier:
        _check_record(path, record)
    write_json_atomic(record_path(journal), record)
    done: set[str] = set()
    with atomic_path(journal) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for row in _done_rows(earlier, columns, class_names, set(paths)):
            writer.writerow(escape_row(row))
            done.add(row["path"])
    return done


def _finish(output: Path, paths: Sequence[str], kept: int) -> None:
    """Journal -> OUTPUT, then its record; a crash in between only makes --resume refuse.
    The journal's first `kept` rows came from the earlier run (--resume)."""
    journal = journal_path(output)
    with atomic_path(output) as tmp:
        if 0 < kept < len(paths):
            _merge_in_input_order(journal, tmp, paths, kept)
        else:
            shutil.copyfile(journal, tmp)
    os.replace(record_path(journal), record_path(output))
    os.remove(journal)


def _merge_in_input_order(journal: Path, target: Path, paths: Sequence[str], kept: int) -> None:
    """The journal's kept rows and this run's rows merged by their path's place in `paths`,
    into `target`: a resumed run gives the CSV of an uninterrupted one (a failed file, tried
    again, is not moved to the end). Streamed: two readers of the journal, one per part."""
    place = {escape_formula(path): k for k, path in enumerate(paths)}
    with open(journal, newline="", encoding="utf-8") as earlier, \
            open(journal, newline="", encoding="utf-8") as now, \
            open(target, "w", newline="", encoding="utf-8") as f:
        earlier_rows, now_rows = csv.reader(earlier), csv.reader(now)
        header = next(earlier_rows)
        column = header.index(PATH)
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(heapq.merge(itertools.islice(earlier_rows, kept),
                                     itertools.islice(now_rows, kept + 1, None),
                                     key=lambda row: place[row[column]]))


def _thresholds(meta: dict[str, Any], threshold: float | None, multilabel: bool) -> np.ndarray:
    """The decision threshold (one label), or one per label of a multi-label model: the given
    one for every label, else the checkpoint's (`label_thresholds`)."""
    if not multilabel:
        return np.float64(decision_threshold(meta)[0] if threshold is None else threshold)
    if threshold is None:
        return label_thresholds(meta)[0]
    return np.full(len(meta.get("class_names") or []), float(threshold))


def _rows(paths: Sequence[str], indices: np.ndarray, errors: Sequence[str], probs: np.ndarray | None,
          ok: list[int], class_names: Sequence[str], threshold: np.ndarray,
          prob_columns: Sequence[str], multilabel: bool = False,
          grader: Grader | None = None) -> list[dict[str, Any]]:
    rows = []
    by_position = {pos: k for k, pos in enumerate(ok)}
    readout = grader.read(probs) if grader is not None and probs is not None and len(probs) else None
    for pos, (index, error) in enumerate(zip(indices, errors)):
        row: dict[str, Any] = {"path": paths[int(index)], "error": error}
        if pos in by_position:
            p = probs[by_position[pos]]
            if readout is not None:
                rows.append({**row, **_grade_fields(readout, by_position[pos], class_names,
                                                    prob_columns)})
                continue
            if multilabel:
                row.update({column: f"{float(v):.6f}" for column, v in zip(prob_columns, p)})
                row.update({f"{PREDICTION_PREFIX}{name}": int(v >= cut)
                            for name, v, cut in zip(class_names, p, threshold)})
                rows.append(row)
                continue
            if np.ndim(p) == 0:
                pred = int(p >= threshold)
                row[PROBABILITY] = f"{float(p):.6f}"
            else:
                pred = int(np.argmax(p))
                row.update({column: f"{float(v):.6f}" for column, v in zip(prob_columns, p)})
            row["prediction"] = pred
            row["class_name"] = class_names[pred] if pred < len(class_names) else ""
        rows.append(row)
    return rows


def _grade_fields(readout, k: int, class_names: Sequence[str],
                  prob_columns: Sequence[str]) -> dict[str, Any]:
    """Row k of a grading model's readout in the CSV's columns (palm.predictions.Grader)."""
    grade = int(readout.grades[k])
    fields: dict[str, Any] = {EXPECTED_GRADE: f"{float(readout.expected[k]):.6f}",
                              PREDICTION: grade,
                              "class_name": class_names[grade] if grade < len(class_names) else ""}
    if readout.probabilities is not None:
        fields.update({c: f"{float(v):.6f}" for c, v in zip(prob_columns, readout.probabilities[k])})
    return fields


def _drop_non_finite(probs: np.ndarray, ok: list[int],
                     batch_errors: list[str]) -> tuple[np.ndarray, list[int]]:
    """The finite rows of `probs` and their batch positions; the others become errors."""
    finite = finite_rows(probs)
    for k in np.flatnonzero(~finite):
        batch_errors[ok[k]] = NON_FINITE_OUTPUT
    return probs[finite], [pos for pos, keep in zip(ok, finite) if keep]


def _batch_scorer(model: paddle.nn.Layer | Predictor, tta: bool, temperature: float,
                  multilabel: bool, grader: Grader | None
                  ) -> Callable[[Sequence[Any]], tuple[np.ndarray | None, list[int]]]:
    """A loader batch (images, indices, errors) -> (probabilities of its readable images or
    None, their positions): a dygraph Layer on the batch's tensor, a predictor on its array."""

    def score(batch: Sequence[Any]) -> tuple[np.ndarray | None, list[int]]:
        images, _, batch_errors = batch
        ok = [i for i, e in enumerate(batch_errors) if not e]
        if not ok:
            return None, ok
        if not takes_arrays(model):
            return predict_probabilities(model, paddle.gather(images, paddle.to_tensor(ok)),
                                         tta, temperature, multilabel, grader), ok
        array = images.numpy()
        array = array if len(ok) == len(array) else array[ok]
        return predict_array_probabilities(model, array, tta, temperature, multilabel,
                                           grader), ok

    return score


def predict_to_csv(
    model: paddle.nn.Layer | Predictor,
    meta: dict[str, Any],
    paths: Sequence[str],
    output: str | Path,
    *,
    batch_size: int = 16,
    num_workers: int = 2,
    tta: bool = False,
    threshold: float | None = None,
    resume: bool = False,
    progress: bool = True,
    checkpoint_sha256: str,
    precision: str = "fp32",
) -> PredictSummary:
    """Predict every path and write OUTPUT (CSV) atomically; see the module docstring.

    Args:
        model: a dygraph Layer (load_checkpoint_model gives one), or an exported or INT8
            predictor, which gets numpy batches (`palm.engine.pipeline.batch_model`).
        meta: the checkpoint sidecar (image_size, normalize, fundus_crop, class_names,
            threshold, temperature).
        threshold: binary decision threshold, or every label's of a multi-label model
            (default: the checkpoint's; per label when it stores `thresholds`).
        resume: keep successful rows of an interrupted or earlier run of the same OUTPUT,
            if that run used the same checkpoint, threshold, precision and TTA.
        checkpoint_sha256: of the weights (palm.engine.inference.weights_sha256), and
        precision: what the model is, for OUTPUT.json.

    Returns:
        Counts of images and errors.

    Raises:
        OutputRefused: OUTPUT is in use by another run or is not palm's (`check_output`).
    """
    output = Path(output)
    check_output(output, paths)
    with output_lock(output):
        return _predict_locked(model, meta, paths, output, batch_size=batch_size,
                               num_workers=num_workers, tta=tta, threshold=threshold,
                               resume=resume, progress=progress,
                               checkpoint_sha256=checkpoint_sha256, precision=precision)


def _predict_locked(model: paddle.nn.Layer | Predictor, meta: dict[str, Any], paths: Sequence[str],
                    output: Path, *, batch_size: int, num_workers: int, tta: bool, threshold: float | None,
                    resume: bool, progress: bool, checkpoint_sha256: str,
                    precision: str) -> PredictSummary:
    class_names = list(meta.get("class_names") or [])
    multilabel = meta.get("task") == "multilabel"
    cuts = _thresholds(meta, threshold, multilabel)
    columns = (multilabel_columns(class_names, labelled=False) if multilabel else
               prediction_columns(class_names, meta["num_classes"], labelled=False,
                                  task=meta.get("task"), ordinal_loss=ordinal_loss_of(meta)))
    temperature = float(meta.get("temperature", 1.0))
    grader = Grader.from_meta(meta)
    record = {"checkpoint_sha256": checkpoint_sha256,
              "threshold": cuts.tolist() if multilabel else float(cuts),
              "temperature": temperature, "precision": precision, "tta": tta, "columns": columns,
              **({"cut_points": list(grader.cut_points)}
                 if grader is not None and grader.cut_points is not None else {})}
    done = _start_journal(output, columns, class_names, record, resume, paths)
    todo = [p for p in paths if p not in done]
    transform = eval_transform(meta)
    errors = 0
    if not takes_arrays(model):
        model.eval()
    score = _batch_scorer(model, tta, temperature, multilabel, grader)
    with open(journal_path(output), "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        if todo:
            loader = paddle.io.DataLoader(FileImageSet(todo, transform, meta["image_size"]),
                                          batch_size=batch_size, shuffle=False,
                                          num_workers=num_workers, return_list=True,
                                          worker_init_fn=worker_init)
            batches = tqdm(loader, desc="predict", unit="batch", disable=not progress,
                           dynamic_ncols=True)
            for (_, indices, batch_errors), (probs, ok) in run_ahead(score, batches,
                                                                    runs_ahead(model)):
                batch_errors = list(batch_errors)
                if probs is not None:
                    probs, ok = _drop_non_finite(probs, ok, batch_errors)
                rows = _rows(todo, indices.numpy(), batch_errors, probs, ok, class_names,
                             cuts, [c for c in columns if is_probability_column(c)],
                             multilabel, grader)
                with naming_write_errors(f.name):
                    writer.writerows(map(escape_row, rows))
                    f.flush()  # a crash loses at most the batch in flight
                errors += len(batch_errors) - len(ok)
    _finish(output, paths, len(done))
    return PredictSummary(len(done) + len(todo), errors, len(done), output)
