"""The model behind the screening service: decoding uploads, batches, Grad-CAM overlays."""
from __future__ import annotations

import base64
import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from palm import predictions as P
from palm.data import (ImageReadError, TooManyPixels, crop_fundus,
                       decode_image, eval_transform, resize_short_side)
from palm.data.image_io import header_size
from palm.engine.checkpoint import decision_threshold, label_thresholds, load_checkpoint_model
from palm.engine.evaluate import finite_probabilities, finite_rows
from palm.engine.inference import DygraphPredictor, is_exported, load_predictor, weights_sha256
from palm.serve.batcher import MicroBatcher
from palm.viz.cam import GRADE_SCORE, GradCAM, overlay_heatmap


# short side of the photo under a Grad-CAM overlay: enough to see the disc and the macula,
# small enough to send as base64 JSON
CAM_SIDE = 384
FORMATS = "JPEG, PNG, BMP or TIFF"


# glibc's mallopt parameter, and the size from which blocks are mapped (and unmapped when freed)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def _glibc() -> Any:
    """The C library if it is glibc (it has mallopt), else None (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def return_large_blocks_to_the_system() -> None:
    """Make glibc map every block over 1 MB on its own and give it back when freed.

    By default glibc raises its mmap threshold to the largest block freed so far (up to
    32 MB), after which the decoded photos (13 MB for a PALM photo) and batches come from the
    arenas of the threads that allocated them, which keep their peak: the service's memory
    rose by 175 MB in the third of five load-test rounds. Setting the threshold stops that
    (tests/serve/test_decoding.py shows it), though not every step of the service's memory
    (README, Screening service). Nothing happens on another C library.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


@dataclass
class Photo:
    """An uploaded photo after decoding: the model input, or why there is none."""

    filename: str
    data: bytes
    x: np.ndarray | None = None  # CHW float32 model input
    shown: np.ndarray | None = None  # RGB photo the Grad-CAM overlay is drawn on
    error: str | None = None
    status: int = 200  # what this photo alone would answer
    ms: float = 0.0  # decoding time


