"""Tiny labelled sets for the tasks beyond one binary label (DR grades as an ordinal task,
findings as a multi-label one) and the two-epoch LeNet runs trained on them; tests/conftest.py
shares the runs per session (read-only: copy a run before changing its sidecar)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from palm import config
from palm.engine.runner import run_training

GRADES = 5
LABELS = ["diabetes", "glaucoma", "myopia"]


def graded_csvs(root: Path, n_train: int = 40, n_val: int = 30) -> Path:
    """ROOT/{train,val}.csv (path,label) of 32-px photos whose brightness grows with the
    grade, so a network can learn it."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for i in range(n):
            grade = i % GRADES
            image = np.clip(rng.normal(40 + 45 * grade, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            path = root / split / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image)
            rows.append((f"{split}/{path.name}", grade))
        pd.DataFrame(rows, columns=["path", "label"]).to_csv(root / f"{split}.csv", index=False)
    return root


def multilabel_csvs(root: Path, n_train: int = 48, n_val: int = 36) -> Path:
    """ROOT/{train,val}.csv (path + a 0/1 column per label) of 32-px photos: each label lights
    its own colour channel, so a network can learn them independently."""
    rng = np.random.default_rng(4)
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for i in range(n):
            labels = [(i >> j) & 1 for j in range(len(LABELS))]  # every combination
            image = rng.normal(60, 15, (32, 32, 3))
            image += np.array(labels) * 120
            path = root / split / f"{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
            rows.append((f"{split}/{path.name}", *labels))
        pd.DataFrame(rows, columns=["path", *LABELS]).to_csv(root / f"{split}.csv", index=False)
    return root


def set_cells(csv: Path, row: int, values: dict) -> None:
    """Write `values` ({column: value}) into data row `row` (0-based) of `csv`."""
    table = pd.read_csv(csv)
    for column, value in values.items():
        table[column] = table[column].astype(object)
        table.loc[row, column] = value
    table.to_csv(csv, index=False)


def train_run(root: Path, output: Path, model: str = "lenet5", **options) -> Path:
    """A two-epoch run (LeNet unless `model`) at 32 px on ROOT/train.csv, validated on
    ROOT/val.csv."""
    cfg = {**config.DEFAULTS, **config.model_config(model), "train_csv": str(root / "train.csv"),
           "val_csv": str(root / "val.csv"), "image_size": 32, "batch_size": 8, "epochs": 2,
           "num_workers": 0, "device": "cpu", "cache_dir": None, "output": str(output),
           "augment": "none", **options}
    return run_training(config.validate_config(cfg), progress=False, log=lambda _: None)


def train_root_run(root: Path, output: Path, **options) -> Path:
    """A one-epoch LeNet run (32 px, no augmentation unless `options` say) on a download
    found by `data_root` (APTOS-2019, IDRiD, PALM)."""
    cfg = {**config.DEFAULTS, **config.model_config("lenet5"), "data_root": str(root),
           "image_size": 32, "batch_size": 8, "epochs": 1, "num_workers": 0, "device": "cpu",
           "cache_dir": None, "output": str(output), "augment": "none", **options}
    return run_training(config.validate_config(cfg), progress=False, log=lambda _: None)


def ordinal_run(root: Path, output: Path, **options) -> Path:
    """An ordinal run on `graded_csvs` data (referable from grade 3)."""
    return train_run(root, output, task="ordinal", referable_grade=3, **options)


def multilabel_run(root: Path, output: Path, **options) -> Path:
    """A multi-label run on `multilabel_csvs` data."""
    return train_run(root, output, **{"task": "multilabel", "label_columns": LABELS,
                                      "pos_weight": "auto", "epochs": 3, "lr": 0.01, **options})
