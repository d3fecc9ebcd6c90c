"""Small image folders the tests build from the synthetic PALM set or from noise, and the
tiny training options they train with."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

# one epoch of LeNet at 32 px on the CPU: the cheapest run a tool test can ask for
TINY_TRAINING = ["--model", "lenet", "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                 "--num-workers", "0", "--cache-dir", "none", "--device", "cpu", "--no-progress"]


def pm_normal_folders(palm_root: Path, root: Path) -> Path:
    """ROOT/{train,val}/{PM,normal}/ class folders copied from the synthetic PALM images."""
    train = sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))
    gt = pd.read_csv(palm_root / "PALM-Validation-GT" / "labels.csv")
    for path in train:
        dst = root / "train" / ("PM" if path.name.startswith("P") else "normal")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dst / path.name)
    for name, label in zip(gt["imgName"], gt["Label"]):
        dst = root / "val" / ("PM" if label == 1 else "normal")
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy(palm_root / "PALM-Validation400" / name, dst / name)
    return root


def noise_photos(folder: Path, n: int, size: int = 32) -> Path:
    """`n` random `size`-px PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return folder