class ModelRunner:
    """The model behind the service: decodes photos and predicts batches (with Grad-CAM).

    Grad-CAM needs gradients, so it runs on a dygraph copy of a `.pdparams` checkpoint; an
    exported inference folder has none, and its results say so.
    """

    def __init__(self, checkpoint: str | Path, engine: str = "auto",
                 max_pixels: int | None = None):
        self.checkpoint = Path(checkpoint)
        self.predictor = load_predictor(self.checkpoint, engine=engine)
        self.meta = self.predictor.meta
        self.sha256 = weights_sha256(self.checkpoint)
        self.max_pixels = max_pixels
        self.threshold = float(self.meta.get("threshold", 0.5))
        self.temperature = float(self.meta.get("temperature", 1.0))  # temperature scaling
        self.class_names = list(self.meta.get("class_names") or [])
        self.task = self.meta.get("task")
        # a multi-label model decides each label at its own threshold (eval's and predict's)
        self.label_thresholds = (label_thresholds(self.meta)[0] if self.task == "multilabel"
                                 else None)
        self.grader = P.Grader.from_meta(self.meta)  # grading models: how outputs become grades
        self.image_size = int(self.meta["image_size"])
        # the crop is done before the transform, so the overlay shows the field the model saw
        self.transform = eval_transform(self.meta, fundus_crop=False)
        self.gradcam: GradCAM | None = None
        self.cam_unavailable = ""
        if isinstance(self.predictor, DygraphPredictor):
            self.gradcam = GradCAM(self.predictor.model)
        elif is_exported(self.checkpoint):
            self.cam_unavailable = ("Grad-CAM needs the .pdparams checkpoint; this service "
                                    "runs an exported inference model, which has no gradients")
        else:
            self.gradcam = GradCAM(load_checkpoint_model(self.checkpoint)[0])

    def warm_up(self, batcher: "MicroBatcher") -> None:
        """Run every batch size the batcher can form once through it, in its model thread: oneDNN builds
        (and caches) its kernels per input shape and per thread, which would otherwise slow
        the first requests and grow memory under load. Warmed up in another thread, the
        service's memory still rose by 100-175 MB at the first batch of 4, rounds into a load
        test."""
        shape = (3, self.image_size, self.image_size)
        # a batch never holds more photos than the queue
        for size in range(1, min(batcher.max_batch, batcher.max_queue) + 1):
            for future in batcher.submit([(np.zeros(shape, np.float32), False)] * size):
                future.result()
        batcher.batch_sizes.clear()  # /healthz counts the requests' batches only

    def describe(self) -> dict[str, Any]:
        """Model metadata for /v1/model and every prediction response."""
        meta = self.meta
        # as eval and predict report it
        threshold_source = (label_thresholds(meta)[1] if self.label_thresholds is not None
                            else decision_threshold(meta)[1])
        per_label = ({"thresholds": dict(zip(self.class_names, self.label_thresholds.tolist()))}
                     if self.label_thresholds is not None else {})
        return {
            "name": meta["model"], "sha256": self.sha256, "epoch": meta.get("epoch"),
            "engine": self.predictor.engine, "precision": getattr(self.predictor, "precision", "fp32"),
            "num_classes": meta["num_classes"], "class_names": self.class_names,
            "image_size": self.image_size, "normalize": meta.get("normalize", "minus_one_one"),
            "fundus_crop": bool(meta.get("fundus_crop", False)), "threshold": self.threshold,
            "threshold_source": threshold_source, **per_label,
            "calibration": {"temperature": self.temperature,
                            "source": meta.get("temperature_source", "none")},
            "metrics": meta.get("metrics"),
            **({"ordinal_loss": self.grader.ordinal_loss, "referable_grade":
                self.grader.referable_grade, "cut_points": list(self.grader.cuts)
                if self.grader.ordinal_loss == "regression" else None} if self.grader else {}),
            "cam_available": self.gradcam is not None,
            **({"cam_unavailable": self.cam_unavailable} if self.cam_unavailable else {}),
        }

    def prepare(self, filename: str, data: bytes, cam: bool) -> Photo:
        """Decode one upload (by content, not extension) into a model input or an error."""
        start = time.perf_counter()
        photo = Photo(filename, data)
        try:
            photo.x = self.transform(self._decode(data, filename, self.transform.decode_size))
            if cam and self.gradcam is not None:
                # decoded again, larger, for the overlay only: a JPEG decoded at another size
                # has other pixels, and the model input must stay the one predict and eval
                # make from this file (the probability moved by ~1 % with ?cam=1 otherwise)
                photo.shown = resize_short_side(self._decode(data, filename, CAM_SIDE), CAM_SIDE)
        except TooManyPixels as e:
            photo.error, photo.status = str(e), 413
        except ImageReadError as e:
            if data and header_size(data) is None:
                photo.error = (f"{filename}: not an image ({FORMATS} expected; the content is "
                               "checked, not the file name)")
                photo.status = 415
            else:
                photo.error, photo.status = str(e), 422
        except (cv2.error, ValueError) as e:  # odd geometry the transform cannot handle
            photo.error, photo.status = f"{filename}: {' '.join(str(e).split())}", 422
        photo.ms = (time.perf_counter() - start) * 1000
        return photo

    def _decode(self, data: bytes, filename: str, target_size: int) -> np.ndarray:
        rgb = decode_image(data, filename, target_size=target_size, max_pixels=self.max_pixels)
        return crop_fundus(rgb) if self.meta.get("fundus_crop") else rgb

    def run_batch(self, x: np.ndarray, cam: Sequence[bool]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(probabilities, heatmap or None) per image of the batch `x` [N, 3, S, S]."""
        logits = self.predictor.predict(x)
        if self.grader is None:
            probs = finite_probabilities(logits, self.temperature, self.task == "multilabel")
        else:
            probs = self.grader.scores(logits)
            probs[~finite_rows(logits)] = np.nan
        maps: list[np.ndarray | None] = [None] * len(x)
        wanted = [i for i, c in enumerate(cam) if c]
        if wanted and self.gradcam is not None:
            for i, heat in zip(wanted, self.gradcam.cam(x[wanted])):
                maps[i] = heat
        return list(zip(probs, maps))

    def cam_target(self, y_prob: np.ndarray) -> str:
        """The class a heatmap explains (GradCAM's default logit): the positive class of a
        one-logit model, else the highest-probability class, grade or (multi-label) label;
        for a CORAL or regression grader the one score behind every grade."""
        if self.grader is not None and self.grader.ordinal_loss != "ce":
            return GRADE_SCORE
        index = 1 if np.ndim(y_prob) == 0 else int(np.argmax(y_prob))
        return self.class_names[index] if index < len(self.class_names) else str(index)

    def result(self, y_prob: np.ndarray) -> dict[str, Any]:
        """Probability, prediction at the checkpoint's threshold and class name of one photo,
        named as in a predictions CSV (palm.predictions). A multi-label model answers per
        label (`probabilities`, `predictions`) and, for the page, any finding: the highest
        label probability, prediction 1 when some label is positive, the positive labels as
        the class name. A grading (ordinal) model adds the expected grade."""
        if self.task == "multilabel":
            return self._multilabel_result(y_prob)
        if self.grader is not None:
            return self._grading_result(y_prob)
        if np.ndim(y_prob) == 0:
            probability = float(y_prob)
            prediction = int(probability >= self.threshold)
            extra: dict[str, Any] = {}
        else:
            prediction = int(np.argmax(y_prob))
            probability = float(y_prob[prediction])
            extra = {"probabilities": {name: float(p) for name, p in zip(self.class_names, y_prob)}}
        name = (self.class_names[prediction] if prediction < len(self.class_names)
                else str(prediction))
        # `decision`: the key's name before it became `prediction`; sent for one more release
        # so that clients reading it keep working (README, service)
        return {P.PROBABILITY: round(probability, 6), P.PREDICTION: prediction,
                "decision": prediction, P.CLASS_NAME: name, "threshold": self.threshold, **extra}

    def _grading_result(self, scores: np.ndarray) -> dict[str, Any]:
        """A grading model's answer, read by its grader as predict and eval read it: the
        grade, the expected grade and, when the model has them (not a grade regression),
        the grade probabilities and the probability of the grade given."""
        readout = self.grader.read(np.asarray(scores)[None])
        grade = int(readout.grades[0])
        answer: dict[str, Any] = {
            P.PROBABILITY: None, P.PREDICTION: grade, "decision": grade,
            P.CLASS_NAME: self.class_names[grade] if grade < len(self.class_names) else str(grade),
            "threshold": self.threshold,
            P.EXPECTED_GRADE: round(float(readout.expected[0]), 6)}
        if readout.probabilities is not None:
            probs = readout.probabilities[0]
            answer[P.PROBABILITY] = round(float(probs[grade]), 6)
            answer["probabilities"] = {name: float(p) for name, p in zip(self.class_names, probs)}
        return answer

    def _multilabel_result(self, y_prob: np.ndarray) -> dict[str, Any]:
        decisions = {name: int(p >= cut) for name, p, cut
                     in zip(self.class_names, y_prob, self.label_thresholds)}
        positive = [name for name, d in decisions.items() if d]
        top = int(np.argmax(y_prob))
        return {P.PROBABILITY: round(float(y_prob[top]), 6), P.PREDICTION: int(bool(positive)),
                P.CLASS_NAME: "; ".join(positive) or "no finding",
                "threshold": float(self.label_thresholds[top]),  # of the label shown
                "thresholds": dict(zip(self.class_names, self.label_thresholds.tolist())),
                "probabilities": {n: float(p) for n, p in zip(self.class_names, y_prob)},
                "predictions": decisions}


def overlay_png_base64(photo: np.ndarray, heatmap: np.ndarray) -> str:
    """The Grad-CAM overlay on `photo` as base64 PNG."""
    rgb = overlay_heatmap(photo, heatmap)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding of the Grad-CAM overlay failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")
