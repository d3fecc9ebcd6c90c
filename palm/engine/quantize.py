"""Post-training INT8 quantization, validated on labelled data before it is installed.

`quantize_to_folder` takes a checkpoint or an export folder, converts its Paddle Inference
program to ONNX (paddle2onnx), quantizes it statically with NNCF (activation ranges from N
calibration images), and compares the fp32 predictor and the INT8 model on labelled
images: the task's metrics (`TASK_METRICS`: AUC, accuracy, sensitivity and specificity of a
binary model; macro AUC and accuracy of a multi-class one; quadratic kappa and the share of
grades INT8 gives as fp32 does of an ordinal one; macro AUC and each label's AUC drop of a
multi-label one) and images/s of both, measured batch by batch alternately over the same
data. When the task's metric (the first) drops by more than `max_metric_drop` it refuses,
unless forced. The folder it writes is an ordinary export (model.json,
model.pdiparams) plus model_int8.xml/.bin, with palm_meta.json's "int8" record holding the
file hashes and the validation; predict/eval run the INT8 model by default.

Why OpenVINO + NNCF: on the 2-core AVX2 CPU (no VNNI) it was the fastest of the three INT8
paths measured side by side, with logits close to fp32's; Paddle's own oneDNN INT8
(PostTrainingQuantization, legacy program format only) was slower with logits far from
fp32's, and ONNX Runtime's static quantization was no faster than fp32 (its u8s8 kernels
need VNNI to pay). The README's INT8 section has the figures.

Writes are all or nothing, as in `palm.engine.export`: everything is built and validated
in a hidden staging folder inside the output folder; palm_meta.json moves in last.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import paddle

from palm import metrics as M
from palm import predictions as P
from palm.data import FileImageSet, build_loader, eval_transform
from palm.engine.checkpoint import (decision_threshold, label_thresholds, load_checkpoint_model,
                                    load_meta)
from palm.engine.evaluate import EvalResult, grade_probabilities
from palm.engine.export import INT8_FILES, META_NAME, MODEL_NAME, STAGE_PREFIX, export_model
from palm.engine.inference import (INT8_META_KEY, InferencePredictor, OpenVINOPredictor,
                                   exported_files, is_exported, load_export_meta)
from palm.errors import BadCheckpoint, BadConfig, BadData, OutputRefused, UserError
from palm.io_utils import write_json_atomic
from palm.models import is_transformer
from palm.weights import file_sha256

INT8_MODEL = INT8_FILES[0]  # OpenVINO IR; its weights are INT8_FILES[1]
# what a quantized folder holds: the export, its INT8 model, and the lock of palm's tools
EXPORT_FILES = (META_NAME, f"{MODEL_NAME}.json", f"{MODEL_NAME}.pdmodel",
                f"{MODEL_NAME}.pdiparams", *INT8_FILES, ".lock")
DEFAULT_CALIB_IMAGES = 200
DEFAULT_MAX_METRIC_DROP = 0.005
# per task: the metric whose drop refuses an INT8 model, then the figures shown beside it
TASK_METRICS = {
    "binary": ("roc_auc", "accuracy", "sensitivity", "specificity"),
    "multiclass": ("macro_roc_auc", "accuracy", "macro_f1"),
    "ordinal": ("qwk", "accuracy", "mae", "referable_roc_auc"),
    "multilabel": ("macro_roc_auc", "micro_roc_auc", "map"),
}


class QuantizationRefused(UserError, RuntimeError):
    """The INT8 model lost more of its task's metric than allowed; nothing was written."""


