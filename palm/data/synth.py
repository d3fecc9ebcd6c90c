"""Synthetic fundus photographs in the exact PALM / iChallenge-PM layout.

Nothing can be downloaded here, so the demo and the tests train on images drawn with
OpenCV/numpy that carry what a grader looks at (the README describes the real set):

- every eye: dark surround, orange-red fundus with vignetting and choroidal texture, a bright
  optic disc with a paler cup, branching arteries and veins leaving the disc, a darker macula;
- pathologic myopia (P, label 1): tessellated (tigroid) fundus, peripapillary atrophy around the
  disc, patchy chorioretinal atrophy near the posterior pole, a paler fundus;
- high myopia (H, label 0): mild tessellation and a small temporal crescent, no patchy atrophy;
- normal (N, label 0): at most faint tessellation.

`difficulty` (0..1) moves the PM severity range down and the high-myopia range up until they
overlap, and adds camera nuisance (defocus, exposure, colour cast), so the task is learnable
but not trivial. Every image is drawn from its own generator seeded by (seed, class, index):
output is deterministic and independent of `num_workers`.

The command line is `palm synth` (palm.cli.synth).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import cv2
import numpy as np
import pandas as pd

from palm.errors import BadConfig
from palm.io_utils import atomic_path

# PALM-Training400 counts (H0001-H0026, N0001-N0161, P0001-P0213) and the validation PM share
# (211 / 400); synthetic sets keep these proportions at any size.
TRAIN_PROPORTIONS = {"H": 26, "N": 161, "P": 213}
VAL_PM_FRACTION = 211 / 400
CLASS_CODES = {"H": 0, "N": 1, "P": 2, "V": 3}  # seed-stream ids, not labels
GT_COLUMNS = ["ID", "imgName", "Label", "Fovea_X", "Fovea_Y"]
# Shapes and strokes are drawn at >= this many pixels and then shrunk, so 64 px test images
# still contain every structure instead of one-pixel aliasing.
T = TypeVar("T")

MIN_RENDER_SIDE = 256
MIN_SIDE = 8  # the smallest image the networks take (palm.config's image_size bound)
# 4x PALM's 2124x2056: a larger canvas needs gigabytes per image
MAX_SIDE = 8192


@dataclass(frozen=True)
class FundusSpec:
    """What a single synthetic image shows; `severity` in 0..1 scales the myopic signs."""

    kind: str  # "H", "N" or "P"
    severity: float
    patchy_atrophy: bool


def split_counts(total: int, proportions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of `total` by `proportions`; every class gets >= 1 when possible."""
    weights = np.array(list(proportions.values()), dtype=float)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts))[: total - counts.sum()]:
        counts[i] += 1
    if total >= len(counts):
        for i in np.flatnonzero(counts == 0):
            counts[i] += 1
            counts[np.argmax(counts)] -= 1
    return dict(zip(proportions, counts.tolist()))


