"""Evaluation: probabilities for a labelled loader, and the files `tools/eval.py` writes.

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
import paddle.nn.functional as F

from palm import metrics as M
from palm.data import build_loader, build_transform
from palm.engine import sources
from palm.engine.inference import as_layer, load_predictor, source_meta
from palm.engine.losses import ClassificationLoss
from palm.errors import OutputRefused
from palm.io_utils import atomic_path, next_free_path, replace_outputs, write_json_atomic
from palm.runtime import provenance
from palm.viz import plots


# Every file an evaluation folder may hold; a new evaluation removes those it does not write
# again (an earlier --report's report.html, say), so the folder never mixes two runs.
EVAL_OUTPUTS = ("metrics.json", "predictions.csv", "confusion_matrix.png", "roc_curve.png",
                "pr_curve.png", "report.html")


def holds_evaluation(folder: Path) -> bool:
    return (folder / "metrics.json").exists()


def eval_output_for(checkpoint: str | Path, output: str | Path | None, exist_ok: bool) -> Path:
    """The evaluation folder: --output, else CHECKPOINT_FOLDER/eval, or eval-2, -3, ... when
    that holds an evaluation and `exist_ok` is off.

    Raises:
        OutputRefused: an explicit --output already holds an evaluation and not `exist_ok`.
    """
    if output is None:
        default = Path(checkpoint).parent / "eval"
        return default if exist_ok else next_free_path(default, holds_evaluation)
    output = Path(output)
    if holds_evaluation(output) and not exist_ok:
        raise OutputRefused(f"{output} already holds an evaluation (metrics.json); pass "
                            "--exist-ok to replace it or choose another --output")
    return output


@dataclass
class EvalResult:
    """Outputs of `evaluate`, in loader order.

    Attributes:
        probabilities: (N,) positive-class probability for one logit, else (N, K) softmax.
        labels: (N,) int64 ground truth.
        loss: mean loss over samples (NaN when no loss function was given).
    """

    probabilities: np.ndarray
    labels: np.ndarray
    loss: float = math.nan

    def metrics(self, threshold: float = 0.5) -> dict[str, Any]:
        return M.classification_metrics(self.labels, self.probabilities, threshold)


def main_output(outputs: paddle.Tensor | Sequence[paddle.Tensor]) -> paddle.Tensor:
    """The main logits of a model that may also return auxiliary heads (GoogLeNet)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def to_probabilities(logits: paddle.Tensor) -> paddle.Tensor:
    """Sigmoid of a single logit -> (N,), softmax over K logits -> (N, K)."""
    if logits.shape[-1] == 1:
        return F.sigmoid(logits.reshape([-1]))
    return F.softmax(logits, axis=-1)


@paddle.no_grad()
def evaluate(
    model: paddle.nn.Layer,
    loader: paddle.io.DataLoader,
    loss_fn: Callable | None = None,
) -> EvalResult:
    """Run `model` in eval mode over `loader` (images, labels); restore its mode afterwards."""
    was_training = model.training
    model.eval()
    probs, labels, loss_sum = [], [], 0.0
    try:
        for images, batch_labels in loader:
            logits = main_output(model(images))
            if loss_fn is not None:
                loss_sum += float(loss_fn(logits, batch_labels)) * len(batch_labels)
            probs.append(to_probabilities(logits.astype("float32")).numpy())
            labels.append(batch_labels.numpy().reshape(-1))
    finally:
        if was_training:
            model.train()
    if not labels:
        raise ValueError("evaluate: the loader yielded no batches")
    labels_np = np.concatenate(labels).astype(np.int64)
    loss = loss_sum / len(labels_np) if loss_fn is not None else math.nan
    return EvalResult(np.concatenate(probs), labels_np, loss)


def probability_columns(class_names: Sequence[str], num_outputs: int) -> list[str]:
    """`probability` (of the positive class) for one logit, else `probability_<class>` each."""
    if num_outputs == 1:
        return ["probability"]
    names = list(class_names) if len(class_names) == num_outputs else range(num_outputs)
    return [f"probability_{name}" for name in names]


def prediction_columns(class_names: Sequence[str], num_outputs: int, labelled: bool) -> list[str]:
    """The one predictions.csv schema of eval (labelled) and predict:
    path, [label], probability / probability_<class>..., prediction, class_name, error."""
    return ["path", *(["label"] if labelled else []),
            *probability_columns(class_names, num_outputs), "prediction", "class_name", "error"]


def predictions_frame(
    files: Sequence[str], result: EvalResult, class_names: Sequence[str], threshold: float
) -> pd.DataFrame:
    """One row per image in the `prediction_columns` schema (labelled).

    For one logit `probability` is P(positive class); for K classes `probability_<class>`
    holds each class's softmax probability.
    """
    if len(files) != len(result.labels):
        raise ValueError(f"{len(files)} file names for {len(result.labels)} predictions")
    binary = M.is_binary_output(result.probabilities)
    num_outputs = 1 if binary else result.probabilities.shape[1]
    pred = M.predict_labels(result.probabilities, threshold)
    columns = prediction_columns(class_names, num_outputs, labelled=True)
    probs = result.probabilities.reshape(len(files), -1)
    names = list(class_names)
    frame = pd.DataFrame({"path": list(files), "label": result.labels})
    for c, column in enumerate(probability_columns(class_names, num_outputs)):
        frame[column] = probs[:, c]
    frame["prediction"] = pred
    frame["class_name"] = [names[i] if i < len(names) else "" for i in pred]
    frame["error"] = ""
    return frame[columns]