@dataclass
class Comparison:
    """fp32 and INT8 on the same labelled images.

    `fp32`, `int8`: the task's figures (`TASK_METRICS`; a multi-label model's also
    `roc_auc_<label>`); `metric`: the one whose drop is checked; `agreement`: how the two
    models' decisions agree (the share of images with the same class or grade; for a
    multi-label model each label's AUC drop and the worst label).
    """

    fp32: dict[str, Any]
    int8: dict[str, Any]
    max_probability_diff: float
    speed: dict[str, float] = field(default_factory=dict)
    metric: str = "roc_auc"
    agreement: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_drop(self) -> float:
        return float(self.fp32[self.metric]) - float(self.int8[self.metric])

    def record(self) -> dict[str, Any]:
        return {"metric": self.metric, "fp32": self.fp32, "int8": self.int8,
                "metric_drop": self.metric_drop, **self.agreement,
                "max_probability_diff": self.max_probability_diff, "img_per_s": self.speed}

    def table(self) -> str:
        """fp32 and INT8 side by side, one figure a line; the checked metric is marked."""
        lines = [f"{'':22s}{'fp32':>10s}{'int8':>10s}"]
        for key, value in self.fp32.items():
            if key not in ("n", "threshold"):
                mark = " (checked)" if key == self.metric else ""
                lines.append(f"{key:22s}{value:10.4f}{self.int8[key]:10.4f}{mark}")
        lines.append(f"{'img/s':22s}{self.speed['fp32']:10.2f}{self.speed['int8']:10.2f}")
        if "prediction_agreement" in self.agreement:
            what = "grade" if self.metric == "qwk" else "class"
            lines.append(f"same {what} as fp32: {self.agreement['prediction_agreement']:.4f}")
        if self.agreement.get("worst_label"):
            worst = self.agreement["worst_label"]
            lines.append(f"worst label: {worst} (AUC drop "
                         f"{self.agreement['label_auc_drop'][worst]:+.4f})")
        return "\n".join(lines)


def export_onnx(export_dir: Path, onnx_file: Path) -> Path:
    """Convert an export folder's Paddle program to ONNX with paddle2onnx.

    In a child process: the converter prints pages of messages and is young code, so a
    crash there costs a one-line error, not the caller.
    """
    program, params = exported_files(export_dir)
    code = ("import sys, paddle2onnx; paddle2onnx.export(sys.argv[1], sys.argv[2], "
            "save_file=sys.argv[3])")
    run = subprocess.run([sys.executable, "-c", code, str(program), str(params), str(onnx_file)],
                         capture_output=True, text=True)
    if run.returncode != 0 or not onnx_file.is_file():
        last = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1][:200]
        raise BadCheckpoint(f"{export_dir}: paddle2onnx could not convert the model ({last})")
    return onnx_file


def quantize_onnx(onnx_file: Path, calibration: Sequence[np.ndarray], output_xml: Path,
                  transformer: bool = False) -> Path:
    """Static INT8 quantization of `onnx_file` with NNCF; writes OpenVINO IR (.xml + .bin).

    Args:
        calibration: preprocessed images, each (1, 3, H, W) float32; activation ranges are
            taken from them.
        transformer: a Vision Transformer: NNCF's transformer scheme (SmoothQuant; LayerNorm,
            softmax and GELU left in float), which its documentation asks for such models.
    """
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_file))
    quantized = nncf.quantize(model, nncf.Dataset(list(calibration)),
                              subset_size=len(calibration),
                              model_type=nncf.ModelType.TRANSFORMER if transformer else None)
    ov.save_model(quantized, str(output_xml))
    return output_xml


def calibration_images(paths: Sequence[str], meta: dict[str, Any], n: int,
                       seed: int = 0) -> list[np.ndarray]:
    """Up to `n` of `paths` (a seeded random choice), preprocessed as the model expects,
    each (1, 3, H, W); unreadable files are left out."""
    paths = sorted(paths)
    if len(paths) > n:
        chosen = np.random.default_rng(seed).choice(len(paths), n, replace=False)
        paths = [paths[i] for i in sorted(chosen)]
    images = FileImageSet(paths, eval_transform(meta), int(meta["image_size"]))
    read = [images[i] for i in range(len(images))]
    batches = [image[None] for image, _, error in read if not error]
    if not batches:
        first = read[0][2] if read else "none given"
        raise BadData(f"none of the {len(paths)} calibration images could be read "
                      f"({paths[0] + ': ' if paths else ''}{first})")
    return batches


