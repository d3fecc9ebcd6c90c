"""Evaluation sections: dygraph with Paddle's own CPU defaults, the Paddle Inference export in
fp32 and bfloat16, ONNX Runtime, and INT8 (OpenVINO + NNCF) against the fp32 predictor and
PyTorch eager."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from palm.bench.data import palm_sized_images
from palm.bench.settings import BenchSettings
from palm.models import is_transformer
from palm.bench.timing import (child_result, images_per_second, random_batch, run_in_child,
                              timing_network)
from palm.bench.torch_twin import torch_twin
from palm.engine.inference import DygraphPredictor, InferencePredictor, OpenVINOPredictor
from palm.engine.quantize import calibration_images, export_onnx, quantize_onnx
from palm.runtime import OPT_OUT_VAR, usable_cores

TUNING_VARS = ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "KMP_BLOCKTIME")  # palm.runtime sets them


def relative_difference(logits: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute logit difference relative to the logits' size (random-weight ResNet50
    logits are in the hundreds)."""
    return float(np.max(np.abs(logits - reference)) / max(1.0, float(np.max(np.abs(reference)))))


def dygraph_eval_rate(model_name: str, size: int, batch_size: int, iters: int) -> float:
    """Dygraph eval img/s of `model_name` (random weights) in this process."""
    predictor = DygraphPredictor(timing_network(model_name, size)[0], {})
    batch = random_batch(batch_size, size)
    return images_per_second(lambda: predictor.predict(batch), len(batch), iters)


def eval_default_in_child(model_name: str, size: int, batch_size: int, iters: int) -> float:
    """Dygraph eval img/s in a child process with Paddle's own CPU defaults."""
    env = {k: v for k, v in os.environ.items() if k not in TUNING_VARS}
    env[OPT_OUT_VAR] = "1"
    run = run_in_child(__name__, "dygraph_eval_rate", {"model_name": model_name, "size": size,
                                                       "batch_size": batch_size, "iters": iters},
                       env=env)
    if run.returncode != 0:
        raise RuntimeError(f"default-settings child failed: {run.stderr.strip()[-300:]}")
    return child_result(run)


def bench_bf16(export_dir: Path, batch: np.ndarray, fp32_logits: np.ndarray,
               iters: int) -> dict[str, Any]:
    """img/s of the bfloat16 predictor and its largest logit difference (relative to the
    logits' size), or the reason it cannot run here."""
    try:
        predictor = InferencePredictor(export_dir, precision="bf16")
    except ValueError as e:
        return {"inference_bf16": str(e)}
    diff = relative_difference(predictor.predict(batch), fp32_logits)
    return {"inference_bf16": images_per_second(lambda: predictor.predict(batch), len(batch), iters),
            "inference_bf16_rel_diff": diff}


def bench_onnxruntime(export_dir: Path, batch: np.ndarray, iters: int) -> float | str:
    """img/s through paddle2onnx + onnxruntime, or the reason it could not run."""
    try:
        import onnxruntime as ort
        import paddle2onnx  # noqa: F401  (used in the child below)
    except ImportError as e:
        return f"not installed ({e.name})"
    onnx_file = export_dir / "model.onnx"
    # in a child: the converter prints a lot and is new code; a crash costs only this column
    code = ("import sys, paddle2onnx; paddle2onnx.export(sys.argv[1], sys.argv[2], "
            "save_file=sys.argv[3])")
    run = subprocess.run([sys.executable, "-c", code, str(export_dir / "model.json"),
                          str(export_dir / "model.pdiparams"), str(onnx_file)],
                         capture_output=True, text=True)
    if run.returncode != 0 or not onnx_file.is_file():
        return f"paddle2onnx failed: {(run.stderr.strip().splitlines() or ['?'])[-1][:120]}"
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = usable_cores()
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        return f"onnxruntime failed: {str(e).splitlines()[0][:120]}"
    name = session.get_inputs()[0].name
    return images_per_second(lambda: session.run(None, {name: batch}), len(batch), iters)


def _torch_runner(model_name: str, batch: np.ndarray) -> Callable[[], None] | None:
    """One PyTorch eager eval of `batch` on palm's network's twin, or None without one."""
    net = torch_twin(model_name)
    if net is None:
        return None
    import torch

    torch_batch = torch.from_numpy(batch)

    def torch_eval() -> None:
        with torch.no_grad():
            net(torch_batch)

    return torch_eval


def bench_int8(export_dir: Path, meta: dict, model_name: str, settings: BenchSettings,
               work_dir: Path) -> dict[str, Any]:
    """INT8 (OpenVINO + NNCF) vs the fp32 predictor vs PyTorch eager, alternating."""
    try:
        import nncf  # noqa: F401
    except ImportError as e:
        return {"int8": f"not installed ({e.name}); pip install -e '.[int8]'"}
    photos = [str(p) for p in palm_sized_images(work_dir)]
    calibration = calibration_images(photos, meta, len(photos))
    int8_file = export_dir / "model_int8.xml"
    with tempfile.TemporaryDirectory() as tmp:
        quantize_onnx(export_onnx(export_dir, Path(tmp) / "model.onnx"), calibration, int8_file,
                      transformer=is_transformer(model_name))
    fp32 = InferencePredictor(export_dir)
    int8 = OpenVINOPredictor(export_dir, model_file=int8_file)
    photo_batch = np.concatenate(calibration[:settings.batch_size])
    out: dict[str, Any] = {"int8_rel_diff": relative_difference(int8.predict(photo_batch),
                                                                fp32.predict(photo_batch))}
    batch = random_batch(settings.batch_size, int(meta["image_size"]))
    runners = {"int8": lambda: int8.predict(batch), "int8_fp32_predictor": lambda: fp32.predict(batch)}
    torch_eval = _torch_runner(model_name, batch)
    if torch_eval is not None:
        runners["torch_eager"] = torch_eval
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(settings.repeats + 1):
        for name, fn in runners.items():
            rates[name].append(images_per_second(fn, len(batch), settings.iters, warmup=1))
    for name, runs in rates.items():
        out[name] = max(runs)
        out[f"{name}_runs"] = runs
    out["int8_vs_int8_fp32_predictor"] = out["int8"] / out["int8_fp32_predictor"]
    if "torch_eager" in out:
        out["int8_vs_torch_eager"] = out["int8"] / out["torch_eager"]
        out["int8_fp32_predictor_vs_torch_eager"] = out["int8_fp32_predictor"] / out["torch_eager"]
    else:
        out["torch_eager"] = "torch not installed or no PyTorch twin of this network"
    return out
