"""Transforms: HWC uint8 RGB -> CHW float32, with OpenCV/numpy training augmentations.

Randomness comes from the `np.random` module functions, so it follows the process-wide numpy
seed: in the main process seed it once with `np.random.seed(seed)`; in DataLoader workers
`build_loader` reseeds numpy per worker and per epoch (see palm/data/loader.py).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import yaml

from palm.errors import BadConfig

NORMALIZATIONS = ("minus_one_one", "imagenet")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# Augmentation presets by kind of data; `augment` settings pick one and override keys.
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    # fundus photos: the eye has no preferred left/right or up/down orientation once left
    # and right eyes are mixed, and small rotations mimic head tilt
    "fundus": {
        "hflip": True,
        "vflip": True,
        "rotate": 10.0,  # max degrees either way
        "brightness": 0.2,  # factor drawn from 1 +- this
        "contrast": 0.2,  # factor drawn from 1 +- this
        "random_resized_crop": 0.8,  # min area fraction kept; 1 disables the crop
    },
    # any other images: only changes that cannot change what an image shows (a mirrored or
    # rotated digit can be another digit); ask for flips explicitly (hflip=true)
    "natural": {
        "hflip": False,
        "vflip": False,
        "rotate": 0.0,
        "brightness": 0.2,
        "contrast": 0.2,
        "random_resized_crop": 0.8,
    },
    "none": {
        "hflip": False,
        "vflip": False,
        "rotate": 0.0,
        "brightness": 0.0,
        "contrast": 0.0,
        "random_resized_crop": 1.0,
    },
}
DEFAULT_AUGMENT = AUGMENT_PRESETS["fundus"]
_FLAGS = ("hflip", "vflip")
_LIMITS = {"rotate": (0.0, 180.0), "brightness": (0.0, 1.0), "contrast": (0.0, 1.0),
           "random_resized_crop": (0.0, 1.0)}  # (exclusive low for the crop, inclusive high)


def parse_augment(text: str) -> dict[str, Any]:
    """`--augment` text -> setting: "fundus", "none,contrast=0.1", "hflip=true,rotate=5".

    A bare word is a preset; key=value pairs are overrides (values read as YAML scalars).
    """
    setting: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            key, value = (x.strip() for x in part.split("=", 1))
            try:
                setting[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                setting[key] = value  # reported by resolve_augment as a bad value
        elif "preset" in setting:
            raise BadConfig(f"augment {text!r}: two presets ({setting['preset']}, {part})",
                            param="augment")
        else:
            setting["preset"] = part
    return setting


def resolve_augment(setting: str | dict[str, Any] | None, default_preset: str) -> dict[str, Any]:
    """The full augmentation for a setting: {"preset": name, hflip, vflip, rotate, ...}.

    Args:
        setting: None, "auto" or {} (the default preset); a preset name or `--augment` text;
            or a mapping of overrides, optionally with `preset`.
        default_preset: the preset when the setting names none ("fundus" for PALM data,
            "natural" for other data).

    Raises:
        ValueError: unknown preset or key, or a value of the wrong type or range.
    """
    if setting is None or setting == "auto":
        setting = {}
    if isinstance(setting, str):
        setting = parse_augment(setting)
    if not isinstance(setting, dict):
        raise BadConfig(f"augment: expected a preset name or a mapping, got {setting!r}")
    overrides = dict(setting)
    preset = overrides.pop("preset", None) or default_preset
    if preset not in AUGMENT_PRESETS:
        raise BadConfig(f"unknown augment preset {preset!r}; choose from "
                         f"{', '.join(AUGMENT_PRESETS)}")
    unknown = set(overrides) - set(DEFAULT_AUGMENT)
    if unknown:
        raise BadConfig(
            f"unknown augment keys {sorted(unknown)}; valid: preset, {', '.join(DEFAULT_AUGMENT)}"
        )
    merged = {**AUGMENT_PRESETS[preset], **overrides}
    for key, value in merged.items():
        merged[key] = _augment_value(key, value)
    return {"preset": preset, **merged}


def _augment_value(key: str, value: Any) -> bool | float:
    if key in _FLAGS:
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise BadConfig(f"augment {key} must be true or false, got {value!r}")
        return bool(value)
    if isinstance(value, bool) and key != "random_resized_crop":
        value = float(value)  # rotate: false etc. turn an augmentation off
    if key == "random_resized_crop" and value in (0, False, None):
        value = 1.0  # 0/false/null disable the crop, as 1 does
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadConfig(f"augment {key} must be a number, got {value!r}")
    low, high = _LIMITS[key]
    too_low = value <= low if key == "random_resized_crop" else value < low
    if too_low or value > high or math.isnan(value):
        bounds = f"({low:g}, {high:g}]" if key == "random_resized_crop" else f"[{low:g}, {high:g}]"
        raise BadConfig(f"augment {key}={value!r} out of range {bounds}")
    return float(value)


def describe_augment(augment: dict[str, Any]) -> str:
    """One line for the start of a run, e.g. "natural: brightness 0.2, contrast 0.2, ..."."""
    on = []
    for key in DEFAULT_AUGMENT:
        value = augment[key]
        if key in _FLAGS and value:
            on.append(key)
        elif key == "random_resized_crop" and value < 1.0:
            on.append(f"random_resized_crop {value:g}")
        elif key not in _FLAGS and key != "random_resized_crop" and value:
            on.append(f"{key} {value:g}")
    return f"{augment['preset']}: {', '.join(on) or 'off'}"


def crop_fundus(img: np.ndarray, threshold: int = 20) -> np.ndarray:
    """Trim the dark border around the circular fundus, then pad to a square with black.

    Padding (rather than cropping the fundus) keeps the circle round when the camera clipped
    it at the top and bottom, as in many PALM photos. An image with no bright region (or no
    border) is returned unchanged.

    Args:
        img: HxWx3 uint8 RGB.
        threshold: a pixel whose brightest channel exceeds this counts as fundus.

    Returns:
        HxWx3 uint8, square unless the input had nothing to crop.
    """
    bright = img.max(axis=2) > threshold
    # ignore stray bright pixels (sensor noise, burnt-in text): a fundus row/column holds
    # at least 2 % bright pixels
    rows = np.flatnonzero(bright.mean(axis=1) > 0.02)
    cols = np.flatnonzero(bright.mean(axis=0) > 0.02)
    if rows.size == 0 or cols.size == 0:
        return img
    box = img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = box.shape[:2]
    side = max(h, w)
    if h == w:
        return np.ascontiguousarray(box)
    top, left = (side - h) // 2, (side - w) // 2
    return cv2.copyMakeBorder(
        box, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size ignoring aspect (as PALM models are trained); area filter to shrink."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def random_resized_crop(img: np.ndarray, size: int, scale_min: float) -> np.ndarray:
    """Crop a random area fraction in [scale_min, 1] with aspect in [3/4, 4/3], resize to size."""
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * np.random.uniform(scale_min, 1.0)
        aspect = math.exp(np.random.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            y = np.random.randint(0, h - ch + 1)
            x = np.random.randint(0, w - cw + 1)
            return resize_square(img[y : y + ch, x : x + cw], size)
    return resize_square(img, size)  # extreme aspect: fall back to the whole image


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre, filling with black (the fundus surround)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def normalize(img: np.ndarray, mode: str = "minus_one_one") -> np.ndarray:
    """HWC 0..255 -> CHW float32: "minus_one_one" = x/255*2-1, "imagenet" = (x/255-mean)/std."""
    x = img.astype(np.float32) * (1.0 / 255.0)
    if mode == "minus_one_one":
        x = x * 2.0 - 1.0
    elif mode == "imagenet":
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    else:
        raise BadConfig(f"unknown normalize {mode!r}; choose from {', '.join(NORMALIZATIONS)}")
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class Transform:
    """Callable HWC uint8 RGB -> CHW float32 built by `build_transform`.

    Attributes:
        image_size: output side.
        decode_size: short side the source needs for full quality; datasets pass it to
            `read_image` / the cache as `target_size` (larger than image_size when a random
            crop will zoom in).
    """

    def __init__(
        self, image_size: int, train: bool, normalize: str, augment: dict, fundus_crop: bool
    ):
        self.image_size = image_size
        self.train = train
        self.normalize = normalize
        self.augment = augment
        self.fundus_crop = fundus_crop
        scale_min = augment["random_resized_crop"] if train else 1.0
        self.decode_size = math.ceil(image_size / math.sqrt(scale_min))

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if self.fundus_crop:
            img = crop_fundus(img)
        if not self.train:
            return normalize(resize_square(img, self.image_size), self.normalize)
        aug = self.augment
        if aug["random_resized_crop"] < 1.0:
            img = random_resized_crop(img, self.image_size, aug["random_resized_crop"])
        else:
            img = resize_square(img, self.image_size)
        if aug["hflip"] and np.random.rand() < 0.5:
            img = img[:, ::-1]
        if aug["vflip"] and np.random.rand() < 0.5:
            img = img[::-1]
        if aug["rotate"]:
            img = rotate(
                np.ascontiguousarray(img), np.random.uniform(-aug["rotate"], aug["rotate"])
            )
        x = img.astype(np.float32)
        if aug["contrast"]:
            c = np.random.uniform(1 - aug["contrast"], 1 + aug["contrast"])
            x = (x - x.mean()) * c + x.mean()
        if aug["brightness"]:
            x = x * np.random.uniform(1 - aug["brightness"], 1 + aug["brightness"])
        return normalize(np.clip(x, 0, 255), self.normalize)

    def __repr__(self) -> str:
        extra = f", augment={self.augment}" if self.train else ""
        return (
            f"Transform(image_size={self.image_size}, train={self.train}, "
            f"normalize={self.normalize!r}, fundus_crop={self.fundus_crop}{extra})"
        )


def build_transform(
    image_size: int,
    train: bool,
    normalize: str = "minus_one_one",
    augment: dict | None = None,
    fundus_crop: bool = False,
) -> Transform:
    """Build the image pipeline for training (augmented) or evaluation.

    Args:
        image_size: output is image_size x image_size.
        train: apply the augmentations in `augment`.
        normalize: "minus_one_one" (x/255*2-1, default) or "imagenet" (for pretrained weights).
        augment: a `resolve_augment` setting: a preset name (fundus, natural, none) or a
            mapping of overrides (hflip, vflip, rotate, brightness, contrast,
            random_resized_crop; a 0/False value turns that augmentation off) with an
            optional `preset`; None: the fundus preset.
        fundus_crop: trim the black border around the fundus first.

    Returns:
        Transform: HxWx3 uint8 RGB -> 3 x image_size x image_size float32.

    Example:
        >>> build_transform(64, train=False)(np.zeros((100, 120, 3), np.uint8)).shape
        (3, 64, 64)
    """
    if normalize not in NORMALIZATIONS:
        raise BadConfig(
            f"unknown normalize {normalize!r}; choose from {', '.join(NORMALIZATIONS)}"
        )
    if image_size < 1:
        raise BadConfig(f"image_size must be positive, got {image_size}")
    return Transform(image_size, train, normalize, resolve_augment(augment, "fundus"), fundus_crop)


def eval_transform(meta: dict[str, Any], fundus_crop: bool | None = None) -> Transform:
    """The evaluation pipeline a checkpoint was trained for, from its sidecar (`meta`):
    image_size, normalize and fundus_crop. `fundus_crop` overrides the sidecar's, for a
    caller that crops the photo itself (Grad-CAM shows the overlay on the cropped field)."""
    crop = meta.get("fundus_crop", False) if fundus_crop is None else fundus_crop
    return build_transform(int(meta["image_size"]), train=False,
                           normalize=meta.get("normalize", "minus_one_one"), fundus_crop=crop)
