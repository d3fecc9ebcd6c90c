"""Export a checkpoint to the Paddle Inference format for `palm.engine.inference`.

An exported folder holds `model.json` + `model.pdiparams` (Paddle 3 / PIR program and
weights, written by `paddle.jit.save`) and `palm_meta.json`: the checkpoint's sidecar (model
name, classes, image size, normalization, threshold) plus an `export` record; the
checkpoint's selection predictions (NAME_selection.csv) travel inside it as
selection["rows"]. The batch dimension is dynamic; height and width are fixed at the
training image size.

An export is all or nothing: it is built and (optionally) verified in a hidden staging
folder, and only a model that passed moves in. palm_meta.json, which makes a folder an
export, is removed first and moved in last, and it records the SHA-256 of the files beside
it, which the loader checks; a failed or interrupted export leaves nothing loadable.
Exporting into a quantized folder replaces it by the fp32 export: the INT8 model
(palm.engine.quantize), made from the earlier weights, is removed in the same step.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import paddle
from paddle.static import InputSpec

from palm.engine.checkpoint import EXPORT_META, load_checkpoint_model
from palm.errors import BadCheckpoint
from palm.io_utils import write_json_atomic
from palm.weights import file_sha256

META_NAME = EXPORT_META
MODEL_NAME = "model"
INT8_FILES = ("model_int8.xml", "model_int8.bin")  # palm.engine.quantize's OpenVINO IR
STAGE_PREFIX = ".export-"
# verify(staged export folder, model, meta) -> None if it is good, else why not
Verifier = Callable[[Path, paddle.nn.Layer, dict], "str | None"]


class ExportVerificationError(BadCheckpoint):
    """The exported model does not reproduce the checkpoint; nothing was installed."""


def export_model(
    model: paddle.nn.Layer,
    output_dir: str | Path,
    meta: dict[str, Any],
    image_size: int | None = None,
    verify: Verifier | None = None,
) -> Path:
    """Save `model` for Paddle Inference in `output_dir` with `meta` as palm_meta.json.

    Args:
        model: the network (set to eval mode here).
        output_dir: created if needed; files of an earlier export are replaced.
        meta: checkpoint sidecar dict; must hold "image_size" unless `image_size` is given.
        image_size: input height and width (default: meta["image_size"]).
        verify: called on the complete staged export before it is installed; a returned
            reason stops the export (see `palm.engine.inference.probe_export`).

    Returns:
        The output folder.

    Raises:
        ExportVerificationError: `verify` found a problem; `output_dir` was left as it was.
    """
    output_dir = Path(output_dir)
    size = int(image_size or meta["image_size"])
    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(f"{STAGE_PREFIX}*"):  # staging of a killed export
        shutil.rmtree(stale, ignore_errors=True)
    model.eval()
    if hasattr(model, "for_input_size"):  # ViTs: the position embedding fixed for `size`
        model = model.for_input_size(size)
    spec = [InputSpec([None, 3, size, size], "float32", "image")]
    # Stage inside output_dir so the final moves are same-filesystem renames.
    with tempfile.TemporaryDirectory(prefix=STAGE_PREFIX, dir=output_dir) as stage_name:
        stage = Path(stage_name)
        paddle.jit.save(model, str(stage / MODEL_NAME), input_spec=spec)
        model_files = sorted(p.name for p in stage.iterdir())
        # the checkpoint's file hashes describe other files
        full_meta = {k: v for k, v in meta.items() if k != "files"} | {"image_size": size}
        full_meta["export"] = {
            "format": "paddle-inference",
            "model_file": _model_file(stage).name,
            "params_file": f"{MODEL_NAME}.pdiparams",
            "input_name": "image",
            "input_shape": [None, 3, size, size],
            "paddle_version": paddle.__version__,
            "sha256": {name: file_sha256(stage / name) for name in model_files},
        }
        write_json_atomic(stage / META_NAME, full_meta)
        problem = verify(stage, model, full_meta) if verify is not None else None
        if problem:
            raise ExportVerificationError(f"{output_dir}: exported model failed verification: "
                                          f"{problem}; nothing was installed")
        (output_dir / META_NAME).unlink(missing_ok=True)  # not an export until it is complete
        for name in model_files:
            os.replace(stage / name, output_dir / name)
        for name in INT8_FILES:  # the new meta has no int8 record; a stale model must not stay
            (output_dir / name).unlink(missing_ok=True)
        os.replace(stage / META_NAME, output_dir / META_NAME)
    return output_dir


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path,
                      verify: Verifier | None = None) -> Path:
    """Export a `.pdparams` checkpoint (with its JSON sidecar) to `output_dir`."""
    model, meta = load_checkpoint_model(checkpoint)
    meta = dict(meta, source_checkpoint=str(Path(checkpoint).resolve()))
    if meta.get("selection"):
        meta["selection"] = selection_with_rows(checkpoint, meta["selection"])
    return export_model(model, output_dir, meta, verify=verify)


def selection_with_rows(checkpoint: str | Path, record: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's selection record with the rows of its selection CSV (path, label,
    logits) inside it, under "rows": an export carries no file beside it, and eval needs
    the images to tell whether its figures are optimistic. Unchanged without a readable CSV
    (eval then says "unknown", as for the checkpoint)."""
    path = Path(checkpoint).with_name(str(record.get("predictions", "")))
    if "predictions" not in record or not path.is_file():
        return record
    try:
        rows = pd.read_csv(path).to_dict("list")
    except (ValueError, pd.errors.ParserError):
        return record
    return {k: v for k, v in record.items() if k != "predictions"} | {"rows": rows}


def _model_file(folder: Path) -> Path:
    # PIR (default since Paddle 3.0) writes NAME.json; the legacy program format NAME.pdmodel.
    for suffix in (".json", ".pdmodel"):
        path = folder / f"{MODEL_NAME}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"{folder}: no {MODEL_NAME}.json or {MODEL_NAME}.pdmodel")