def sample_spec(kind: str, difficulty: float, rng: np.random.Generator) -> FundusSpec:
    """Draw the severity of the myopic signs for one image of class `kind` ("H", "N", "P")."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    if kind == "P":
        # d=0: 0.63..1 (obvious); d=1: 0.08..1 (the mildest PM looks like high myopia)
        severity = rng.uniform(0.08 + 0.55 * (1 - d), 1.0)
        patchy = severity > 0.45 and rng.random() < 0.4 + 0.6 * severity
    elif kind == "H":
        severity = rng.uniform(0.05, 0.2 + 0.35 * d)
        patchy = False
    elif kind == "N":
        severity = rng.uniform(0.0, 0.05 + 0.15 * d)
        patchy = False
    else:
        raise ValueError(f"unknown class prefix {kind!r}; expected H, N or P")
    return FundusSpec(kind, float(severity), bool(patchy))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Band-limited noise (~unit std) with about `cells` blobs across the larger side."""
    h, w = shape
    gh = max(2, round(cells * h / max(h, w))) + 2
    gw = max(2, round(cells * w / max(h, w))) + 2
    small = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(small, (w * gw // (gw - 2), h * gh // (gh - 2)), interpolation=cv2.INTER_CUBIC)
    oy, ox = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2  # drop the flat border cells
    out = big[oy : oy + h, ox : ox + w]
    return out / (out.std() + 1e-6)


def _blend(img: np.ndarray, mask: np.ndarray, color, alpha: float = 1.0) -> None:
    """In place: img = img * (1 - a*mask) + color * a*mask, mask in 0..1 (HxW)."""
    # only the bounding box of the mask: most masks (disc, patches) cover a few % of the image
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    m = (alpha * mask[box])[..., None]
    img[box] *= 1.0 - m
    img[box] += m * np.asarray(color, dtype=np.float32)


def _blob_mask(
    shape: tuple[int, int],
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    rough: np.ndarray,
    roughness: float,
    edge: float,
) -> np.ndarray:
    """Soft irregular ellipse: 1 inside, 0 outside, `edge` px ramp, border perturbed by `rough`."""
    h, w = shape
    out = np.zeros((h, w), np.float32)
    # work in the bounding box only (rough noise is ~unit std, so 4 std covers it)
    reach = max(radii) * (1.0 + 4.0 * roughness) + edge
    x0, x1 = max(0, int(center[0] - reach)), min(w, int(center[0] + reach) + 1)
    y0, y1 = max(0, int(center[1] - reach)), min(h, int(center[1] + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return out
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - center[1]
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - center[0]
    ca, sa = np.cos(angle), np.sin(angle)
    u = (dx * ca + dy * sa) / radii[0]
    v = (-dx * sa + dy * ca) / radii[1]
    dist = np.sqrt(u * u + v * v) + roughness * rough[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.clip((1.0 - dist) * min(radii) / max(edge, 1e-3) + 0.5, 0.0, 1.0)
    return out


def _draw_vessel(
    layer: np.ndarray,
    rng: np.random.Generator,
    start: np.ndarray,
    heading: float,
    turn: float,
    length: float,
    width: float,
    R: float,
    depth: int,
) -> None:
    """Draw a vessel as a curving random walk onto `layer` (0..1 mask), recursing into branches."""
    step = 0.02 * R
    n = max(2, int(length / step))
    pts = [start.copy()]
    p = start.copy()
    for i in range(n):
        heading += turn + rng.normal(0, 0.04)
        p = p + step * np.array([np.cos(heading), np.sin(heading)])
        pts.append(p.copy())
        if depth > 0 and i > 3 and rng.random() < 0.06:
            side = rng.choice([-1.0, 1.0])
            _draw_vessel(
                layer,
                rng,
                p.copy(),
                heading + side * rng.uniform(0.5, 1.1),
                rng.normal(0, 0.02),
                length * rng.uniform(0.3, 0.55),
                width * 0.65,
                R,
                depth - 1,
            )
    # taper: draw the walk in thirds, each thinner; each third starts where the last ended
    pts = np.array(pts)
    cuts = np.linspace(0, len(pts) - 1, 4).astype(int)
    for k in range(3):
        seg = pts[cuts[k] : cuts[k + 1] + 1]
        if len(seg) < 2:
            continue
        th = max(1, int(round(width * (1.0 - 0.25 * k))))
        cv2.polylines(
            layer, [np.round(seg * 16).astype(np.int32)], False, 1.0, th, cv2.LINE_AA, shift=4
        )


@dataclass(frozen=True)
class _View:
    """The render canvas: its size, the circular field of view and per-pixel coordinate grids."""

    w: int
    h: int
    R: float  # field-of-view radius in render pixels
    cx: float
    cy: float
    xs: np.ndarray  # 1xW float32 column coordinates (float32 grids keep every map float32)
    ys: np.ndarray  # Hx1 float32 row coordinates
    r: np.ndarray  # HxW distance from the centre, 0 there and 1 at the field-of-view edge


@dataclass(frozen=True)
class _Landmarks:
    """Where the optic disc and fovea are, and the noise that roughens every outline."""

    side: float  # +1: disc on the right (right eye)
    disc: np.ndarray  # (x, y)
    disc_r: float
    fovea: np.ndarray  # (x, y)
    rough: np.ndarray  # HxW smooth noise perturbing blob borders and tessellation


def _field_of_view(size: tuple[int, int], rng: np.random.Generator) -> tuple[_View, float]:
    """(view, scale): the canvas at >= MIN_RENDER_SIDE; a circle slightly off centre,
    sometimes clipped top/bottom as in PALM photos."""
    out_w, out_h = size
    scale = max(1.0, MIN_RENDER_SIDE / min(out_w, out_h))
    w, h = int(round(out_w * scale)), int(round(out_h * scale))
    R = min(w, h) * rng.uniform(0.44, 0.52)
    cx = w / 2 + rng.normal(0, 0.015) * w
    cy = h / 2 + rng.normal(0, 0.015) * h
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    r = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / R
    return _View(w, h, R, cx, cy, xs, ys, r), scale


def _background(view: _View, s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image, base colour): orange-red with choroidal texture, paler and more yellow with
    myopic thinning of the RPE."""
    pigment = rng.uniform(0.8, 1.15)
    base = np.array([215, 95, 40], np.float32) * pigment
    base += s * np.array([15, 35, 25], np.float32)
    img = np.empty((view.h, view.w, 3), np.float32)
    img[:] = base
    shape = (view.h, view.w)
    texture = _smooth_noise(rng, shape, 10) * 0.06 + _smooth_noise(rng, shape, 40) * 0.03
    img *= (1.0 + texture)[..., None]
    return img, base


def _place_landmarks(view: _View, rng: np.random.Generator) -> _Landmarks:
    """Disc on the nasal side, fovea slightly temporal of the centre."""
    R, cx, cy = view.R, view.cx, view.cy
    side = rng.choice([-1.0, 1.0])
    disc = np.array([cx + side * R * rng.uniform(0.36, 0.46), cy + R * rng.normal(-0.03, 0.04)])
    disc_r = R * rng.uniform(0.12, 0.15)
    fovea = np.array([cx - side * R * rng.uniform(0.05, 0.15), cy + R * rng.normal(0.04, 0.03)])
    rough = _smooth_noise(rng, (view.h, view.w), 30)
    return _Landmarks(side, disc, disc_r, fovea, rough)


def _draw_tessellation(img: np.ndarray, base: np.ndarray, view: _View, marks: _Landmarks,
                       spec: FundusSpec, rng: np.random.Generator) -> None:
    """Stripes of choroidal vessels radiating from the posterior pole, the dark pigmented
    spaces between them showing through a thinned retina."""
    s = spec.severity
    tess = 0.1 * (spec.kind != "N") + s
    if tess <= 0.05:
        return
    xs, ys, disc, shape = view.xs, view.ys, marks.disc, (view.h, view.w)
    theta = np.arctan2(ys - disc[1], xs - disc[0])
    phase = theta * rng.integers(22, 34) + 2.5 * _smooth_noise(rng, shape, 8) + 1.5 * marks.rough
    stripes = 0.5 + 0.5 * np.cos(phase)
    stripes = np.clip((stripes - 0.35) * 2.2, 0, 1) ** 1.5
    # stronger at the posterior pole and in the periphery of a myopic eye than mid-way
    reach = np.clip(0.55 + 0.6 * s - 0.3 * view.r + 0.1 * _smooth_noise(rng, shape, 6), 0, 1)
    # the stripes converge on the disc: fade them there to hide the pinch
    reach *= np.clip(np.hypot(xs - disc[0], ys - disc[1]) / (0.35 * view.R), 0, 1)
    strength = np.clip(tess, 0, 1) * 0.55 * reach
    _blend(img, stripes * strength, base * np.array([0.55, 0.42, 0.45]))


def _draw_macula(img: np.ndarray, view: _View, marks: _Landmarks) -> None:
    """Darker macula with a small darker fovea."""
    fovea = marks.fovea
    dm = np.sqrt((view.xs - fovea[0]) ** 2 + (view.ys - fovea[1]) ** 2) / view.R
    img *= (1.0 - 0.28 * np.exp(-((dm / 0.2) ** 2)) - 0.15 * np.exp(-((dm / 0.035) ** 2)))[
        ..., None
    ]


def _draw_peripapillary_atrophy(img: np.ndarray, view: _View, marks: _Landmarks,
                                spec: FundusSpec, rng: np.random.Generator) -> None:
    """Pale crescent/ring around the disc, widest on the temporal side, rimmed by pigment."""
    s = spec.severity
    ppa_size = 0.15 * (spec.kind == "H") * s / 0.5 + (spec.kind == "P") * (0.3 + 1.6 * s)
    if ppa_size <= 0.05:
        return
    disc, disc_r, rough, shape = marks.disc, marks.disc_r, marks.rough, (view.h, view.w)
    ppa_c = (disc[0] - marks.side * disc_r * 0.45 * min(ppa_size, 1.5), disc[1])
    radii = (disc_r * (1.0 + 0.65 * ppa_size), disc_r * (1.0 + 0.35 * ppa_size))
    ppa = _blob_mask(shape, ppa_c, radii, rng.normal(0, 0.2), rough, 0.07, 0.08 * disc_r)
    outer = _blob_mask(shape, ppa_c, (radii[0] * 1.08, radii[1] * 1.08), 0, rough, 0.07,
                       0.1 * disc_r)
    rim = np.clip(outer - ppa, 0, 1)
    _blend(img, rim, (90, 45, 25), 0.6)
    _blend(img, ppa, (235, 205, 160), 0.85)


def _draw_patchy_atrophy(img: np.ndarray, view: _View, marks: _Landmarks, s: float,
                         rng: np.random.Generator) -> None:
    """Well-defined white-yellow chorioretinal patches near the fovea, with pigment clumps."""
    R, fovea, shape = view.R, marks.fovea, (view.h, view.w)
    n_patch = 1 + int(rng.integers(0, 2 + int(4 * s)))
    patches = np.zeros(shape, np.float32)
    for _ in range(n_patch):
        ang, dist = rng.uniform(0, 2 * np.pi), R * rng.uniform(0.08, 0.45)
        pc = (fovea[0] + dist * np.cos(ang), fovea[1] + dist * np.sin(ang) * 0.7)
        pr = R * rng.uniform(0.04, 0.1 + 0.08 * s)
        radii = (pr, pr * rng.uniform(0.6, 1.0))
        patch = _blob_mask(shape, pc, radii, rng.uniform(0, np.pi), marks.rough, 0.25, 0.05 * pr)
        np.maximum(patches, patch, out=patches)
    _blend(img, patches, (240, 228, 200), rng.uniform(0.75, 0.95))
    clumps = np.zeros(shape, np.float32)
    for _ in range(int(8 + 25 * s)):
        ang, dist = rng.uniform(0, 2 * np.pi), R * rng.uniform(0.05, 0.5)
        c = (int(fovea[0] + dist * np.cos(ang)), int(fovea[1] + dist * np.sin(ang) * 0.7))
        cv2.circle(clumps, c, max(1, int(R * rng.uniform(0.004, 0.012))), 1.0, -1, cv2.LINE_AA)
    _blend(img, clumps, (50, 30, 20), 0.8)


def _draw_optic_disc(img: np.ndarray, view: _View, marks: _Landmarks, s: float,
                     rng: np.random.Generator) -> None:
    """Optic disc with a brighter cup; vertically oval, more tilted/oval in myopic eyes."""
    disc, disc_r, rough, shape = marks.disc, marks.disc_r, marks.rough, (view.h, view.w)
    disc_radii = (disc_r * (1.0 - 0.2 * s), disc_r * 1.1)
    disc_mask = _blob_mask(shape, disc, disc_radii, rng.normal(0, 0.1), rough, 0.04, 0.2 * disc_r)
    _blend(img, disc_mask, (250, 200, 140), 0.95)
    cup_centre = disc + rng.normal(0, 0.1, 2) * disc_r
    cup_radii = (disc_r * rng.uniform(0.3, 0.5),) * 2
    cup = _blob_mask(shape, cup_centre, cup_radii, 0, rough, 0.05, 0.25 * disc_r)
    _blend(img, cup, (255, 240, 215), 0.8)


def _draw_vessels(img: np.ndarray, view: _View, marks: _Landmarks,
                  rng: np.random.Generator) -> None:
    """Superior/inferior temporal arcades curving round the macula, and nasal branches."""
    R, disc, side = view.R, marks.disc, marks.side
    veins = np.zeros((view.h, view.w), np.float32)
    arteries = np.zeros((view.h, view.w), np.float32)
    vw = max(1.0, R * 0.018)
    for vert in (-1.0, 1.0):
        for layer, width, jitter in ((veins, vw, 0.0), (arteries, vw * 0.75, 0.25)):
            # temporal arcade: leaves the disc vertically, then bends towards the temporal side
            heading = np.arctan2(vert, -side * 0.35) + jitter * vert
            turn = vert * side * rng.uniform(0.025, 0.035)
            _draw_vessel(layer, rng, disc.copy(), heading, turn, R * 1.15, width, R, 3)
            # nasal branch
            heading = np.arctan2(vert * 0.8, side) + rng.normal(0, 0.2)
            _draw_vessel(
                layer, rng, disc.copy(), heading, rng.normal(0, 0.01), R * 0.8, width * 0.8, R, 2
            )
    k = max(1, int(R * 0.004)) * 2 + 1
    veins = cv2.GaussianBlur(veins, (k, k), 0)
    arteries = cv2.GaussianBlur(arteries, (k, k), 0)
    _blend(img, veins, (120, 25, 20), 0.75)
    _blend(img, arteries, (175, 45, 30), 0.6)


def _photograph(img: np.ndarray, view: _View, d: float, rng: np.random.Generator) -> np.ndarray:
    """The camera: vignetting, exposure, colour cast, soft FOV edge, dark surround, defocus
    and sensor grain; returns the uint8 render."""
    R, r = view.R, view.r
    vignette = np.clip(1.0 - 0.55 * r**2.2, 0, 1)
    img *= vignette[..., None]
    img *= rng.uniform(1 - 0.25 * d - 0.05, 1 + 0.15 * d + 0.05)
    warmth = rng.normal(0, 0.03 + 0.04 * d)  # colour temperature: red up, blue down (or reverse)
    img *= np.array([1 + warmth, 1 + 0.3 * warmth, 1 - warmth], np.float32)
    fov = np.clip((1.0 - r) * R / max(2.0, 0.01 * R), 0, 1)
    surround = 4 + 1.5 * _smooth_noise(rng, (view.h, view.w), 20)
    img = img * fov[..., None] + (surround * (1 - fov))[..., None]
    blur = rng.uniform(0, 0.5 + 2.5 * d) * R / 200  # defocus, in render pixels
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img += rng.normal(0, 2.0, (view.h, view.w, 1)).astype(np.float32)  # sensor grain
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class FundusGeometry:
    """Where an eye's landmarks lie on the render canvas, for painters of further findings."""

    centre: tuple[float, float]  # of the field of view
    radius: float  # of the field of view
    fovea: np.ndarray  # (x, y)
    disc: np.ndarray  # (x, y)
    disc_r: float


# draws further findings on the float32 RGB canvas before the camera model (diabetic
# retinopathy, a glaucomatous cup: palm.data.synth_grading, palm.data.synth_multilabel)
LesionPainter = Callable[[np.ndarray, FundusGeometry, np.random.Generator], None]


def render_fundus(
    spec: FundusSpec,
    size: tuple[int, int],
    difficulty: float,
    rng: np.random.Generator,
    lesions: LesionPainter | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Draw one synthetic fundus photo.

    The steps draw from `rng` in a fixed order (each step's draws follow the earlier
    ones'), so reordering them changes every image of a seed.

    Args:
        spec: class and severity (see `sample_spec`).
        size: (width, height) of the output in pixels.
        difficulty: 0..1, amount of camera nuisance (blur, exposure, colour cast).
        rng: generator; the image is a pure function of its state.
        lesions: draws further findings after the vessels (its draws follow theirs).

    Returns:
        (HxWx3 uint8 RGB image, (fovea_x, fovea_y) in output pixels)
    """
    d = float(np.clip(difficulty, 0.0, 1.0))
    s = spec.severity
    view, scale = _field_of_view(size, rng)
    img, base = _background(view, s, rng)
    marks = _place_landmarks(view, rng)
    _draw_tessellation(img, base, view, marks, spec, rng)
    _draw_macula(img, view, marks)
    _draw_peripapillary_atrophy(img, view, marks, spec, rng)
    if spec.patchy_atrophy:
        _draw_patchy_atrophy(img, view, marks, s, rng)
    _draw_optic_disc(img, view, marks, s, rng)
    _draw_vessels(img, view, marks, rng)
    if lesions is not None:
        lesions(img, FundusGeometry((view.cx, view.cy), view.R, marks.fovea, marks.disc,
                                    marks.disc_r), rng)
    img = _photograph(img, view, d, rng)
    if scale > 1.0:
        out_w, out_h = size
        img = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA)
    fovea = marks.fovea
    return img, (float(fovea[0] / scale), float(fovea[1] / scale))


def parse_size(size: int | str | tuple[int, int]) -> tuple[int, int]:
    """512 -> (512, 512); "2124x2056" -> (2124, 2056) as (width, height).

    Raises:
        BadConfig: not a side or WIDTHxHEIGHT, or a side under MIN_SIDE or over MAX_SIDE px.
    """
    if isinstance(size, tuple):
        w, h = size
    else:
        text = str(size).lower()
        try:
            w, h = map(int, text.split("x")) if "x" in text else (int(text), int(text))
        except ValueError:
            raise BadConfig(f"image_size must be a side in px or WIDTHxHEIGHT, got {size!r}",
                            param="image_size") from None
    if min(w, h) < MIN_SIDE:
        raise BadConfig(f"image_size must be at least {MIN_SIDE} px a side, got {size}",
                        param="image_size")
    if max(w, h) > MAX_SIDE:
        raise BadConfig(f"image_size must be at most {MAX_SIDE} px a side, got {size}",
                        param="image_size")
    return w, h


def write_image(path: Path, rgb: np.ndarray, quality: int = 92) -> None:
    """`rgb` encoded by `path`'s suffix (.jpg at JPEG `quality`, .png) and written atomically."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() == ".jpg" else []
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"{path}: {path.suffix} encoding failed")
    with atomic_path(path) as tmp:
        buf.tofile(tmp)


def refuse_existing(*paths: Path) -> None:
    """BadConfig unless none of `paths` exists: a synthetic set never writes over a list (a
    real download's labels, say) in its output folder."""
    for path in paths:
        if path.exists():
            raise BadConfig(f"{path} already exists; choose an empty output folder",
                            param="output")


def run_jobs(make_one: Callable[[tuple], T], jobs: list[tuple], num_workers: int) -> list[T]:
    """`make_one(job)` for every job, in `num_workers` processes (0: in this one), in order.
    Every image draws from its own seeded generator, so the files do not depend on it."""
    if num_workers > 0:
        with ProcessPoolExecutor(num_workers) as pool:
            return list(pool.map(make_one, jobs, chunksize=8))
    return [make_one(job) for job in jobs]


def _make_one(job: tuple) -> tuple[str, float, float]:
    path, kind, index, size, difficulty, seed, quality = job
    rng = np.random.default_rng([seed, CLASS_CODES[kind[0]], index])
    spec = sample_spec(kind[-1], difficulty, rng)
    img, (fx, fy) = render_fundus(spec, size, difficulty, rng)
    write_image(Path(path), img, quality)
    return path, fx, fy


def make_palm_dataset(
    out_root: str | os.PathLike,
    n_train: int = 400,
    n_val: int = 400,
    image_size: int | str | tuple[int, int] = 512,
    difficulty: float = 0.5,
    seed: int = 0,
    quality: int = 92,
    num_workers: int = 0,
) -> Path:
    """Write a synthetic PALM data set under `out_root` and return `out_root`.

    Layout (as the real download unzips):
        PALM-Training400/PALM-Training400/{H,N,P}NNNN.jpg
        PALM-Validation400/VNNNN.jpg
        PALM-Validation-GT/PM_Label_and_Fovea_Location.xlsx and labels.csv
            (columns ID, imgName, Label, Fovea_X, Fovea_Y)

    Args:
        n_train: training images, split H/N/P like PALM (26/161/213 per 400).
        n_val: validation images, ~52.75 % PM like PALM, in shuffled order.
        image_size: side in pixels, or "WIDTHxHEIGHT" (the real photos are 2124x2056).
        difficulty: 0 (obvious PM signs) .. 1 (PM and high myopia overlap, more camera noise).
        seed: same seed, same files.
        quality: JPEG quality.
        num_workers: processes drawing images (0 = in this process).
    """
    out_root = Path(out_root)
    for name, count in (("n_train", n_train), ("n_val", n_val)):
        if count < 0:
            raise BadConfig(f"{name} must be >= 0, got {count}", param=name)
    size = parse_size(image_size)
    train_dir = out_root / "PALM-Training400" / "PALM-Training400"
    val_dir = out_root / "PALM-Validation400"
    gt_dir = out_root / "PALM-Validation-GT"
    for folder in (train_dir, val_dir, gt_dir):
        folder.mkdir(parents=True, exist_ok=True)

    jobs = []
    for kind, count in split_counts(n_train, TRAIN_PROPORTIONS).items():
        for i in range(1, count + 1):
            jobs.append(
                (str(train_dir / f"{kind}{i:04d}.jpg"), kind, i, size, difficulty, seed, quality)
            )
    n_val_pm = int(round(n_val * VAL_PM_FRACTION))
    non_pm = split_counts(
        n_val - n_val_pm, {"H": TRAIN_PROPORTIONS["H"], "N": TRAIN_PROPORTIONS["N"]}
    )
    val_kinds = ["P"] * n_val_pm + ["H"] * non_pm["H"] + ["N"] * non_pm["N"]
    np.random.default_rng([seed, CLASS_CODES["V"]]).shuffle(val_kinds)
    for i, kind in enumerate(val_kinds, start=1):
        # "V" + true kind: the validation stream never repeats a training image
        jobs.append(
            (str(val_dir / f"V{i:04d}.jpg"), "V" + kind, i, size, difficulty, seed, quality)
        )

    results = run_jobs(_make_one, jobs, num_workers)

    rows = []
    for (path, kind, *_), (_, fx, fy) in zip(jobs, results):
        if kind.startswith("V"):
            rows.append(
                {
                    "ID": len(rows) + 1,
                    "imgName": Path(path).name,
                    "Label": int(kind[-1] == "P"),
                    "Fovea_X": round(fx, 2),
                    "Fovea_Y": round(fy, 2),
                }
            )
    gt = pd.DataFrame(rows, columns=GT_COLUMNS)
    with atomic_path(gt_dir / "labels.csv") as tmp:
        gt.to_csv(tmp, index=False)
    with atomic_path(gt_dir / "PM_Label_and_Fovea_Location.xlsx") as tmp, open(tmp, "wb") as f:
        gt.to_excel(f, index=False, engine="openpyxl")  # a file object: the tmp name is not .xlsx
    return out_root
