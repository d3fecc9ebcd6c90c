"""Synthetic diabetic-retinopathy grading photos in the APTOS-2019 layout.

The eye is palm.data.synth's (no myopic signs); the lesions follow the international grading
scale the way a grader reads them:

- 0 no DR: none;
- 1 mild: a few microaneurysms (tiny dark-red dots) near the macula;
- 2 moderate: more microaneurysms, dot/blot haemorrhages and hard exudates (small yellow
  deposits);
- 3 severe: many haemorrhages in every quadrant, exudates, cotton-wool spots (pale, fluffy);
- 4 proliferative: as severe, with new vessels (fine tangles) and a pre-retinal haemorrhage.

`difficulty` (0..1) shrinks and fades the lesions and adds camera nuisance, so neighbouring
grades overlap. Written as APTOS-2019 ships (`train.csv` with `id_code,diagnosis`,
`train_images/<id>.png`), so `--data-root` finds it as a grading download. The command line
is `palm synth --task ordinal`.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from palm.data.grading import APTOS_IMAGES, APTOS_LABELS, DR_GRADES
from palm.data.synth import (FundusGeometry, FundusSpec, parse_size, refuse_existing,
                             render_fundus, run_jobs, split_counts, write_image)
from palm.errors import BadConfig
from palm.io_utils import atomic_path

# APTOS-2019's training grades: 1805 / 370 / 999 / 193 / 295 of 3662
APTOS_PROPORTIONS = {0: 1805, 1: 370, 2: 999, 3: 193, 4: 295}
GRADE_STREAM = 7  # seed-stream id, apart from palm.data.synth's class codes
# per grade: (microaneurysms, haemorrhages, exudates, cotton-wool spots), ranges of counts
LESION_COUNTS = {
    0: ((0, 0), (0, 0), (0, 0), (0, 0)),
    1: ((2, 6), (0, 0), (0, 0), (0, 0)),
    2: ((8, 18), (3, 8), (3, 10), (0, 1)),
    3: ((15, 30), (18, 35), (8, 20), (2, 5)),
    4: ((15, 30), (18, 35), (8, 20), (2, 5)),
}
RED, DARK_RED, YELLOW, PALE = (120, 20, 15), (90, 10, 10), (235, 215, 90), (235, 225, 200)


def _spots(img: np.ndarray, centre: tuple[float, float], radius: float, count: int,
           size: tuple[float, float], colour, strength: float, rng: np.random.Generator,
           around: np.ndarray | None = None, spread: float = 0.8) -> None:
    """`count` soft round spots of `size` (fraction of the field radius), inside the field
    (around `around` within `spread` of the radius when given), blended at `strength`."""
    layer = np.zeros(img.shape[:2], np.float32)
    anchor = np.asarray(around if around is not None else centre, np.float32)
    for _ in range(count):
        for _attempt in range(10):
            offset = rng.uniform(-1, 1, 2) * spread * radius
            x, y = anchor + offset
            if (x - centre[0]) ** 2 + (y - centre[1]) ** 2 < (0.92 * radius) ** 2:
                break
        r = max(1, int(rng.uniform(*size) * radius))
        cv2.circle(layer, (int(x), int(y)), r, 1.0, -1, lineType=cv2.LINE_AA)
    layer = cv2.GaussianBlur(layer, (0, 0), max(0.6, radius * 0.004))
    alpha = (strength * np.clip(layer, 0, 1))[..., None]
    img *= 1 - alpha
    img += alpha * np.asarray(colour, np.float32)


def _new_vessels(img: np.ndarray, centre: tuple[float, float], radius: float,
                 strength: float, rng: np.random.Generator) -> None:
    """A tangle of fine vessels at one spot of the field (neovascularisation)."""
    layer = np.zeros(img.shape[:2], np.float32)
    x, y = np.asarray(centre) + rng.uniform(-0.5, 0.5, 2) * radius
    for _ in range(int(rng.integers(12, 25))):
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.1) * radius
        end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
        cv2.line(layer, (int(x), int(y)), end, 1.0, max(1, int(radius * 0.004)), cv2.LINE_AA)
        x, y = end
    alpha = (strength * layer)[..., None]
    img *= 1 - alpha
    img += alpha * np.asarray(DARK_RED, np.float32)


def paint_retinopathy(grade: int, difficulty: float, img: np.ndarray, eye: FundusGeometry,
                      rng: np.random.Generator) -> None:
    """Draw the lesions of `grade` (a palm.data.synth.LesionPainter once the first two
    arguments are bound)."""
    centre, radius, fovea = eye.centre, eye.radius, eye.fovea
    fade = 1.0 - 0.5 * difficulty  # harder: fainter, smaller lesions
    (ma, haem, exud, cws) = (int(rng.integers(lo, hi + 1)) for lo, hi in LESION_COUNTS[grade])
    _spots(img, centre, radius, ma, (0.006, 0.012), RED, 0.9 * fade, rng, fovea, 0.35)
    _spots(img, centre, radius, haem, (0.015, 0.035 * fade), DARK_RED, 0.85 * fade, rng)
    _spots(img, centre, radius, exud, (0.008, 0.018 * fade), YELLOW, 0.8 * fade, rng, fovea, 0.5)
    _spots(img, centre, radius, cws, (0.03, 0.05), PALE, 0.5 * fade, rng)
    if grade == 4:
        _new_vessels(img, centre, radius, 0.9 * fade, rng)
        _spots(img, centre, radius, 1, (0.08, 0.12), DARK_RED, 0.7 * fade, rng)


def _make_one(job: tuple) -> None:
    path, grade, index, size, difficulty, seed = job
    rng = np.random.default_rng([seed, GRADE_STREAM, grade, index])
    spec = FundusSpec("N", float(rng.uniform(0.0, 0.05)), False)
    img, _ = render_fundus(spec, size, difficulty, rng,
                           lesions=partial(paint_retinopathy, grade, difficulty))
    write_image(path, img)


def make_grading_dataset(out_root: str | os.PathLike, n_train: int = 400,
                         image_size: int | str | tuple[int, int] = 512, difficulty: float = 0.5,
                         seed: int = 0, num_workers: int = 0) -> Path:
    """Write `n_train` graded photos (APTOS-2019's grade proportions) under `out_root` in
    its layout and return `out_root`. Same seed, same files."""
    if n_train < DR_GRADES:
        raise BadConfig(f"n_train must be >= {DR_GRADES} (one image per grade), got {n_train}",
                        param="n_train")
    out_root = Path(out_root)
    size = parse_size(image_size)
    refuse_existing(out_root / APTOS_LABELS, out_root / APTOS_IMAGES)
    (out_root / APTOS_IMAGES).mkdir(parents=True)
    jobs, rows = [], []
    for grade, count in split_counts(n_train, APTOS_PROPORTIONS).items():
        for i in range(count):
            code = f"g{grade}_{i:05d}"
            jobs.append((out_root / APTOS_IMAGES / f"{code}.png", grade, i, size, difficulty, seed))
            rows.append((code, grade))
    run_jobs(_make_one, jobs, num_workers)
    with atomic_path(out_root / APTOS_LABELS) as tmp:
        pd.DataFrame(rows, columns=["id_code", "diagnosis"]).to_csv(tmp, index=False)
    return out_root
