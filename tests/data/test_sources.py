"""palm.data sources: which class is positive (known names, refusals)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from palm.data import build_transform, class_order
from palm.data import sources
from tests.folders import pm_normal_folders


T32 = build_transform(32, train=False)


def _write_png(path: Path, value: int = 100, size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def test_known_positive_name_goes_to_label_1(palm_root, tmp_path):
    root = pm_normal_folders(palm_root, tmp_path)
    train, val = sources.training_sets(train_transform=T32, val_transform=T32,
                                       train_dir=root / "train", val_dir=root / "val")
    # sorted folder names would make "normal" label 1
    assert train.classes == val.classes == ["normal", "PM"]
    for ds in (train, val):
        assert all((Path(p).parent.name == "PM") == bool(y) for p, y in ds.samples)
    assert class_order(["0", "1"]) == ["0", "1"]
    assert class_order(["Yes", "no"]) == ["no", "Yes"]
    assert class_order(["a", "b", "c"]) == ["a", "b", "c"]  # multi-class: unchanged


def test_unknown_names_are_refused_naming_both(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(2):
            _write_png(tmp_path / "train" / cls / f"{i}.png", 50 * i)
            _write_png(tmp_path / "val" / cls / f"{i}.png", 50 * i)
    kw = {"train_transform": T32, "val_transform": T32, "train_dir": tmp_path / "train",
          "val_dir": tmp_path / "val"}
    with pytest.raises(ValueError, match=r"two classes 'cat' and 'dog'.*positive_class dog "
                                         r"or positive_class cat"):
        sources.training_sets(**kw)
    train, val = sources.training_sets(**kw, positive_class="cat")
    assert train.classes == val.classes == ["dog", "cat"]
    assert [Path(p).parent.name for p, y in train.samples if y == 1] == ["cat", "cat"]
    train, _ = sources.training_sets(**kw, class_names=["cat", "dog"])  # [negative, positive]
    assert train.classes == ["cat", "dog"]
    with pytest.raises(ValueError, match="positive class 'bird' is not one of"):
        sources.training_sets(**kw, positive_class="bird")
    with pytest.raises(ValueError, match="put 'dog' second .* positive class is 'cat'"):
        sources.training_sets(**kw, class_names=["cat", "dog"], positive_class="cat")
