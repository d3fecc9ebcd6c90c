"""Class activation maps: where a network looked when it made a prediction.

Grad-CAM (Selvaraju et al., arXiv:1610.02391) weights the feature maps of a convolutional
layer by the spatial mean of the score's gradient and keeps the positive part; it works for
any network. Plain CAM (Zhou et al., arXiv:1512.04150) needs a network that ends in global
average pooling + one linear layer and uses that layer's weights instead of gradients.

Both read activations through forward hooks: the model is not modified, and its
train/eval mode is restored afterwards.

Example:
    cam = GradCAM(model)                      # default layer for the family
    maps = cam(x)                             # x: [N, 3, H, W] -> maps: [N, H, W] in [0, 1]
    rgb = overlay_heatmap(photo, maps[0])     # photo: original HxWx3 uint8 RGB
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import paddle
import paddle.nn as nn

from palm.data import ImageReadError, crop_fundus, eval_transform, read_image
from palm.errors import BadConfig
from palm.io_utils import atomic_path
from palm.predictions import Grader, main_output, probabilities

# Default target layer per network class: the output of the last convolutional block, the
# deepest feature map that still has spatial resolution (Grad-CAM paper, section 3).
# A class not listed falls back to its last registered Conv2D outside auxiliary heads, or the
# activation that follows it in its nn.Sequential; for NiN and SqueezeNet that conv is the
# classifier whose per-class maps are averaged into the logits, i.e. the class maps themselves.
DEFAULT_TARGET_LAYERS: dict[str, str | Callable[[nn.Layer], str]] = {
    "ResNet": "layer4",
    "GoogLeNet": "_ince5b",
    "DenseNet": "relu",  # the BN-ReLU after the last dense block (its last conv adds 32 maps)
    "InceptionV3": lambda m: f"inception_block_list.{len(m.inception_block_list) - 1}",
    "VisionTransformer": "token_grid",  # the patch tokens entering the last block, as a map
}

# Auxiliary classifier branches (named like torchvision's Inception `AuxLogits`) are never a
# default target: the main output does not depend on them. palm's GoogLeNet is in the table.
_AUX_MARKERS = ("aux",)

ClassIndex = int | Sequence[int] | None


def _is_activation(layer: nn.Layer) -> bool:
    return type(layer).__module__ == "paddle.nn.layer.activation"


def _is_norm(layer: nn.Layer) -> bool:
    return type(layer).__module__ == "paddle.nn.layer.norm"


def _after_activation(model: nn.Layer, conv_name: str) -> str:
    """The activation that follows `conv_name` in its nn.Sequential (skipping norms), if any.

    Grad-CAM explains the rectified feature maps (relu5_3 for VGG16 in the paper); a bare
    conv output would mix in negative pre-activations.
    """
    parent_name, _, index = conv_name.rpartition(".")
    parent = find_layer(model, parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return conv_name
    children = list(parent.named_children())
    position = [n for n, _ in children].index(index)
    for child_name, child in children[position + 1 :]:
        if _is_activation(child):
            return f"{parent_name}.{child_name}" if parent_name else child_name
        if not _is_norm(child):
            break
    return conv_name


def default_target_layer(model: nn.Layer) -> str:
    """Name (as in `model.named_sublayers()`) of the layer Grad-CAM explains by default.

    Families listed in DEFAULT_TARGET_LAYERS use their last block; any other network uses
    its last Conv2D outside auxiliary heads, or the activation right after it.
    """
    name = DEFAULT_TARGET_LAYERS.get(type(model).__name__)
    if name is not None:
        return name(model) if callable(name) else name
    convs = [
        n
        for n, layer in model.named_sublayers()
        if isinstance(layer, nn.Conv2D) and not any(m in n.lower() for m in _AUX_MARKERS)
    ]
    if not convs:
        raise BadConfig(f"{type(model).__name__} has no Conv2D layer; pass target_layer")
    return _after_activation(model, convs[-1])


def find_layer(model: nn.Layer, name: str) -> nn.Layer:
    """The sublayer called `name`; ValueError listing some valid names when there is none."""
    layers = dict(model.named_sublayers())
    if name in layers:
        return layers[name]
    convs = [n for n, layer in layers.items() if isinstance(layer, nn.Conv2D)]
    # the last few conv names and the top-level blocks are the names people want here
    tops = [n for n in layers if "." not in n]
    hint = ", ".join(dict.fromkeys(tops[-6:] + convs[-4:]))
    raise BadConfig(
        f"{type(model).__name__} has no sublayer {name!r}; valid names include: {hint}"
    )


def _as_input(x: paddle.Tensor | np.ndarray) -> paddle.Tensor:
    # detach: never change the caller's tensor (stop_gradient is set on ours)
    if isinstance(x, paddle.Tensor):
        return x.detach().astype("float32")
    return paddle.to_tensor(np.asarray(x, dtype=np.float32))


def _logits(out) -> paddle.Tensor:
    out = main_output(out)
    if out.ndim != 2:
        raise ValueError(
            f"model output has shape {list(out.shape)}; CAM needs logits [N, num_classes]"
        )
    return out


def _target_classes(logits: np.ndarray, class_index: ClassIndex) -> tuple[np.ndarray, np.ndarray]:
    """Which logit to explain per sample and with which sign: ([N] column, [N] +-1).

    One logit (sigmoid model): class 1 (default) explains the positive class, class 0 the
    negative one, whose score is the negated logit. Several logits: the given class, or the
    argmax when `class_index` is None.
    """
    n, k = logits.shape
    if class_index is None:
        idx = np.ones(n, dtype=np.int64) if k == 1 else logits.argmax(axis=1)
    else:
        idx = np.asarray(class_index, dtype=np.int64).reshape(-1)
        if idx.size not in (1, n):
            raise BadConfig(f"class_index has {idx.size} entries for a batch of {n}")
        idx = np.broadcast_to(idx, (n,))
    n_cls = 2 if k == 1 else k
    if idx.min() < 0 or idx.max() >= n_cls:
        raise BadConfig(f"class_index {class_index} out of range for {n_cls} classes")
    if k == 1:
        return np.zeros(n, dtype=np.int64), np.where(idx == 1, 1.0, -1.0).astype(np.float32)
    return idx.astype(np.int64), np.ones(n, dtype=np.float32)


def target_index(target: str | int | None, meta: dict) -> int | None:
    """The class index `target` names for a checkpoint's sidecar `meta`: a class name (a
    label of a multi-label model, a grade of an ordinal one) or its index; None stays None
    (the default: the positive class / the highest-probability class or label).

    Raises:
        BadConfig: not a name or index of this model; the one line lists the valid ones.
    """
    if target is None:
        return None
    names = [str(n) for n in meta.get("class_names") or []]
    count = len(names) or max(2, int(meta["num_classes"]))
    text = str(target).strip()
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < count:
        return int(text)
    kind = {"multilabel": "label", "ordinal": "grade"}.get(meta.get("task"), "class")
    raise BadConfig(f"target {text!r}: not a {kind} of this model; choose one of "
                    f"{', '.join(names) or 'none named'} (or an index 0..{count - 1})",
                    param="target")


def _normalize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """ReLU, upsample each map to (H, W) and scale it to [0, 1] (an all-zero map stays 0)."""
    h, w = size
    out = np.empty((len(maps), h, w), dtype=np.float32)
    for i, m in enumerate(np.maximum(maps, 0).astype(np.float32)):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        m -= m.min()
        peak = m.max()
        out[i] = m / peak if peak > 0 else m
    return out


def _warn_one_by_one(target_layer: str, input_size: tuple[int, int]) -> None:
    """A 1 x 1 feature map has no "where": every heatmap comes out blank."""
    warnings.warn(
        f"Grad-CAM layer {target_layer!r} is 1 x 1 for {input_size[0]}x{input_size[1]} input, "
        "so the heatmaps are blank; use a larger --image-size or an earlier target layer",
        stacklevel=3,
    )


class _Capture:
    """Forward post hook that keeps the layer's latest output."""

    def __init__(self, layer: nn.Layer):
        self.value: paddle.Tensor | None = None
        self._handle = layer.register_forward_post_hook(self._hook)

    def _hook(self, layer, inputs, output):
        self.value = output[0] if isinstance(output, (tuple, list)) else output

    def remove(self) -> None:
        self._handle.remove()