def model_task(meta: dict[str, Any]) -> str:
    """The sidecar's task; a checkpoint saved before tasks were recorded is binary (one
    logit) or multi-class."""
    if meta.get("task") in ("ordinal", "multilabel"):
        return meta["task"]
    return "binary" if int(meta["num_classes"]) == 1 else "multiclass"


def compare(fp32: Any, int8: Any, dataset: paddle.io.Dataset, meta: dict[str, Any],
            batch_size: int = 8, num_workers: int = 0) -> Comparison:
    """The task's metrics and the speed of two predictors on a labelled dataset.

    Each batch runs through both, alternately, so the speed ratio is measured under the same
    load even on a shared machine; one warm-up batch each is not timed.
    """
    loader = build_loader(dataset, batch_size, train=False, num_workers=num_workers)
    logits: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    seconds = {"fp32": 0.0, "int8": 0.0}
    labels, warm = [], False
    for images, batch_labels in loader:
        batch = images.numpy()
        for name, predictor in (("fp32", fp32), ("int8", int8)):
            if not warm:
                predictor.predict(batch)
            start = time.perf_counter()
            logits[name].append(predictor.predict(batch))
            seconds[name] += time.perf_counter() - start
        warm = True
        labels.append(batch_labels.numpy())
    task = model_task(meta)
    y = np.concatenate(labels).astype(np.int64)
    y = y.reshape(len(y), -1) if task == "multilabel" else y.reshape(-1)
    results = {name: _evaluated(np.concatenate(out), y, meta) for name, out in logits.items()}
    p32, p8 = (_compared_outputs(results[name]) for name in ("fp32", "int8"))
    return Comparison(task_figures(results["fp32"], meta), task_figures(results["int8"], meta),
                      float(np.max(np.abs(p32 - p8))),
                      {name: len(y) / s for name, s in seconds.items()},
                      TASK_METRICS[task][0], _agreement(results["fp32"], results["int8"], meta))


def _evaluated(logits: np.ndarray, labels: np.ndarray, meta: dict[str, Any]) -> EvalResult:
    """Logits as eval reads them: its probabilities (palm.predictions; a grader's through
    its Grader: CORAL's cumulative logits, a regression's score and cut-points) and task."""
    task = meta.get("task")
    grader = P.Grader.from_meta(meta)
    probs = grade_probabilities(logits, float(meta.get("temperature", 1.0)),
                                task == "multilabel", grader)
    return EvalResult(probs, labels, logits=logits, task=task,
                      referable_grade=int(meta.get("referable_grade", M.REFERABLE_GRADE)),
                      label_names=list(meta.get("class_names") or []), grader=grader)


def _compared_outputs(result: EvalResult) -> np.ndarray:
    """What the two models' largest difference is measured on: probabilities, or the score
    of a grade regression, which has none (a difference in grades)."""
    if result.grader is not None and result.readout.probabilities is None:
        return result.readout.expected
    return result.probabilities


def task_figures(result: EvalResult, meta: dict[str, Any]) -> dict[str, Any]:
    """The figures `TASK_METRICS` names for the model's task (eval's metrics, at eval's
    thresholds), with n (and a binary model's threshold)."""
    task = model_task(meta)
    if task == "multilabel":
        metrics = result.metrics(label_thresholds(meta)[0])
        per_label = {f"roc_auc_{name}": row["roc_auc"]
                     for name, row in metrics["per_label"].items()}
        return {**{k: metrics[k] for k in TASK_METRICS[task]}, **per_label, "n": metrics["n"]}
    threshold = decision_threshold(meta)[0]
    metrics = result.metrics(threshold)
    # one-vs-rest over the classes (a grade regression has no class probabilities: NaN)
    metrics["macro_roc_auc"] = metrics.get("roc_auc", math.nan)
    metrics["macro_f1"] = metrics.get("f1")
    if task == "ordinal":
        metrics["referable_roc_auc"] = metrics["referable"]["roc_auc"]
    figures = {k: metrics[k] for k in TASK_METRICS[task]}
    return {**figures, "n": metrics["n"], **({"threshold": threshold} if task == "binary" else {})}


