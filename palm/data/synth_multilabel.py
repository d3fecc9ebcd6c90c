"""Synthetic fundus photos with several findings at once, for multi-label screening.

Each photo has, independently, any of three findings (ODIR-5K screens eight this way):

- `myopia`: pathologic myopia as palm.data.synth draws it (tessellation, peripapillary and
  patchy atrophy);
- `retinopathy`: moderate or severe diabetic retinopathy as palm.data.synth_grading draws it;
- `glaucoma`: a large, pale optic cup (cup-to-disc ratio 0.7-0.85 against 0.3-0.5).

Written as multi-label CSV lists palm reads with `--train-csv/--val-csv --task multilabel`:
`train.csv` and `val.csv` with `path` and a 0/1 column per finding, images in `images/`.
The command line is `palm synth --task multilabel`.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from palm.data.synth import (FundusGeometry, parse_size, refuse_existing, render_fundus, run_jobs,
                             sample_spec, write_image)
from palm.data.synth_grading import paint_retinopathy
from palm.errors import BadConfig
from palm.io_utils import atomic_path

FINDINGS = ("myopia", "retinopathy", "glaucoma")
PREVALENCE = 0.35  # of each finding, independently
FINDING_STREAM = 11  # seed-stream id, apart from the other generators'


def paint_cup(difficulty: float, img: np.ndarray, eye: FundusGeometry,
              rng: np.random.Generator) -> None:
    """A glaucomatous cup: pale, centred on the disc, 0.7-0.85 of its radius (less marked
    when harder)."""
    ratio = rng.uniform(0.7, 0.85) - 0.15 * difficulty
    layer = np.zeros(img.shape[:2], np.float32)
    centre = tuple(int(v) for v in eye.disc)
    cv2.circle(layer, centre, max(1, int(ratio * eye.disc_r)), 1.0, -1, cv2.LINE_AA)
    alpha = (0.85 * cv2.GaussianBlur(layer, (0, 0), max(0.8, 0.1 * eye.disc_r)))[..., None]
    img *= 1 - alpha
    img += alpha * np.array([255, 245, 225], np.float32)


def paint_findings(findings: tuple[int, ...], grade: int, difficulty: float, img: np.ndarray,
                   eye: FundusGeometry, rng: np.random.Generator) -> None:
    """The retinopathy and glaucoma of `findings` (myopia is drawn with the eye itself)."""
    if findings[1]:
        paint_retinopathy(grade, difficulty, img, eye, rng)
    if findings[2]:
        paint_cup(difficulty, img, eye, rng)


def _make_one(job: tuple) -> None:
    path, findings, index, size, difficulty, seed = job
    rng = np.random.default_rng([seed, FINDING_STREAM, index])
    spec = sample_spec("P" if findings[0] else "N", difficulty, rng)
    grade = int(rng.integers(2, 4))
    img, _ = render_fundus(spec, size, difficulty, rng,
                           lesions=partial(paint_findings, findings, grade, difficulty))
    write_image(path, img)


def make_multilabel_dataset(out_root: str | os.PathLike, n_train: int = 400, n_val: int = 200,
                            image_size: int | str | tuple[int, int] = 512,
                            difficulty: float = 0.5, seed: int = 0,
                            num_workers: int = 0) -> Path:
    """Write `n_train` + `n_val` photos with independent findings (each at PREVALENCE) and
    their lists train.csv / val.csv under `out_root`; return `out_root`. Same seed, same
    files."""
    for name, count in (("n_train", n_train), ("n_val", n_val)):
        if count < 1:
            raise BadConfig(f"{name} must be >= 1, got {count}", param=name)
    out_root = Path(out_root)
    size = parse_size(image_size)
    refuse_existing(out_root / "train.csv", out_root / "val.csv", out_root / "images")
    (out_root / "images").mkdir(parents=True)
    draw = np.random.default_rng([seed, FINDING_STREAM])
    jobs, lists = [], {"train": [], "val": []}
    for index in range(n_train + n_val):
        split = "train" if index < n_train else "val"
        findings = tuple(int(v) for v in draw.random(len(FINDINGS)) < PREVALENCE)
        name = f"images/{split}_{index:05d}.png"
        jobs.append((out_root / name, findings, index, size, difficulty, seed))
        lists[split].append((name, *findings))
    run_jobs(_make_one, jobs, num_workers)
    for split, rows in lists.items():
        with atomic_path(out_root / f"{split}.csv") as tmp:
            pd.DataFrame(rows, columns=["path", *FINDINGS]).to_csv(tmp, index=False)
    return out_root
