"""Post-training INT8 quantization, validated on labelled data before it is installed.

`quantize_to_folder` takes a checkpoint or an export folder, converts its Paddle Inference
program to ONNX (paddle2onnx), quantizes it statically with NNCF (activation ranges from N
calibration images), and compares the fp32 predictor and the INT8 model on labelled
images: AUC, accuracy, sensitivity, specificity and images/s of both, measured batch by
batch alternately over the same data. When the AUC drops by more than `max_auc_drop` it
refuses, unless forced. The folder it writes is an ordinary export (model.json,
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
from palm.data import FileImageSet, build_loader, eval_transform
from palm.engine.checkpoint import load_checkpoint_model, load_meta
from palm.engine.export import INT8_FILES, META_NAME, MODEL_NAME, STAGE_PREFIX, export_model
from palm.engine.inference import (INT8_META_KEY, InferencePredictor, OpenVINOPredictor,
                                   exported_files, is_exported, load_export_meta)
from palm.errors import BadCheckpoint, BadConfig, BadData, OutputRefused, UserError
from palm.io_utils import write_json_atomic
from palm.models import is_transformer
from palm.predictions import ordinal_loss_of
from palm.weights import file_sha256

INT8_MODEL = INT8_FILES[0]  # OpenVINO IR; its weights are INT8_FILES[1]
# what a quantized folder holds: the export, its INT8 model, and the lock of palm's tools
EXPORT_FILES = (META_NAME, f"{MODEL_NAME}.json", f"{MODEL_NAME}.pdmodel",
                f"{MODEL_NAME}.pdiparams", *INT8_FILES, ".lock")
DEFAULT_CALIB_IMAGES = 200
DEFAULT_MAX_AUC_DROP = 0.005


class QuantizationRefused(UserError, RuntimeError):
    """The INT8 model lost more AUC than allowed; nothing was written."""


@dataclass
class Comparison:
    """fp32 and INT8 on the same labelled images."""

    fp32: dict[str, Any]
    int8: dict[str, Any]
    max_probability_diff: float
    speed: dict[str, float] = field(default_factory=dict)

    @property
    def auc_drop(self) -> float:
        return float(self.fp32["roc_auc"]) - float(self.int8["roc_auc"])

    def record(self) -> dict[str, Any]:
        keys = ("roc_auc", "accuracy", "sensitivity", "specificity", "n", "threshold")
        return {"fp32": {k: self.fp32[k] for k in keys if k in self.fp32},
                "int8": {k: self.int8[k] for k in keys if k in self.int8},
                "auc_drop": self.auc_drop, "max_probability_diff": self.max_probability_diff,
                "img_per_s": self.speed}

    def table(self) -> str:
        """fp32 and INT8 side by side, one metric a line."""
        lines = [f"{'':14s}{'fp32':>10s}{'int8':>10s}"]
        for key in ("roc_auc", "accuracy", "sensitivity", "specificity"):
            if key in self.fp32:
                lines.append(f"{key:14s}{self.fp32[key]:10.4f}{self.int8[key]:10.4f}")
        lines.append(f"{'img/s':14s}{self.speed['fp32']:10.2f}{self.speed['int8']:10.2f}")
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


def compare(fp32: Any, int8: Any, dataset: paddle.io.Dataset, threshold: float,
            batch_size: int = 8, num_workers: int = 0) -> Comparison:
    """Metrics and speed of two predictors on a labelled dataset.

    Each batch runs through both, alternately, so the speed ratio is measured under the same
    load even on a shared machine; one warm-up batch each is not timed.
    """
    loader = build_loader(dataset, batch_size, train=False, num_workers=num_workers)
    probs: dict[str, list[np.ndarray]] = {"fp32": [], "int8": []}
    seconds = {"fp32": 0.0, "int8": 0.0}
    labels, warm = [], False
    for images, batch_labels in loader:
        batch = images.numpy()
        for name, predictor in (("fp32", fp32), ("int8", int8)):
            if not warm:
                predictor.predict(batch)
            start = time.perf_counter()
            logits = predictor.predict(batch)
            seconds[name] += time.perf_counter() - start
            probs[name].append(_probabilities(logits))
        warm = True
        labels.append(batch_labels.numpy().reshape(-1))
    y = np.concatenate(labels).astype(np.int64)
    p32, p8 = np.concatenate(probs["fp32"]), np.concatenate(probs["int8"])
    return Comparison(M.classification_metrics(y, p32, threshold),
                      M.classification_metrics(y, p8, threshold),
                      float(np.max(np.abs(p32 - p8))),
                      {name: len(y) / s for name, s in seconds.items()})


def _probabilities(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[-1] == 1:
        return 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def quantize_to_folder(
    source: str | Path,
    output_dir: str | Path,
    calibration_paths: Sequence[str],
    validation_set: Callable[[dict[str, Any]], paddle.io.Dataset],
    *,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    max_auc_drop: float = DEFAULT_MAX_AUC_DROP,
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
        max_auc_drop: largest allowed fp32 AUC minus INT8 AUC on the validation set.
        force: write the model even when the drop is larger (the record says so).

    Returns:
        The comparison that was written into palm_meta.json.

    Raises:
        QuantizationRefused: the AUC dropped too much (or is undefined); nothing written.
    """
    source, output_dir = Path(source), Path(output_dir)
    _check_packages()
    if is_exported(source):
        exported_files(source)  # a changed or foreign program is refused before any write
    check_output_folder(output_dir)
    if _source_meta(source).get("task") == "multilabel":
        raise BadConfig(f"{source}: a multi-label model; INT8 is validated on one-label models "
                        "only so far (its AUC check is per model, not per label)")
    if ordinal_loss_of(_source_meta(source)) != "ce":
        raise BadConfig(f"{source}: a grader trained with ordinal_loss "
                        f"{ordinal_loss_of(_source_meta(source))}; INT8 is validated on class "
                        "probabilities, which its outputs are not, so far")
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
                         float(meta.get("threshold", 0.5)), batch_size, num_workers)
        log(result.table())
        check_drop(result, max_auc_drop, force)
        meta[INT8_META_KEY] = {
            "format": "openvino-ir", "engine": "openvino+nncf", "model_file": INT8_MODEL,
            "sha256": {name: file_sha256(stage / name) for name in INT8_FILES},
            "calibration_images": len(calibration), "max_auc_drop": max_auc_drop,
            "forced": bool(force and result.auc_drop > max_auc_drop),
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


def check_drop(result: Comparison, max_auc_drop: float, force: bool) -> None:
    """Raise QuantizationRefused unless the AUC drop is known and at most `max_auc_drop` (or
    `force`); a NaN allowance refuses too, so it cannot switch the check off."""
    drop = result.auc_drop
    if force:
        return
    if not np.isfinite(drop):
        raise QuantizationRefused("the validation AUC is undefined (one class only), so the "
                                  "INT8 model cannot be validated; give labelled data with both "
                                  "classes, or force", param="force")
    if not drop <= max_auc_drop:
        raise QuantizationRefused(
            f"AUC fp32 {result.fp32['roc_auc']:.4f} -> INT8 {result.int8['roc_auc']:.4f}: a drop "
            f"of {drop:.4f}, more than max_auc_drop {max_auc_drop:g}; nothing written "
            "(force writes it anyway)", param=("max_auc_drop", "force"))


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
