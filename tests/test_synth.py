"""palm.data.synth and `palm synth`: layout, counts, ground truth, determinism, and visible PM signs."""

from __future__ import annotations

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
