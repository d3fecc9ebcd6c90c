"""palm.data.synth and `palm synth`: layout, counts, ground truth, determinism, and visible PM signs."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from palm.data.synth import (
    GT_COLUMNS,
    FundusSpec,
    make_palm_dataset,
    render_fundus,
    sample_spec,
    split_counts,
)
from palm.cli.synth import get_args_parser, main
from palm.data import read_image
from palm.errors import BadConfig


@pytest.mark.parametrize(
    "total, expected",
    [
        (400, {"H": 26, "N": 161, "P": 213}),
        (24, {"H": 1, "N": 10, "P": 13}),
        (3, {"H": 1, "N": 1, "P": 1}),
    ],
)
def test_split_counts_keeps_palm_proportions(total, expected):
    assert split_counts(total, {"H": 26, "N": 161, "P": 213}) == expected


def test_layout_counts_and_ground_truth(palm_root):
    train = sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))
    assert [p.name[0] for p in train].count("P") == 13
    assert len(train) == 24
    val = sorted((palm_root / "PALM-Validation400").glob("V*.jpg"))
    assert [p.name for p in val] == [f"V{i:04d}.jpg" for i in range(1, 17)]
    gt_dir = palm_root / "PALM-Validation-GT"
    csv = pd.read_csv(gt_dir / "labels.csv")
    xlsx = pd.read_excel(gt_dir / "PM_Label_and_Fovea_Location.xlsx")
    assert list(csv.columns) == GT_COLUMNS
    pd.testing.assert_frame_equal(csv, xlsx)
    assert csv["Label"].sum() == 8 and set(csv["Label"]) == {0, 1}
    assert csv["imgName"].tolist() == [p.name for p in val]
    assert csv["Fovea_X"].between(0, 64).all() and csv["Fovea_Y"].between(0, 64).all()
    img = read_image(val[0])
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8


@pytest.mark.slow
def test_deterministic_and_non_square(tmp_path):
    args = dict(n_train=3, n_val=2, image_size="48x40", seed=7)
    a = make_palm_dataset(tmp_path / "a", **args)
    b = make_palm_dataset(tmp_path / "b", num_workers=2, **args)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 5
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    assert read_image(a / files[0]).shape == (40, 48, 3)
    c = make_palm_dataset(tmp_path / "c", **{**args, "seed": 8})
    assert (c / files[0]).read_bytes() != (a / files[0]).read_bytes()


def _pale_fraction(img: np.ndarray) -> float:
    # atrophy and the disc are pale yellow-white; the healthy fundus is orange-red
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return float(((g > 160) & (b > 110)).mean())


def test_pm_signs_are_visible_and_difficulty_blurs_them():
    def mean_pale(kind, difficulty):
        values = []
        for i in range(6):
            rng = np.random.default_rng([1, i])
            img, _ = render_fundus(sample_spec(kind, difficulty, rng), (96, 96), difficulty, rng)
            values.append(_pale_fraction(img))
        return np.mean(values)

    assert mean_pale("P", 0.0) > 2 * mean_pale("N", 0.0)
    # harder: the mildest PM gets milder, high myopia gets more signs
    assert mean_pale("P", 1.0) - mean_pale("H", 1.0) < mean_pale("P", 0.0) - mean_pale("H", 0.0)


def test_fundus_has_dark_surround_and_fovea_is_darker_than_fundus():
    rng = np.random.default_rng(3)
    img, (fx, fy) = render_fundus(FundusSpec("N", 0.0, False), (128, 128), 0.0, rng)
    assert img[:4, :4].max() < 30 and img[64, 64].mean() > 60
    fovea = img[int(fy) - 2 : int(fy) + 3, int(fx) - 2 : int(fx) + 3].mean()
    ring = img[int(fy) - 20 : int(fy) + 21 : 40, int(fx) - 20 : int(fx) + 21 : 40].mean()
    assert fovea < ring


def test_cli_rejects_bad_difficulty(tmp_path):
    args = get_args_parser().parse_args(["--out", str(tmp_path), "--difficulty", "2"])
    with pytest.raises(BadConfig, match="difficulty"):
        main(args)


def _digest(img: np.ndarray, fovea: tuple[float, float]) -> str:
    h = hashlib.sha256(img.tobytes())
    h.update(repr((img.shape, fovea)).encode())
    return h.hexdigest()


# Golden digests of render_fundus (pixels, shape and fovea), computed from the code before its
# split into drawing steps: the redesign must not move a pixel for any seed. Cases cover every
# class, patchy atrophy on/off, tessellation below/above its threshold, blur on/off, square and
# non-square sizes, and a render at full size (no shrink). They are pinned to this numpy /
# OpenCV (2.4 / 5.1); another build of either may round differently and must re-record them.
GOLDEN_RENDERS = [
    (FundusSpec("P", 0.9, True), (64, 64), 0.0, 1,
     "48b591a45e6d81154a27d047dbd3d81e1153c20bfc1e8d21a3cc64e8961bc5e0"),
    (FundusSpec("P", 0.3, False), (48, 40), 1.0, 2,
     "31ec4992cf55cc5786a0a0fc861ce907a0e5a2d2cdf6ed24ae89da8c82593077"),
    (FundusSpec("H", 0.15, False), (96, 80), 0.5, 3,
     "692f7dcbd4bc4b11b3dce24bbb7c0733a669145ed3bbfab7ae4de629f11a7e08"),
    (FundusSpec("N", 0.02, False), (64, 64), 0.2, 4,
     "a98920eac2f64db5657757b90061c1f8a70975d2c60fc76aee3d2886582e51b4"),
    (FundusSpec("N", 0.0, False), (40, 48), 0.0, 5,
     "cb94e9eb441578f096edc2384d5bd8074c7588790349f22db8c9a2d618156ddf"),
    (FundusSpec("P", 0.6, True), (272, 256), 0.7, 6,
     "4f1a51e8e9a02f3f82d7b1c9316fcbbc121a263017c12d1003c9ef5ee24e7607"),
]


@pytest.mark.parametrize("spec, size, difficulty, seed, expected", GOLDEN_RENDERS)
def test_render_fundus_is_unchanged(spec, size, difficulty, seed, expected):
    image, fovea = render_fundus(spec, size, difficulty, np.random.default_rng(seed))
    assert _digest(image, fovea) == expected


# As make_palm_dataset draws an image: spec and pixels from one generator, in that order.
GOLDEN_SAMPLED = {
    ("H", 0): "f1307602ac1d7ee404b36c76cedc9bf96762a644e21a7bf0533b9d9e4d0da8a6",
    ("H", 1): "db25f8b160c036525b85839abd4c5b12d3d69a6b2ea36781b86ee772c05826a7",
    ("N", 0): "a1ef9f646ce57c3c0dd34b17cd6a7f7cd0b4bb7a0d71465ff19dd54afbb6d0a4",
    ("N", 1): "d5b5dbf1212ae2a3f7ff3c7dbf47bfcf9937ae38812a780dee00a5b9ac05a4b8",
    ("P", 0): "50a9fd321418dc1208d87577cdd9848eea4495b47840c45676d57cd930ec034a",
    ("P", 1): "47c119750935af462f822f44bb1188b0e510138e09b4965b82ea2411e581584e",
}


@pytest.mark.parametrize("kind, seed", sorted(GOLDEN_SAMPLED))
def test_sampled_fundus_is_unchanged(kind, seed):
    rng = np.random.default_rng([seed, 7])
    image, fovea = render_fundus(sample_spec(kind, 0.5, rng), (56, 56), 0.5, rng)
    assert _digest(image, fovea) == GOLDEN_SAMPLED[kind, seed]
