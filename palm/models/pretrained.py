"""Load ImageNet (or any) weights from a `.pdparams` file into a palm model.

palm's networks use the parameter names of `paddle.vision.models`, so a state dict saved
from those networks loads as is. `pretrained_weights_file` turns the `pretrained` setting
into a file: "imagenet" is Paddle's published file for the model, fetched and checked by
palm.models.imagenet; anything else is a path. Files are read by
`palm.weights.read_weights`, which runs no code from them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import paddle

from palm.errors import BadCheckpoint
from palm.models.convert import (check_convertible, convert_state_dict,
                                 is_head_shape, read_pytorch_weights)
from palm.models.imagenet import fetch_imagenet
from palm.models.ordinal import RANK_BIASES
from palm.torch_weights import checkpoint_format
from palm.weights import read_weights

log = logging.getLogger(__name__)

# the `pretrained` setting that means Paddle's published ImageNet weights for the model
IMAGENET = "imagenet"


def pretrained_weights_file(setting: str | Path, model_name: str) -> Path:
    """The weights file the `pretrained` setting names for `model_name`: Paddle's ImageNet
    weights (downloaded once, MD5-checked) for "imagenet", else the path itself."""
    if str(setting).strip().lower() == IMAGENET:
        return fetch_imagenet(model_name)
    return Path(setting)


def load_pretrained(model: paddle.nn.Layer, path: str | Path, model_name: str | None = None
                    ) -> dict[str, list[str]]:
    """Copy every tensor of `path` whose name and shape match into `model`.

    Only classifier tensors may differ in shape (fine-tuning a 1000-class ImageNet network
    to one logit): those whose shapes differ only where the model has `model.num_classes`.
    They are skipped and keep the model's own initialisation. One line is logged with what
    was skipped, missing or unexpected.

    Args:
        model: the network to fill, e.g. `build_model("resnet50", num_classes=1)`.
        path: a `.pdparams` file holding a state dict (name -> tensor), or a PyTorch
            checkpoint (`.pth`, `.pt`, `.bin`, `.safetensors`) of the same architecture
            (torchvision's names and layouts are converted, torch is not needed).
        model_name: the registry name of `model`; needed for PyTorch files, which are
            converted only for the networks palm.models.convert lists.

    Returns:
        {"loaded": [...], "skipped": [...], "missing": [...], "unexpected": [...]}: parameter
        names loaded; present in both but of another shape; in the model but not the file;
        in the file but not the model.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file cannot be read or holds more than weights (refused unread),
            is not a state dict, matches no parameter of the model (almost surely weights
            of another architecture), or a tensor outside the classifier has another shape.
    """
    path = Path(path)
    if not path.exists():  # a folder or device is named by checkpoint_format
        raise FileNotFoundError(f"{path}: pretrained weights file not found")
    state = _read_state(path, model, model_name)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")

    own = model.state_dict()
    loaded, skipped, shape_notes = [], [], []
    for name, target in own.items():
        if name not in state:
            continue
        shape = list(state[name].shape)
        if shape == list(target.shape):
            loaded.append(name)
        else:
            skipped.append(name)
            shape_notes.append(f"{name} {shape}->{list(target.shape)}")
    missing = [name for name in own if name not in state]
    unexpected = [name for name in state if name not in own]
    if not loaded:
        raise ValueError(
            f"{path}: no tensor matches {type(model).__name__} by name and shape "
            f"(weights of another architecture?)"
        )
    outputs = getattr(model, "num_classes", None)
    body = [note for name, note in zip(skipped, shape_notes)
            if not is_head_shape(list(state[name].shape), list(own[name].shape), outputs)]
    if body:
        more = f" and {len(body) - 3} more" if len(body) > 3 else ""
        raise ValueError(f"{path}: {len(body)} tensor(s) outside the classifier have another "
                         f"shape: {', '.join(body[:3])}{more} (weights of another variant?)")
    # Hand over a complete dict (own tensors where the file has none) so paddle does not
    # warn once per key; the one log line below says it all.
    model.set_state_dict({**own, **{name: state[name] for name in loaded}})

    def listed(names: list[str]) -> str:
        return ", ".join(names) if names else "none"

    # CORAL's biases (palm.models.ordinal) are a new head, no file has them
    unexpectedly_missing = [name for name in missing if not name.startswith(RANK_BIASES + ".")]
    log.log(
        logging.WARNING if unexpectedly_missing else logging.INFO,
        "%s: loaded %d/%d tensors; skipped (shape differs): %s; missing: %s; unexpected: %s",
        path, len(loaded), len(own), listed(shape_notes), listed(missing), listed(unexpected),
    )
    return {"loaded": loaded, "skipped": skipped, "missing": missing, "unexpected": unexpected}


def _read_state(path: Path, model: paddle.nn.Layer, model_name: str | None) -> dict:
    """A `.pdparams` file by palm's safe reader; a PyTorch one converted to Paddle's names
    and layouts (palm.models.convert), its classifier left in its own shape to be skipped."""
    # by content, not name: `.bin` is PyTorch's (Hugging Face) or Paddle's in the wild
    kind = checkpoint_format(path)
    if kind == "paddle":
        return read_weights(path)
    if kind == "unknown":
        raise BadCheckpoint(f"{path}: not a weights file palm reads (paddle.save's .pdparams, "
                            "a PyTorch checkpoint or safetensors)")
    name = model_name or type(model).__name__
    check_convertible(name)
    conversion = convert_state_dict(read_pytorch_weights(path), model, name, head_may_differ=True)
    log.log(logging.WARNING if conversion.caution else logging.INFO, "%s: PyTorch weights, %s",
            path, conversion.summary())
    return {name: paddle.to_tensor(value) for name, value in conversion.state.items()}