def _agreement(fp32: EvalResult, int8: EvalResult, meta: dict[str, Any]) -> dict[str, Any]:
    """How INT8's decisions follow fp32's: the share of images given the same class (grade);
    a multi-label model's AUC drop per label and the label that lost most."""
    task = model_task(meta)
    if task == "binary":
        return {}
    if task != "multilabel":
        same = _decisions(fp32) == _decisions(int8)
        return {"prediction_agreement": float(np.mean(same))}
    names = list(meta.get("class_names") or [])
    before, after = task_figures(fp32, meta), task_figures(int8, meta)
    drops = {name: before[f"roc_auc_{name}"] - after[f"roc_auc_{name}"] for name in names}
    defined = {name: d for name, d in drops.items() if np.isfinite(d)}
    return {"label_auc_drop": drops,
            "worst_label": max(defined, key=defined.get) if defined else None}


def _decisions(result: EvalResult) -> np.ndarray:
    """The class of each image, or a grader's grade (CORAL's and a regression's are not the
    argmax of probabilities)."""
    if result.grader is not None:
        return result.readout.grades
    return result.probabilities.argmax(axis=1)


def quantize_to_folder(
    source: str | Path,
    output_dir: str | Path,
    calibration_paths: Sequence[str],
    validation_set: Callable[[dict[str, Any]], paddle.io.Dataset],
    *,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    max_metric_drop: float = DEFAULT_MAX_METRIC_DROP,
    force: bool = False,
    batch_size: int = 8,
    num_workers: int = 0,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Quantize a checkpoint or export folder to INT8, validate it, write `output_dir`.

    Args:
        calibration_paths: image files to draw `calib_images` calibration images from.
        validation_set: builds the labelled dataset from the model's meta (its preprocessing
            and class names).
        max_metric_drop: largest allowed fp32 minus INT8 value of the task's metric on the
            validation set (`TASK_METRICS`: AUC of a binary model, macro AUC of a
            multi-class or multi-label one, quadratic kappa of an ordinal one).
        force: write the model even when the drop is larger (the record says so).

    Returns:
        The comparison that was written into palm_meta.json.

    Raises:
        QuantizationRefused: the metric dropped too much (or is undefined); nothing written.
    """
    source, output_dir = Path(source), Path(output_dir)
    _check_packages()
    if is_exported(source):
        exported_files(source)  # a changed or foreign program is refused before any write
    check_output_folder(output_dir)
    # a mistake in the validation data is found before minutes of calibration
    dataset = validation_set(_source_meta(source))
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(f"{STAGE_PREFIX}*"):  # staging of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=STAGE_PREFIX, dir=output_dir) as stage_name, \
            tempfile.TemporaryDirectory(prefix="palm-onnx-") as onnx_dir:
        stage = Path(stage_name)
        _fp32_export(source, stage)
        meta = load_export_meta(stage)
        log(f"converting {source} to ONNX and calibrating on up to {calib_images} images")
        calibration = calibration_images(calibration_paths, meta, calib_images)
        onnx_file = export_onnx(stage, Path(onnx_dir) / "model.onnx")
        quantize_onnx(onnx_file, calibration, stage / INT8_MODEL,
                      transformer=is_transformer(meta["model"]))
        log(f"validating fp32 against INT8 on {len(dataset)} labelled images")
        result = compare(InferencePredictor(stage),
                         OpenVINOPredictor(stage, model_file=stage / INT8_MODEL), dataset,
                         meta, batch_size, num_workers)
        log(result.table())
        check_drop(result, max_metric_drop, force)
        meta[INT8_META_KEY] = {
            "format": "openvino-ir", "engine": "openvino+nncf", "model_file": INT8_MODEL,
            "sha256": {name: file_sha256(stage / name) for name in INT8_FILES},
            "calibration_images": len(calibration), "metric": result.metric,
            "max_metric_drop": max_metric_drop,
            "forced": bool(force and not result.metric_drop <= max_metric_drop),
            "validation": result.record(), **_versions(),
        }
        write_json_atomic(stage / META_NAME, meta)
        (output_dir / META_NAME).unlink(missing_ok=True)  # not an export until complete
        for path in sorted(stage.iterdir(), key=lambda p: p.name == META_NAME):
            os.replace(path, output_dir / path.name)
    return result


def check_output_folder(folder: Path) -> None:
    """Refuse an output folder holding files that are not a palm export's: the quantized
    model would be installed among them, and its files could replace theirs.

    Raises:
        OutputRefused: naming the first such file.
    """
    if not folder.is_dir():
        return
    foreign = sorted(p for p in folder.iterdir()
                     if p.name not in EXPORT_FILES and not p.name.startswith(STAGE_PREFIX))
    if foreign:
        raise OutputRefused(f"{foreign[0]}: not a file of a palm export; give an output "
                            "folder that is new, empty or an earlier export", param="output")


def _source_meta(source: Path) -> dict[str, Any]:
    """The sidecar of a checkpoint or export folder (preprocessing and classes)."""
    return load_export_meta(source) if is_exported(source) else load_meta(source)


def _fp32_export(source: Path, stage: Path) -> None:
    """The fp32 export of `source` in `stage`: copied (hashes checked) or exported afresh."""
    if is_exported(source):
        for path in exported_files(source) + (source / META_NAME,):
            shutil.copy2(path, stage / path.name)
        meta = load_export_meta(stage)
        meta.pop(INT8_META_KEY, None)  # quantizing a quantized folder starts from its fp32
        write_json_atomic(stage / META_NAME, meta)
        return
    model, meta = load_checkpoint_model(source)
    export_model(model, stage, dict(meta, source_checkpoint=str(source.resolve())))


def check_drop(result: Comparison, max_metric_drop: float, force: bool) -> None:
    """Raise QuantizationRefused unless the drop of the task's metric is known and at most
    `max_metric_drop` (or `force`); a NaN allowance refuses too, so it cannot switch the
    check off."""
    drop, metric = result.metric_drop, result.metric
    if force:
        return
    if not np.isfinite(drop):
        raise QuantizationRefused(f"the validation {metric} is undefined (a class or label "
                                  "lacks positives or negatives), so the INT8 model cannot be "
                                  "validated; give labelled data with every class, or force",
                                  param="force")
    if not drop <= max_metric_drop:
        worst = result.agreement.get("worst_label")
        where = (f" (worst label {worst}: AUC drop {result.agreement['label_auc_drop'][worst]:.4f})"
                 if worst else "")
        raise QuantizationRefused(
            f"{metric} fp32 {result.fp32[metric]:.4f} -> INT8 {result.int8[metric]:.4f}: a drop "
            f"of {drop:.4f}{where}, more than max_metric_drop {max_metric_drop:g}; nothing "
            "written (force writes it anyway)", param=("max_metric_drop", "force"))


def _check_packages() -> None:
    """A one-line error naming the extra when a package of the INT8 path is missing."""
    import importlib.util

    missing = [name for name in ("paddle2onnx", "openvino", "nncf")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise BadConfig(f"quantization needs {', '.join(missing)}: pip install -e \".[int8]\"")


def _versions() -> dict[str, str]:
    import nncf
    import openvino as ov

    return {"openvino_version": ov.__version__, "nncf_version": nncf.__version__}