class _EvalMode:
    """Run the model in eval mode (BN statistics, no dropout), then restore its mode."""

    def __init__(self, model: nn.Layer):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


class GradCAM:
    """Grad-CAM for a paddle model, by sublayer name.

    Args:
        model: any `paddle.nn.Layer` returning logits [N, K] (or a tuple whose first item is).
        target_layer: a name from `model.named_sublayers()`, e.g. "layer4"; default: the last
            convolutional block of the family (`default_target_layer`).

    Example:
        >>> maps = GradCAM(resnet18(num_classes=1))(paddle.rand([2, 3, 64, 64]))
        >>> maps.shape
        (2, 64, 64)
    """

    def __init__(self, model: nn.Layer, target_layer: str | None = None):
        self.model = model
        self.target_layer = target_layer or default_target_layer(model)
        self.layer = find_layer(model, self.target_layer)

    def cam_with_logits(
        self, x: paddle.Tensor | np.ndarray, class_index: ClassIndex = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps [N, H, W] in [0, 1] at the input's resolution, and the logits [N, K]."""
        x = _as_input(x)
        # A graph is needed even when every parameter is frozen.
        x.stop_gradient = False
        capture = _Capture(self.layer)
        try:
            with _EvalMode(self.model), paddle.set_grad_enabled(True):
                logits = _logits(self.model(x))
                act = capture.value
                if act is None or act.ndim != 4:
                    shape = None if act is None else list(act.shape)
                    raise BadConfig(
                        f"target layer {self.target_layer!r} gave {shape}; "
                        "Grad-CAM needs a feature map [N, C, h, w]"
                    )
                if act.shape[2] * act.shape[3] == 1:
                    _warn_one_by_one(self.target_layer, tuple(x.shape[2:]))
                column, sign = _target_classes(logits.numpy(), class_index)
                pick = np.eye(logits.shape[1], dtype=np.float32)[column] * sign[:, None]
                scores = (logits * paddle.to_tensor(pick)).sum(axis=1)
                # paddle.grad leaves the parameters' .grad untouched (the model is not modified).
                (grad,) = paddle.grad(scores.sum(), act, allow_unused=True)
        finally:
            capture.remove()
        if grad is None:
            raise BadConfig(
                f"the output does not depend on layer {self.target_layer!r}; pass another "
                "target_layer"
            )
        weights = grad.mean(axis=[2, 3], keepdim=True)
        maps = (weights * act).sum(axis=1).numpy()
        return _normalize_maps(maps, tuple(x.shape[2:])), logits.numpy()

    def cam(self, x: paddle.Tensor | np.ndarray, class_index: ClassIndex = None) -> np.ndarray:
        """Heatmaps [N, H, W] in [0, 1] at the input's resolution.

        Args:
            x: images [N, C, H, W], preprocessed as for the model.
            class_index: class to explain, one int or one per sample. One-logit models: 1
                (default) is the positive class, 0 the negative. Multi-class: default argmax.
        """
        return self.cam_with_logits(x, class_index)[0]

    __call__ = cam


def class_activation_map(
    model: nn.Layer,
    x: paddle.Tensor | np.ndarray,
    target_layer: str | None = None,
    fc_layer: str | None = None,
    class_index: ClassIndex = None,
) -> np.ndarray:
    """Plain CAM for networks ending in global average pooling + one linear layer.

    Args:
        model: the network; `target_layer` is the feature map fed to the pooling (default as
            for GradCAM), `fc_layer` the final nn.Linear (default: the one whose output is
            the logits).
        x, class_index: as for `GradCAM.cam`.

    Returns:
        Heatmaps [N, H, W] in [0, 1] at the input's resolution.

    Raises:
        ValueError: the linear layer's inputs do not match the feature map's channels, i.e.
            the head is not GAP + linear (use GradCAM instead).
    """
    target_layer = target_layer or default_target_layer(model)
    if fc_layer is None:
        # The head is whichever nn.Linear produced the logits; registration order would pick
        # GoogLeNet's auxiliary classifier, which is registered after the main one.
        linears = {n: _Capture(m) for n, m in model.named_sublayers() if isinstance(m, nn.Linear)}
    else:
        linears = {fc_layer: _Capture(find_layer(model, fc_layer))}
    capture = _Capture(find_layer(model, target_layer))
    try:
        with _EvalMode(model), paddle.no_grad():
            x = _as_input(x)
            logits = _logits(model(x))
            act = capture.value
    finally:
        for c in [capture, *linears.values()]:
            c.remove()
    heads = [
        n for n, c in linears.items()
        if c.value is not None and c.value.shape == logits.shape
        and np.allclose(c.value.numpy(), logits.numpy())
    ]
    if not heads:
        raise BadConfig(
            f"plain CAM needs a final nn.Linear producing the logits; {type(model).__name__} "
            "has none (use GradCAM)"
        )
    fc_layer = heads[-1]
    weight = find_layer(model, fc_layer).weight.numpy()  # [in_features, num_classes]
    if act is None or act.ndim != 4 or act.shape[1] != weight.shape[0]:
        shape = None if act is None else list(act.shape)
        raise BadConfig(
            f"plain CAM needs global average pooling + one linear layer: {target_layer!r} gives "
            f"{shape} but {fc_layer!r} takes {weight.shape[0]} inputs; use GradCAM"
        )
    column, sign = _target_classes(logits.numpy(), class_index)
    maps = np.einsum("nchw,cn->nhw", act.numpy(), weight[:, column] * sign)
    return _normalize_maps(maps, tuple(x.shape[2:]))


def overlay_heatmap(
    original_rgb: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.4,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """Blend a [0, 1] heatmap onto the original photo (any size) with an OpenCV colour map.

    The heatmap is resized to the photo, so the overlay keeps the photo's resolution and
    aspect ratio rather than the square model input.

    Args:
        original_rgb: HxWx3 uint8 RGB photo.
        heatmap: hxw float map in [0, 1].
        alpha: weight of the colour map (0 = photo only).

    Returns:
        HxWx3 uint8 RGB.
    """
    if original_rgb.ndim != 3 or original_rgb.shape[2] != 3 or original_rgb.dtype != np.uint8:
        raise ValueError(
            f"original must be HxWx3 uint8 RGB, got {original_rgb.shape} {original_rgb.dtype}"
        )
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {heatmap.shape}")
    h, w = original_rgb.shape[:2]
    heat = cv2.resize(heatmap.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat8 = np.uint8(np.clip(heat, 0.0, 1.0) * 255)
    colour = cv2.cvtColor(cv2.applyColorMap(heat8, colormap), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(original_rgb, 1.0 - alpha, colour, alpha, 0.0)


# A map with no range (all zero after the ReLU: nothing raised the score) has no "low" and
# "high" to put on a legend; viewers say this instead of showing a colour ramp.
# what the heatmap of a CORAL or regression grader explains (the service names it)
GRADE_SCORE = "grade score (behind every grade)"
FLAT_MAP_NOTE = "no attention above zero: the map is flat, so nothing is highlighted"


def attention_note(heatmap: np.ndarray) -> str | None:
    """None when `heatmap` has a range (a low-to-high legend means something), else
    `FLAT_MAP_NOTE`."""
    return None if float(np.ptp(heatmap)) > 0 else FLAT_MAP_NOTE


@dataclass
class CamImage:
    """One explained file: the overlay on the photo and the class probabilities, or an error."""

    path: str
    overlay: np.ndarray | None = None  # HxWx3 uint8 RGB, the photo's aspect ratio
    photo: np.ndarray | None = None  # the photo under the overlay (cropped/shrunk as asked)
    probabilities: np.ndarray | None = None  # [K]; one-logit models: [P(positive)]
    error: str | None = None


# an overlay smaller than the smallest model input shows nothing (cam --max-side 3 was 3 px)
MIN_MAX_SIDE = 16


def check_max_side(max_side: int | None) -> None:
    """Raise BadConfig(param="max_side") unless max_side is None, 0 or >= MIN_MAX_SIDE."""
    if max_side and max_side < MIN_MAX_SIDE:
        raise BadConfig(f"max_side must be 0 (full size) or >= {MIN_MAX_SIDE} px, got {max_side}",
                        param="max_side")


def _shrink(img: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def explain_files(
    model: nn.Layer,
    meta: dict,
    paths: Iterable[str | Path],
    *,
    target_layer: str | None = None,
    class_index: ClassIndex = None,
    batch_size: int = 8,
    max_side: int | None = None,
    alpha: float = 0.4,
) -> Iterator[CamImage]:
    """Grad-CAM overlays for image files, preprocessed as the checkpoint's sidecar says.

    Bad files are yielded with `error` set (never raised), so a folder with one broken image
    still gets the rest explained.

    Args:
        model, meta: as returned by `palm.engine.checkpoint.load_checkpoint_model`.
        paths: image files.
        max_side: shrink the photo (keeping its aspect) so its longer side is at most this
            before overlaying; None keeps the full resolution.
    """
    check_max_side(max_side)
    grader = Grader.from_meta(meta)
    if grader is not None and grader.ordinal_loss != "ce":
        # one score lies behind every grade (CORAL's cumulative logits, a regression's
        # output): Grad-CAM explains what raised it, so there is no grade to choose
        if class_index is not None:
            raise BadConfig(f"target: a grader trained with ordinal_loss {grader.ordinal_loss} "
                            f"has one score behind every grade; its Grad-CAM explains that "
                            f"score (run it without one)", param="target")
    cam = GradCAM(model, target_layer)
    # The crop is applied here, once, so the overlay shows the same field the model saw.
    transform = eval_transform(meta, fundus_crop=False)
    decode_size = max(int(meta["image_size"]), max_side or 0) if max_side else None
    batch: list[tuple[str, np.ndarray]] = []

    def flush() -> Iterator[CamImage]:
        x = np.stack([transform(photo) for _, photo in batch])
        maps, logits = cam.cam_with_logits(x, class_index)
        for (path, photo), heat, prob in zip(batch, maps, _shown_probabilities(logits, grader)):
            yield CamImage(path, overlay_heatmap(photo, heat, alpha), photo, prob)
        batch.clear()

    for path in paths:
        path = str(path)
        try:
            photo = read_image(path, target_size=decode_size)
            if meta.get("fundus_crop"):
                photo = crop_fundus(photo)
        except (ImageReadError, OSError, ValueError) as e:
            yield CamImage(path, error=str(e) if path in str(e) else f"{path}: {e}")
            continue
        batch.append((path, _shrink(photo, max_side)))
        if len(batch) == batch_size:
            yield from flush()
    if batch:
        yield from flush()


def _shown_probabilities(logits: np.ndarray, grader: Grader | None) -> list[np.ndarray | None]:
    """Per image: the class probabilities (a grading model's grade probabilities as its
    grader reads them; None for a grade regression, which has none)."""
    if grader is None:
        return list(probabilities(logits).reshape(len(logits), -1))
    grades = grader.readout(logits).probabilities
    return [None] * len(logits) if grades is None else list(grades)


def overlay_name(path: str | Path, root: str | Path | None = None) -> Path:
    """Output name of an overlay: `<folders below root>/<file name>_cam.png`.

    The input's extension stays in the name (`eye.jpg` -> `eye.jpg_cam.png`), so `eye.jpg`
    and `eye.png` in one folder get two overlays, not one overwriting the other.
    """
    path = Path(path)
    rel = path.name
    if root is not None:
        try:
            rel = path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            pass
    return Path(rel).with_name(f"{Path(rel).name}_cam.png")


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically (unicode paths work)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        buf.tofile(tmp)


def write_cam_overlays(
    model: nn.Layer,
    meta: dict,
    paths: Iterable[str | Path],
    output_dir: str | Path,
    *,
    root: str | Path | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    **explain_kw,
) -> tuple[int, list[str]]:
    """Write a Grad-CAM overlay PNG per image into `output_dir` (see `overlay_name`).

    Args:
        root: folder the inputs were found under; its subfolders are mirrored.
        progress: optional wrapper such as `tqdm`, applied to the results.
        explain_kw: passed to `explain_files` (target_layer, class_index, max_side, ...).

    Returns:
        (number of overlays written, one-line error per bad file).
    """
    written, errors = 0, []
    results = explain_files(model, meta, paths, **explain_kw)
    for item in progress(results) if progress else results:
        if item.error:
            errors.append(item.error)
            continue
        write_png(Path(output_dir) / overlay_name(item.path, root), item.overlay)
        written += 1
    return written, errors
