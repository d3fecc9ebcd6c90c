"""Export a checkpoint to the Paddle Inference format for `palm.engine.inference`.

An exported folder holds `model.json` + `model.pdiparams` (Paddle 3 / PIR program and
weights, written by `paddle.jit.save`) and `palm_meta.json`: the checkpoint's sidecar (model
name, classes, image size, normalization, threshold) plus an `export` record. The batch
dimension is dynamic; height and width are fixed at the training image size.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import paddle
from paddle.static import InputSpec

from palm.engine.checkpoint import load_checkpoint_model
from palm.io_utils import atomic_path, write_json_atomic

META_NAME = "palm_meta.json"
MODEL_NAME = "model"


def export_model(
    model: paddle.nn.Layer,
    output_dir: str | Path,
    meta: dict[str, Any],
    image_size: int | None = None,
) -> Path:
    """Save `model` for Paddle Inference in `output_dir` with `meta` as palm_meta.json.

    Args:
        model: the network (set to eval mode here).
        output_dir: created if needed; files of an earlier export are replaced.
        meta: checkpoint sidecar dict; must hold "image_size" unless `image_size` is given.
        image_size: input height and width (default: meta["image_size"]).

    Returns:
        The output folder.
    """
    output_dir = Path(output_dir)
    size = int(image_size or meta["image_size"])
    output_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    spec = [InputSpec([None, 3, size, size], "float32", "image")]
    # Stage inside output_dir so the final moves are same-filesystem renames; palm_meta.json
    # goes last, so its presence means the model files beside it are complete.
    with tempfile.TemporaryDirectory(prefix=".export-", dir=output_dir) as stage:
        paddle.jit.save(model, os.path.join(stage, MODEL_NAME), input_spec=spec)
        for name in sorted(os.listdir(stage)):
            with atomic_path(output_dir / name) as tmp:
                os.replace(os.path.join(stage, name), tmp)
    full_meta = dict(meta, image_size=size)
    full_meta["export"] = {
        "format": "paddle-inference",
        "model_file": _model_file(output_dir).name,
        "params_file": f"{MODEL_NAME}.pdiparams",
        "input_name": "image",
        "input_shape": [None, 3, size, size],
        "paddle_version": paddle.__version__,
    }
    write_json_atomic(output_dir / META_NAME, full_meta)
    return output_dir


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path) -> Path:
    """Export a `.pdparams` checkpoint (with its JSON sidecar) to `output_dir`."""
    model, meta = load_checkpoint_model(checkpoint)
    meta = dict(meta, source_checkpoint=str(Path(checkpoint).resolve()))
    return export_model(model, output_dir, meta)


def _model_file(folder: Path) -> Path:
    # PIR (default since Paddle 3.0) writes NAME.json; the legacy program format NAME.pdmodel.
    for suffix in (".json", ".pdmodel"):
        path = folder / f"{MODEL_NAME}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{folder}: no {MODEL_NAME}.json or {MODEL_NAME}.pdmodel")
