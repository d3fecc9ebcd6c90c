"""palm.data transforms: augmentation presets and their settings."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from palm.data import build_transform, parse_augment, resolve_augment
from palm.engine.runner import resolved_augment


REPO = Path(__file__).resolve().parents[2]


T32 = build_transform(32, train=False)


def _arrow(pointing_left: bool) -> np.ndarray:
    """A white arrow on black whose tip is on the left (or right)."""
    img = np.zeros((48, 48, 3), np.uint8)
    cv2.fillPoly(img, [np.array([[4, 24], [20, 8], [20, 40]])], (255, 255, 255))
    cv2.rectangle(img, (20, 18), (44, 30), (255, 255, 255), -1)
    return img if pointing_left else np.ascontiguousarray(img[:, ::-1])


def _points_left(x: np.ndarray) -> bool:
    """The arrow head (the tallest lit column, at the triangle's base) is in the left half."""
    gray = x.mean(axis=0)
    gray = gray - gray.min()
    w = gray.shape[1]
    rows_lit = (gray > gray.max() / 2).sum(axis=0)
    return rows_lit[: w // 2].max() > rows_lit[w // 2 :].max()


def test_generic_default_never_flips_or_rotates():
    cfg = {"augment": None, "data_root": None, "train_csv": None, "val_csv": None}
    generic = resolved_augment(cfg)
    assert generic["preset"] == "natural"
    assert not generic["hflip"] and not generic["vflip"] and generic["rotate"] == 0
    assert resolved_augment({**cfg, "data_root": "data/PALM"})["preset"] == "fundus"
    # a data root holding the images of CSV lists is not the PALM layout
    lists = {**cfg, "data_root": "data", "train_csv": "t.csv", "val_csv": "v.csv"}
    assert resolved_augment(lists) == generic

    left, right = _arrow(True), _arrow(False)
    assert _points_left(T32(left)) and not _points_left(T32(right))
    safe = build_transform(32, train=True, augment=generic)
    fundus = build_transform(32, train=True, augment="fundus")
    np.random.seed(0)
    assert all(_points_left(safe(left)) and not _points_left(safe(right)) for _ in range(40))
    # the check can fail: fundus flips turn some arrows around
    assert sum(_points_left(fundus(right)) for _ in range(40)) > 5


def test_augment_text_and_mapping_settings():
    assert parse_augment("natural,hflip=true,rotate=5") == {"preset": "natural", "hflip": True,
                                                            "rotate": 5}
    a = resolve_augment("natural,hflip=true", "fundus")
    assert a["preset"] == "natural" and a["hflip"] and not a["vflip"]
    b = resolve_augment({"rotate": 0}, "fundus")  # an old-style override map
    assert b["preset"] == "fundus" and b["hflip"] and b["rotate"] == 0.0
    assert resolve_augment(b, "natural") == b  # a saved config.yaml reads back the same
    assert resolve_augment("none", "fundus")["random_resized_crop"] == 1.0
    for bad, message in (("blurry", "unknown augment preset 'blurry'"),
                         ("blur=1", r"unknown augment keys \['blur'\]"),
                         ("rotate=400", r"rotate=400 out of range \[0, 180\]"),
                         ("hflip=maybe", "hflip must be true or false"),
                         ("none,fundus", "two presets")):
        with pytest.raises(ValueError, match=message):
            resolve_augment(bad, "natural")


def test_model_configs_load_with_the_new_augment_default():
    for path in sorted((REPO / "palm" / "configs").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        resolve_augment(cfg.get("augment"), "fundus")  # none sets one today; any must resolve
