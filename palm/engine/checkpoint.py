"""Checkpoints: `NAME.pdparams` (+ `NAME.pdopt`) with a `NAME.json` sidecar.

The sidecar holds everything eval/predict need to rebuild the model and its preprocessing,
so a checkpoint path alone is enough:
    {"model": "resnet50", "num_classes": 1, "class_names": ["non-PM", "PM"],
     "image_size": 224, "normalize": "minus_one_one", "fundus_crop": false,
     "threshold": 0.5, "epoch": 3, "metrics": {...}, "model_kwargs": {}}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paddle

from palm.io_utils import atomic_path, write_json_atomic

REQUIRED_META = ("model", "num_classes", "image_size")


def sidecar_path(params_path: str | Path) -> Path:
    return Path(params_path).with_suffix(".json")


def save_checkpoint(
    params_path: str | Path,
    model: paddle.nn.Layer,
    meta: dict[str, Any],
    optimizer: paddle.optimizer.Optimizer | None = None,
    extra_state: dict[str, Any] | None = None,
) -> None:
    """Write weights, optional optimizer state (+ `extra_state`, e.g. scheduler) and sidecar.

    Each file is written atomically; the sidecar is written last so a present sidecar
    means the weights beside it are complete.
    """
    params_path = Path(params_path)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta for {params_path} lacks {missing}")
    with atomic_path(params_path) as tmp:
        paddle.save(model.state_dict(), tmp)
    if optimizer is not None:
        opt_state = {"optimizer": optimizer.state_dict(), **(extra_state or {})}
        with atomic_path(params_path.with_suffix(".pdopt")) as tmp:
            paddle.save(opt_state, tmp)
    write_json_atomic(sidecar_path(params_path), meta)


def load_meta(params_path: str | Path) -> dict[str, Any]:
    """Read the sidecar JSON of a checkpoint; a clear error if it is absent or incomplete."""
    params_path = Path(params_path)
    if not params_path.is_file():
        raise FileNotFoundError(f"{params_path}: checkpoint not found")
    side = sidecar_path(params_path)
    if not side.is_file():
        raise FileNotFoundError(
            f"{side}: checkpoint sidecar not found (needed for model name, classes, image size)"
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{side}: not valid JSON ({e})") from None
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"{side}: missing keys {missing}")
    return meta


def load_checkpoint_model(params_path: str | Path) -> tuple[paddle.nn.Layer, dict[str, Any]]:
    """Rebuild the model named in the sidecar, load its weights, set eval mode."""
    from palm.models import build_model

    meta = load_meta(params_path)
    model = build_model(meta["model"], meta["num_classes"], **meta.get("model_kwargs", {}))
    try:
        state = paddle.load(str(params_path))
    except Exception as e:  # paddle raises several types for corrupt files
        raise ValueError(f"{params_path}: cannot read weights ({e})") from None
    model.set_state_dict(state)
    model.eval()
    return model, meta


def load_optimizer_state(params_path: str | Path) -> dict[str, Any]:
    """The `.pdopt` dict saved beside a checkpoint: {"optimizer": ..., **extra_state}."""
    opt_path = Path(params_path).with_suffix(".pdopt")
    if not opt_path.is_file():
        raise FileNotFoundError(f"{opt_path}: optimizer state not found (cannot resume)")
    return paddle.load(str(opt_path))
