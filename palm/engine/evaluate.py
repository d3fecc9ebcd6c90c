"""Evaluation: probabilities for a labelled loader, and the files `tools/eval.py` writes.

Every headline metric comes with a 95 % interval (`palm.metrics`: Wilson for proportions,
a stratified bootstrap for AUC, AP and F1, DeLong for AUC too), the operating points, the
calibration errors and a reliability diagram. metrics.json also says whether the figures
are "optimistic" (the scored images chose the checkpoint's epoch, threshold or temperature)
or "independent" of that choice.

Example:
    result = evaluate(model, build_loader(val_set, 16, train=False))
    result.probabilities.shape  # (N,) for one logit, (N, K) for K classes
    write_evaluation(result, [p for p, _ in val_set.samples], val_set.classes, 0.5, "eval/")
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import paddle

from palm import metrics as M
from palm import predictions as P
from palm.data import build_loader, eval_transform
from palm.data import sources
from palm.engine.checkpoint import decision_threshold, label_thresholds
from palm.engine.eval_summary import confusion_text, evaluation_summary
from palm.engine.inference import Predictor, is_exported, load_predictor, source_meta
from palm.engine.losses import training_loss
from palm.engine.pipeline import batch_model, run_ahead, runs_ahead, takes_arrays
from palm.engine.selection import calibrate_checkpoint, selection_status
from palm.errors import BadCheckpoint, BadConfig, BadData, OutputRefused
from palm.io_utils import (next_free_path, replace_outputs, write_csv_atomic,
                           write_json_atomic)
from palm.provenance import provenance
from palm.viz import plots


# Every file an evaluation folder may hold; a new evaluation removes those it does not write
# again (an earlier --report's report.html, say), so the folder never mixes two runs.
EVAL_OUTPUTS = ("metrics.json", "predictions.csv", "confusion_matrix.png", "roc_curve.png",
                "pr_curve.png", "reliability_diagram.png", "report.html")


def holds_evaluation(folder: Path) -> bool:
    return (folder / "metrics.json").exists()


def default_eval_folder(checkpoint: str | Path) -> Path:
    """runs/NAME/best.pdparams -> runs/NAME/eval (the run folder's); an export folder
    exported/NAME -> exported/NAME-eval: beside it, one per model, and never inside it (an
    export holds exactly the files its palm_meta.json lists)."""
    checkpoint = Path(checkpoint)
    if is_exported(checkpoint):
        folder = checkpoint if checkpoint.name not in ("", "..") else checkpoint.resolve()
        return folder.parent / f"{folder.name}-eval"
    return checkpoint.parent / "eval"


def eval_output_for(checkpoint: str | Path, output: str | Path | None, exist_ok: bool) -> Path:
    """The evaluation folder: --output, else `default_eval_folder`, or its -2, -3, ... when
    that holds an evaluation and `exist_ok` is off.

    Raises:
        OutputRefused: an explicit --output already holds an evaluation and not `exist_ok`.
    """
    if output is None:
        default = default_eval_folder(checkpoint)
        return default if exist_ok else next_free_path(default, holds_evaluation)
    output = Path(output)
    if holds_evaluation(output) and not exist_ok:
        raise OutputRefused(f"{output} already holds an evaluation (metrics.json); pass "
                            "exist_ok to replace it or choose another output",
                            param=("exist_ok", "output"))
    return output


@dataclass
class EvalResult:
    """Outputs of `evaluate`, in loader order.

    Attributes:
        probabilities: (N,) positive-class probability for one logit, else (N, K) softmax,
            of the logits divided by `temperature`; a grading model's grade probabilities
            (N, K) (`grader`), (N, 0) for a grade regression, which has none.
        labels: (N,) int64 ground truth.
        loss: mean loss over samples (NaN when no loss function was given).
        logits: (N, 1) or (N, K) raw logits, when known.
        temperature: the temperature the probabilities were computed with.
        task: "ordinal" adds the grading metrics (quadratic kappa, MAE, the referable split
            at `referable_grade`); "multilabel": probabilities and labels are (N, L) and the
            metrics are per label (named `label_names`) and pooled; None or another task:
            the classification metrics only.
        grader: an ordinal task's reading of the logits (palm.predictions.Grader): grades,
            grade probabilities, expected grade and referable score.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    loss: float = math.nan
    logits: np.ndarray | None = None
    temperature: float = 1.0
    task: str | None = None
    referable_grade: int = M.REFERABLE_GRADE
    label_names: Sequence[str] = ()
    grader: P.Grader | None = None

    def __post_init__(self) -> None:
        if self.task == "ordinal" and self.grader is None:
            # grade probabilities given without their model read as a ce grader's, whose
            # softmax gives them back from their logarithms when no logits are given
            self.grader = P.Grader("ce", self.probabilities.shape[1], self.referable_grade)
            if self.logits is None:
                with np.errstate(divide="ignore"):
                    self.logits = np.log(np.asarray(self.probabilities, dtype=np.float64))

    @property
    def readout(self) -> P.GradeReadout:
        """The grader's reading of the logits (grading models only)."""
        return self.grader.readout(self.logits)

    def metrics(self, threshold: float = 0.5) -> dict[str, Any]:
        if self.task == "multilabel":
            names = list(self.label_names) or [str(j) for j in range(self.labels.shape[1])]
            metrics = M.multilabel_metrics(self.labels, self.probabilities, names, threshold)
            # all labels of an image right (scikit-learn's accuracy of label sets)
            metrics["accuracy"] = float(np.mean(
                ((self.probabilities >= threshold) == self.labels).all(axis=1)))
            return metrics
        if self.grader is None:
            return M.classification_metrics(self.labels, self.probabilities, threshold)
        readout = self.readout
        grading = M.grade_metrics(self.labels, readout.grades, self.grader.num_grades,
                                  readout.referable, self.grader.referable_grade,
                                  readout.referable_threshold)
        if readout.probabilities is None:  # a grade regression: the grades are all it says
            return grading
        return {**M.classification_metrics(self.labels, readout.probabilities, threshold),
                **grading}


@paddle.no_grad()
def evaluate(
    model: paddle.nn.Layer | Predictor,
    loader: paddle.io.DataLoader,
    loss_fn: Callable | None = None,
    temperature: float = 1.0,
    task: str | None = None,
    referable_grade: int = M.REFERABLE_GRADE,
    label_names: Sequence[str] = (),
    ordinal_loss: str = "ce",
    cut_points: Sequence[float] | None = None,
) -> EvalResult:
    """Run `model` in eval mode over `loader` (images, labels); restore its mode afterwards.
    `model` may also be an exported or INT8 predictor, which gets numpy batches
    (palm.engine.pipeline). `task`, `referable_grade` and `label_names` choose the metrics of
    the result (EvalResult); an ordinal task's outputs are read as `ordinal_loss` trained
    them (with a regression's `cut_points`; None: k - 0.5)."""
    multilabel = task == "multilabel"
    arrays = takes_arrays(model)
    was_training = not arrays and model.training
    if not arrays:
        model.eval()

    def batch_logits(batch: Sequence[paddle.Tensor]) -> paddle.Tensor | np.ndarray:
        return model.predict(batch[0].numpy()) if arrays else P.main_output(model(batch[0]))

    logits_seen, labels, loss_sum = [], [], 0.0
    try:
        for (_, batch_labels), logits in run_ahead(batch_logits, loader, runs_ahead(model)):
            if loss_fn is not None:
                loss_sum += float(loss_fn(paddle.to_tensor(logits) if arrays else logits,
                                          batch_labels)) * len(batch_labels)
            logits = np.asarray(logits, np.float32) if arrays else logits.astype("float32").numpy()
            logits_seen.append(logits)
            labels.append(batch_labels.numpy().reshape(len(logits), -1) if multilabel
                          else batch_labels.numpy().reshape(-1))
    finally:
        if was_training:
            model.train()
    if not labels:
        raise BadData("evaluate: the loader yielded no batches")
    labels_np = np.concatenate(labels).astype(np.int64)
    loss = loss_sum / len(labels_np) if loss_fn is not None else math.nan
    logits_np = np.concatenate(logits_seen)
    grader = None
    if task == "ordinal":
        grader = P.Grader(ordinal_loss, len(label_names) or logits_np.shape[1], referable_grade,
                          None if cut_points is None else tuple(cut_points), temperature)
    return EvalResult(grade_probabilities(logits_np, temperature, multilabel, grader), labels_np,
                      loss, logits_np, temperature, task, referable_grade, tuple(label_names),
                      grader)


def grade_probabilities(logits: np.ndarray, temperature: float, multilabel: bool,
                        grader: P.Grader | None) -> np.ndarray:
    """EvalResult.probabilities of `logits`: the grader's grade probabilities ((N, 0) for a
    grade regression), else palm.predictions.probabilities."""
    if grader is None:
        return P.probabilities(logits, temperature, multilabel)
    probabilities = grader.readout(logits).probabilities
    return np.zeros((len(logits), 0)) if probabilities is None else probabilities


# what eval, predict and the service say of an image whose logits hold a NaN or inf
NON_FINITE_OUTPUT = "the model's output for it is not finite (NaN or inf), so it has no probability"


def finite_rows(values: np.ndarray) -> np.ndarray:
    """(N,) bool: which rows of (N,) or (N, K) `values` are all finite."""
    return np.isfinite(np.asarray(values)).reshape(len(values), -1).all(axis=1)


def finite_probabilities(logits: np.ndarray, temperature: float = 1.0,
                         multilabel: bool = False) -> np.ndarray:
    """`palm.predictions.probabilities`, NaN on every row whose logits are not all finite: the
    sigmoid of an infinite logit would read as a certain 1.0 or 0.0."""
    probs = P.probabilities(logits, temperature, multilabel)
    probs[~finite_rows(logits)] = np.nan
    return probs


def without_non_finite(result: EvalResult, files: Sequence[str], skip_bad: bool,
                       loss_fn: Callable) -> tuple[EvalResult, list[str], list[str]]:
    """(`result` and `files` without the images whose output is not finite, "FILE: why" of
    each left out); BadData naming the first such image unless `skip_bad`."""
    bad = ~(finite_rows(result.logits) & finite_rows(result.probabilities))
    if not bad.any():
        return result, list(files), []
    names = [files[i] for i in np.flatnonzero(bad)]
    if not skip_bad or bad.all():
        more = f" (and {len(names) - 1} more images)" if len(names) > 1 else ""
        hint = ("" if bad.all() else "; --skip-bad leaves such images out")
        raise BadData(f"{names[0]}: {NON_FINITE_OUTPUT}{more}{hint}")
    keep = ~bad
    logits, labels = result.logits[keep], result.labels[keep]
    loss = float(loss_fn(paddle.to_tensor(logits), paddle.to_tensor(labels)))
    kept = EvalResult(result.probabilities[keep], labels, loss, logits, result.temperature,
                      result.task, result.referable_grade, result.label_names, result.grader)
    return kept, [f for f, k in zip(files, keep) if k], [f"{n}: {NON_FINITE_OUTPUT}" for n in names]


def predictions_frame(
    files: Sequence[str], result: EvalResult, class_names: Sequence[str], threshold: float
) -> pd.DataFrame:
    """One row per image in the `prediction_columns` schema (labelled).

    For one logit `probability` is P(positive class); for K classes `probability_<class>`
    holds each class's softmax probability; a grading model's are `grading_frame`'s.
    """
    if len(files) != len(result.labels):
        raise ValueError(f"{len(files)} file names for {len(result.labels)} predictions")
    if result.grader is not None:
        return grading_frame(files, result, class_names)
    binary = M.is_binary_output(result.probabilities)
    num_outputs = 1 if binary else result.probabilities.shape[1]
    pred = M.predict_labels(result.probabilities, threshold)
    names = list(class_names)
    frame = pd.DataFrame({P.PATH: list(files), P.LABEL: result.labels,
                          **P.probability_fields(result.probabilities, class_names),
                          P.PREDICTION: pred,
                          P.CLASS_NAME: [names[i] if i < len(names) else "" for i in pred],
                          P.ERROR: ""})
    return frame[P.prediction_columns(class_names, num_outputs, labelled=True)]


def grading_frame(files: Sequence[str], result: EvalResult,
                  class_names: Sequence[str]) -> pd.DataFrame:
    """`predictions_frame` of a grading model: its grade probabilities (none for a grade
    regression), expected grade (a regression's score) and grade, as its grader reads them."""
    readout, grader = result.readout, result.grader
    names = list(class_names)
    frame = pd.DataFrame({
        P.PATH: list(files), P.LABEL: result.labels,
        **(P.probability_fields(readout.probabilities, class_names)
           if readout.probabilities is not None else {}),
        P.EXPECTED_GRADE: readout.expected, P.PREDICTION: readout.grades,
        P.CLASS_NAME: [names[i] if i < len(names) else "" for i in readout.grades], P.ERROR: ""})
    return frame[P.prediction_columns(class_names, grader.num_grades, labelled=True,
                                      task="ordinal", ordinal_loss=grader.ordinal_loss)]


def json_ready(obj: Any) -> Any:
    """NaN/inf -> None, so metrics.json is strict JSON that any reader accepts."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def evidence(result: EvalResult, threshold: float, class_names: Sequence[str],
             ci_resamples: int = M.DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Intervals, operating points, calibration and class counts of `result` (metrics.json).

    `ci_resamples` 0 leaves out the intervals and the operating points' bootstrap.
    """
    binary = M.is_binary_output(result.probabilities)
    counts = np.bincount(result.labels, minlength=len(class_names) or 1)
    out: dict[str, Any] = {
        "class_counts": {str(name): int(n) for name, n in zip(class_names, counts)}
                        or {str(c): int(n) for c, n in enumerate(counts)}}
    if result.grader is not None and result.readout.probabilities is None:
        return {**out, **grading_evidence(result, ci_resamples, seed)}  # no probabilities
    if ci_resamples > 0:
        out["ci95"] = (M.binary_intervals(result.labels, result.probabilities, threshold,
                                          ci_resamples, seed) if binary else
                       M.multiclass_intervals(result.labels, result.probabilities, ci_resamples,
                                              seed))
        out["ci_method"] = M.ci_method(ci_resamples, seed)
        if result.grader is not None:
            grading = grading_evidence(result, ci_resamples, seed)
            out["ci95"].update(grading["ci95"])
            out["ci_method"].update(grading["ci_method"])
    if binary:
        out["operating_points"] = M.operating_points(result.labels, result.probabilities,
                                                     ci_resamples, seed)
    out["calibration"] = calibration_record(result)
    return out


def grading_evidence(result: EvalResult, ci_resamples: int, seed: int) -> dict[str, Any]:
    """{"ci95", "ci_method"} of the quadratic kappa, the referable AUC and the accuracy of a
    grading model's grades and referable score ({} when `ci_resamples` is 0); the accuracy's
    replaces the argmax's (a CORAL or regression grade is not the argmax)."""
    if ci_resamples <= 0:
        return {}
    readout = result.readout
    grading = M.grade_intervals(result.labels, readout.grades, result.grader.num_grades,
                                readout.referable, result.grader.referable_grade,
                                ci_resamples, seed)
    methods = {name: f"percentile bootstrap, {ci_resamples} resamples, seed {seed}"
               for name in grading}
    correct = int((readout.grades == result.labels).sum())
    grading["accuracy"] = list(M.wilson_interval(correct, len(result.labels)))
    return {"ci95": grading, "ci_method": {**methods, "accuracy": "wilson"}}


def calibration_record(result: EvalResult) -> dict[str, Any]:
    """ECE (equal-width and adaptive), MCE, Brier; with a temperature other than 1 also the
    same figures before it was applied."""
    record = M.calibration_errors(result.labels, result.probabilities)
    record["temperature"] = result.temperature
    if result.temperature != 1.0 and result.logits is not None:
        record["before_temperature"] = M.calibration_errors(
            result.labels, M.apply_temperature(result.logits))
    return record


def write_evaluation(
    result: EvalResult,
    files: Sequence[str],
    class_names: Sequence[str],
    threshold: float,
    output_dir: str | Path,
    extra: dict[str, Any] | None = None,
    ci_resamples: int = M.DEFAULT_RESAMPLES,
) -> dict[str, Any]:
    """Write metrics.json, predictions.csv, confusion_matrix.png, roc_curve.png, pr_curve.png,
    reliability_diagram.png.

    Returns:
        The metrics dict written to metrics.json (NaN as null), with `extra` merged in.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result.task == "multilabel":
        return write_multilabel_evaluation(result, files, class_names, threshold, out, extra,
                                           ci_resamples)
    extra = extra or {}
    one_logit = np.ndim(result.probabilities) == 1
    metrics = {**result.metrics(threshold), "class_names": list(class_names),
               "task": result.task or ("binary" if one_logit else "multiclass"),
               **evidence(result, threshold, class_names, ci_resamples)}
    clashes = sorted(set(metrics) & set(extra))
    if clashes:  # an extra key would silently replace a metric in metrics.json
        raise ValueError(f"extra keys {clashes} would overwrite metrics of the same name")
    metrics.update(extra)
    if not math.isnan(result.loss):
        metrics["loss"] = result.loss
    metrics = json_ready(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    write_csv_atomic(out / "predictions.csv",
                     predictions_frame(files, result, class_names, threshold))
    plots.plot_confusion_matrix(metrics["confusion_matrix"], class_names, out / "confusion_matrix.png")
    if result.probabilities.size == 0:  # a grade regression: no probability curves
        return metrics
    plots.plot_roc_curve(result.labels, result.probabilities, out / "roc_curve.png", class_names,
                         threshold if M.is_binary_output(result.probabilities) else None)
    plots.plot_pr_curve(result.labels, result.probabilities, out / "pr_curve.png", class_names)
    before = (M.apply_temperature(result.logits)
              if result.temperature != 1.0 and result.logits is not None else None)
    plots.plot_reliability_diagram(result.labels, result.probabilities,
                                   out / "reliability_diagram.png", uncalibrated=before)
    return metrics


def write_multilabel_evaluation(result: EvalResult, files: Sequence[str],
                                label_names: Sequence[str], threshold: float | np.ndarray,
                                out: Path, extra: dict[str, Any] | None,
                                ci_resamples: int) -> dict[str, Any]:
    """metrics.json (per label and pooled, with intervals), predictions.csv (a probability
    and a decision per label) and roc_curve.png (one panel per label) of a multi-label model."""
    metrics = {**result.metrics(threshold), "task": "multilabel", "class_names": list(label_names)}
    if ci_resamples > 0:
        metrics["ci95"] = M.multilabel_intervals(result.labels, result.probabilities,
                                                 ci_resamples)
        metrics["ci_method"] = {"roc_auc_per_label": f"stratified percentile bootstrap, "
                                f"{ci_resamples} resamples, seed 0",
                                "macro_roc_auc": f"percentile bootstrap of images, "
                                f"{ci_resamples} resamples, seed 0"}
    clashes = sorted(set(metrics) & set(extra or {}))
    if clashes:
        raise ValueError(f"extra keys {clashes} would overwrite metrics of the same name")
    metrics.update(extra or {})
    if not math.isnan(result.loss):
        metrics["loss"] = result.loss
    metrics = json_ready(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    cuts = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(label_names),))
    write_csv_atomic(out / "predictions.csv", P.multilabel_frame(
        files, result.probabilities, cuts, label_names, result.labels))
    plots.plot_multilabel_roc(result.labels, result.probabilities, label_names,
                              out / "roc_curve.png")
    return metrics


def choose_threshold(result: EvalResult, meta: dict[str, Any], threshold: float | None,
                     tune: bool) -> tuple[float | np.ndarray, str]:
    """(threshold, where it came from): Youden J on this data, the command line, or the
    checkpoint (its `threshold_source` when recorded, e.g. an operating point). A multi-label
    model has one per label: the checkpoint's `thresholds` when stored (`label_thresholds`)."""
    if result.task == "multilabel":
        if tune:
            return M.tuned_thresholds(result.labels, result.probabilities), "youden_j per label"
        if threshold is not None:
            return float(threshold), "command_line"
        return label_thresholds(meta)
    if result.grader is not None and result.grader.ordinal_loss != "ce":
        return 0.5, f"none (grades of ordinal_loss {result.grader.ordinal_loss})"
    if not M.is_binary_output(result.probabilities):
        return 0.5, "argmax (multi-class)"
    if tune:
        return M.youden_threshold(result.labels, result.probabilities), "youden_j"
    if threshold is not None:
        return float(threshold), "command_line"
    return decision_threshold(meta)


def with_referable_grade(meta: dict[str, Any], referable_grade: int | None) -> dict[str, Any]:
    """`meta` with `referable_grade` in place of its own (None: unchanged).

    Raises:
        BadConfig: not a grading model, or not a grade 1..K-1 of it.
    """
    if referable_grade is None:
        return meta
    if meta.get("task") != "ordinal":
        raise BadConfig(f"referable_grade applies to grading (ordinal) models; this one is "
                        f"{meta.get('task') or 'not one'}", param="referable_grade")
    grades = len(meta.get("class_names") or []) or int(meta["num_classes"])
    if isinstance(referable_grade, bool) or not 1 <= referable_grade <= grades - 1:
        raise BadConfig(f"referable_grade must be a grade 1..{grades - 1} of this model, not "
                        f"{referable_grade}", param="referable_grade")
    return {**meta, "referable_grade": int(referable_grade)}


def evaluate_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    val_dir: str | Path | None = None,
    val_csv: str | Path | None = None,
    threshold: float | None = None,
    tune_threshold: bool = False,
    batch_size: int = 16,
    num_workers: int = 0,
    skip_bad: bool = False,
    cache_dir: str | Path | None = None,
    engine: str = "auto",
    precision: str | None = None,
    cache_size_gb: float | None = None,
    max_pixels: int | None = None,
    allow_outside_paths: bool = False,
    positive_class: str | None = None,
    ci_resamples: int = M.DEFAULT_RESAMPLES,
    fit_temperature: bool = False,
    operating_point: str | None = None,
    referable_grade: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate a saved checkpoint on labelled data and write the evaluation files.

    OUTPUT_DIR is rewritten whole (`EVAL_OUTPUTS`, palm.io_utils.replace_outputs): files of
    an earlier evaluation there that this one does not write are removed.

    The model, preprocessing and class names come from the checkpoint's sidecar JSON.
    `checkpoint` may also be a tools/export.py folder; `engine` is as in
    `palm.engine.inference.load_predictor`; `precision` "bf16" runs the inference engine
    in bfloat16 (CPU), "int8" a quantized folder's INT8 model (its default). `fit_temperature`
    / `operating_point` first calibrate the checkpoint on its selection images
    (`calibrate_checkpoint`). `referable_grade` replaces a grading model's own for this
    evaluation.

    Returns:
        The metrics written to OUTPUT_DIR/metrics.json.
    """
    meta = with_referable_grade(source_meta(checkpoint), referable_grade)
    task = meta.get("task")
    if task == "multilabel" and fit_temperature:
        raise BadConfig("fit_temperature applies to one-label models; this one is multi-label",
                        param="fit_temperature")
    if fit_temperature or operating_point:
        meta = calibrate_checkpoint(checkpoint, meta, fit_temperature, operating_point, log)
    transform = eval_transform(meta)
    class_names = meta.get("class_names") or None
    dataset = sources.evaluation_set(transform=transform, classes=class_names, data_root=data_root,
                                     val_dir=val_dir, val_csv=val_csv, skip_bad=skip_bad,
                                     cache_dir=cache_dir, cache_size_gb=cache_size_gb,
                                     max_pixels=max_pixels,
                                     allow_outside_paths=allow_outside_paths,
                                     positive_class=positive_class,
                                     multilabel=task == "multilabel")
    class_names = class_names or list(dataset.classes)
    if sources.num_outputs_for(class_names, task) != meta["num_classes"]:
        raise BadCheckpoint(f"{checkpoint}: {meta['num_classes']} output(s) do not fit classes {class_names}")
    predictor = load_predictor(checkpoint, engine=engine, n_images=len(dataset),
                               precision=precision)
    model = batch_model(predictor)
    loader = build_loader(dataset, batch_size, train=False, num_workers=num_workers)
    loss_fn = training_loss(meta["num_classes"], P.ordinal_loss_of(meta),
                            multilabel=task == "multilabel")
    result = evaluate(model, loader, loss_fn, float(meta.get("temperature", 1.0)), task,
                      int(meta.get("referable_grade", M.REFERABLE_GRADE)), class_names,
                      P.ordinal_loss_of(meta), meta.get("cut_points"))
    result, files, non_finite = without_non_finite(result, [path for path, _ in dataset.samples],
                                                   skip_bad, loss_fn)
    thr, source = choose_threshold(result, meta, threshold, tune_threshold)
    status, why = selection_status(checkpoint, meta, files, tune_threshold)
    extra = {"checkpoint": str(checkpoint), "engine": predictor.engine,
             "compute_precision": predictor.precision, "threshold_source": source,
             "positive_class": sources.positive_class_of(class_names),
             "selection": status, "selection_detail": why,
             "dataset": _dataset_name(data_root, val_dir, val_csv),
             "provenance": provenance(paddle.device.get_device(), files),
             "skipped": [f"{where}: {why}" for where, why in dataset.skipped] + non_finite}
    with replace_outputs(output_dir, EVAL_OUTPUTS) as staging:
        metrics = write_evaluation(result, files, class_names, thr, staging, extra, ci_resamples)
    if "confusion_matrix" in metrics:
        log(confusion_text(metrics["confusion_matrix"], class_names))
    log(evaluation_summary(metrics) + f" -> {output_dir}")
    return metrics


def _dataset_name(data_root: str | Path | None, val_dir: str | Path | None,
                  val_csv: str | Path | None) -> str:
    """What was evaluated, as the report names it."""
    if val_csv:
        return f"{val_csv} (list)" + (f" in {data_root}" if data_root else "")
    if val_dir:
        return f"{val_dir} (class folders)"
    return f"{data_root} (PALM validation split)"
