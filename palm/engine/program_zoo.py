"""The ops palm's own exports use: the allowlist `palm.engine.program_check` enforces.

Every network of the model zoo is exported (small image size, random weights: the ops do
not depend on the weights) and quantized to INT8 the way tools/quantize.py does it; the
union of their Paddle ops and OpenVINO layer types is the allowlist. Regenerate it after
adding a network or upgrading Paddle, paddle2onnx, OpenVINO or NNCF:

    python -m palm.engine.program_zoo
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from palm.config import model_config
from palm.engine.export import export_model
from palm.engine.inference import load_export_meta
from palm.engine.program_check import ALLOWLIST_FILE, allowlist, openvino_layers, program_ops
from palm.engine.quantize import export_onnx, quantize_onnx
from palm.errors import BadCheckpoint
from palm.io_utils import write_json_atomic
from palm.models import build_model, is_transformer, list_models

# the smallest size tried first; a network that needs more (pooling stages) gets the next
IMAGE_SIZES = (64, 160, 299)
CALIBRATION_IMAGES = 2
# model_kwargs that change which ops a network uses, besides its defaults and its config's
OPTION_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "lenet": [{"activation": a, "pooling": p} for a in ("relu", "sigmoid", "tanh")
              for p in ("max", "avg") if (a, p) != ("relu", "max")],
    "googlenet": [{"aux_logits": True}],
    "inception_v3": [{"aux_logits": True}],
}
OPTION_VARIANTS["lenet5"] = OPTION_VARIANTS["lenet"]
# networks whose graph also differs with the input size, exported at these sizes too: a ViT
# at the size its position embedding is stored for skips interpolating it (another graph,
# other OpenVINO layer versions); the smallest ViT stands for all
SIZE_VARIANTS: dict[str, list[int]] = {"vit_tiny_patch16": [224]}


def zoo_variants() -> list[tuple[str, dict[str, Any], tuple[int, ...]]]:
    """(network, model_kwargs, image sizes to try) for every network: its defaults, its
    config's model_kwargs and the OPTION_VARIANTS at the smallest size it takes, and the
    SIZE_VARIANTS."""
    variants = []
    for name in list_models():
        options = [{}, model_config(name).get("model_kwargs") or {}] + OPTION_VARIANTS.get(name, [])
        variants += [(name, dict(kw), IMAGE_SIZES) for i, kw in enumerate(options)
                     if kw not in options[:i]]
        variants += [(name, {}, (size,)) for size in SIZE_VARIANTS.get(name, [])]
    return variants


def export_zoo_model(name: str, model_kwargs: dict[str, Any], folder: Path,
                     sizes: tuple[int, ...] = IMAGE_SIZES) -> Path:
    """Export network `name` with random weights into `folder` at the first of `sizes` it
    takes."""
    for size in sizes:
        kwargs = dict(model_kwargs, image_size=size) if name == "lenet" else model_kwargs
        try:
            return export_model(build_model(name, **kwargs), folder,
                                {"model": name, "image_size": size, "num_classes": 1})
        except (ValueError, RuntimeError):  # too small for its pooling stages: the next size
            if size == sizes[-1]:
                raise
    raise AssertionError("unreachable")


def int8_layers(folder: Path) -> set[str]:
    """OpenVINO layer types of the export in `folder` quantized as tools/quantize.py does
    (calibrated on random images: the layer types do not depend on the ranges)."""
    meta = load_export_meta(folder)
    size = int(meta["image_size"])
    rng = np.random.default_rng(0)
    calibration = [rng.uniform(-1, 1, (1, 3, size, size)).astype("float32")
                   for _ in range(CALIBRATION_IMAGES)]
    xml = quantize_onnx(export_onnx(folder, folder / "model.onnx"), calibration,
                        folder / "model_int8.xml", transformer=is_transformer(meta["model"]))
    return set(openvino_layers(xml))


def main() -> None:
    """Export (and quantize) every network and write the union of their ops to ALLOWLIST_FILE."""
    variants = zoo_variants()
    with tempfile.TemporaryDirectory(prefix="palm-zoo-") as root:
        folders = {}
        for i, (name, kwargs, sizes) in enumerate(variants):
            folders[i] = export_zoo_model(name, kwargs, Path(root, str(i)), sizes)
            print(f"exported {name} {kwargs} {sizes}", flush=True)
        paddle_ops = {op for folder in folders.values()
                      for op in program_ops(folder / "model.json")}
        # quantizing goes through the checked loader: the Paddle ops must be allowed first
        _write(paddle_ops, set(allowlist()["openvino"]))
        openvino: set[str] = set()
        for i, folder in folders.items():
            try:
                openvino |= int8_layers(folder)
            except BadCheckpoint as e:  # no INT8 model of it can exist: nothing to allow
                print(f"not quantized: {variants[i]}: {e}", flush=True)
    _write(paddle_ops, openvino)
    print(f"{ALLOWLIST_FILE}: {len(paddle_ops)} Paddle ops, {len(openvino)} OpenVINO layer "
          f"types from {len(variants)} network variants")


def _write(paddle_ops: set[str], openvino: set[str]) -> None:
    write_json_atomic(ALLOWLIST_FILE, {"generated_by": "python -m palm.engine.program_zoo",
                                       "paddle": sorted(paddle_ops),
                                       "openvino": sorted(openvino)})
    allowlist.cache_clear()


if __name__ == "__main__":
    main()