def confusion_text(cm: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """The confusion matrix as an aligned text table (rows: truth, columns: prediction)."""
    frame = pd.DataFrame(cm, index=[f"true {n}" for n in class_names],
                         columns=[f"pred {n}" for n in class_names])
    return frame.to_string()


def json_ready(obj: Any) -> Any:
    """NaN/inf -> None, so metrics.json is strict JSON that any reader accepts."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_evaluation(
    result: EvalResult,
    files: Sequence[str],
    class_names: Sequence[str],
    threshold: float,
    output_dir: str | Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, predictions.csv, confusion_matrix.png, roc_curve.png, pr_curve.png.

    Returns:
        The metrics dict written to metrics.json (NaN as null), with `extra` merged in.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    metrics = {**result.metrics(threshold), "class_names": list(class_names)}
    clashes = sorted(set(metrics) & set(extra))
    if clashes:  # an extra key would silently replace a metric in metrics.json
        raise ValueError(f"extra keys {clashes} would overwrite metrics of the same name")
    metrics.update(extra)
    if not math.isnan(result.loss):
        metrics["loss"] = result.loss
    metrics = json_ready(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    with atomic_path(out / "predictions.csv") as tmp:
        predictions_frame(files, result, class_names, threshold).to_csv(tmp, index=False)
    plots.plot_confusion_matrix(metrics["confusion_matrix"], class_names, out / "confusion_matrix.png")
    plots.plot_roc_curve(result.labels, result.probabilities, out / "roc_curve.png", class_names,
                         threshold if M.is_binary_output(result.probabilities) else None)
    plots.plot_pr_curve(result.labels, result.probabilities, out / "pr_curve.png", class_names)
    return metrics


def choose_threshold(result: EvalResult, meta: dict[str, Any], threshold: float | None,
                     tune: bool) -> tuple[float, str]:
    """(threshold, where it came from): Youden J on this data, the command line, or the checkpoint."""
    if not M.is_binary_output(result.probabilities):
        return 0.5, "argmax (multi-class)"
    if tune:
        return M.youden_threshold(result.labels, result.probabilities), "youden_j"
    if threshold is not None:
        return float(threshold), "command_line"
    return float(meta.get("threshold", 0.5)), "checkpoint"


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
    precision: str = "fp32",
    cache_size_gb: float | None = None,
    max_pixels: int | None = None,
    allow_outside_paths: bool = False,
    positive_class: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate a saved checkpoint on labelled data and write the evaluation files.

    OUTPUT_DIR is rewritten whole (`EVAL_OUTPUTS`, palm.io_utils.replace_outputs): files of
    an earlier evaluation there that this one does not write are removed.

    The model, preprocessing and class names come from the checkpoint's sidecar JSON.
    `checkpoint` may also be a tools/export.py folder; `engine` is as in
    `palm.engine.inference.load_predictor`; `precision` "bf16" runs the inference engine
    in bfloat16 (CPU).

    Returns:
        The metrics written to OUTPUT_DIR/metrics.json.
    """
    meta = source_meta(checkpoint)
    transform = build_transform(meta["image_size"], False, meta.get("normalize", "minus_one_one"),
                                fundus_crop=meta.get("fundus_crop", False))
    class_names = meta.get("class_names") or None
    dataset = sources.evaluation_set(transform=transform, classes=class_names, data_root=data_root,
                                     val_dir=val_dir, val_csv=val_csv, skip_bad=skip_bad,
                                     cache_dir=cache_dir, cache_size_gb=cache_size_gb,
                                     max_pixels=max_pixels,
                                     allow_outside_paths=allow_outside_paths,
                                     positive_class=positive_class)
    class_names = class_names or list(dataset.classes)
    if sources.num_outputs_for(class_names) != meta["num_classes"]:
        raise ValueError(f"{checkpoint}: {meta['num_classes']} output(s) do not fit classes {class_names}")
    predictor = load_predictor(checkpoint, engine=engine, n_images=len(dataset),
                               precision=precision)
    model = as_layer(predictor)
    loader = build_loader(dataset, batch_size, train=False, num_workers=num_workers)
    result = evaluate(model, loader, ClassificationLoss(meta["num_classes"]))
    thr, source = choose_threshold(result, meta, threshold, tune_threshold)
    files = [path for path, _ in dataset.samples]
    counts = np.bincount(result.labels, minlength=len(class_names))
    extra = {"checkpoint": str(checkpoint), "engine": predictor.engine,
             "compute_precision": predictor.precision, "threshold_source": source,
             "positive_class": sources.positive_class_of(class_names),
             "dataset": _dataset_name(data_root, val_dir, val_csv),
             "class_counts": {str(name): int(n) for name, n in zip(class_names, counts)},
             "provenance": provenance(paddle.device.get_device(), files),
             "skipped": [f"{where}: {why}" for where, why in dataset.skipped]}
    with replace_outputs(output_dir, EVAL_OUTPUTS) as staging:
        metrics = write_evaluation(result, files, class_names, thr, staging, extra)
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


def evaluation_summary(metrics: dict[str, Any]) -> str:
    """One line: n, accuracy, AUC, sensitivity/specificity (binary) or macro F1, threshold."""
    def fmt(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    parts = [f"{metrics['n']} images", f"accuracy {fmt('accuracy')}", f"AUC {fmt('roc_auc')}"]
    if "sensitivity" in metrics:
        parts += [f"sensitivity {fmt('sensitivity')}", f"specificity {fmt('specificity')}",
                  f"threshold {metrics['threshold']:.4f} ({metrics['threshold_source']})"]
    else:
        parts.append(f"macro F1 {fmt('f1')}")
    return ", ".join(parts)
