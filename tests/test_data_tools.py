"""data_tools.inspect / prepare / stats: one quick run of each CLI on tiny data."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from palm.cli import inspect, prepare, stats
from palm.data.splits import kfold_assignment
from palm.data import CsvImageSet, build_transform


def test_inspect_writes_plots_and_reports_bad_files(palm_root, tmp_path):
    data = tmp_path / "palm"
    shutil.copytree(palm_root, data)
    train_dir = data / "PALM-Training400" / "PALM-Training400"
    (train_dir / "N0099.jpg").write_bytes(b"not a jpeg")
    shutil.copy(train_dir / "H0001.jpg", train_dir / "Q0001.jpg")
    out = tmp_path / "out"
    inspect.main(inspect.get_args_parser().parse_args([str(data), "--out", str(out)]))

    for name in ("class_counts.png", "image_sizes.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 200 and img.std() > 10  # a real, non-blank plot
    report = json.loads((out / "inspect.json").read_text())
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert train["counts"] == {"non-PM": 11, "PM": 13} and val["counts"] == {"non-PM": 8, "PM": 8}
    assert train["sizes"] == [{"width": 64, "height": 64, "count": 24}]
    bad = {p["where"].rsplit("/", 1)[-1]: p["problem"] for p in train["problems"]}
    assert set(bad) == {"N0099.jpg", "Q0001.jpg"} and "prefix" in bad["Q0001.jpg"]


def test_prepare_xlsx2csv_split_and_kfold(palm_root, tmp_path):
    gt = palm_root / "PALM-Validation-GT"
    csv = prepare.main(
        prepare.get_args_parser().parse_args(
            [
                "xlsx2csv",
                str(gt / "PM_Label_and_Fovea_Location.xlsx"),
                "--out",
                str(tmp_path / "gt.csv"),
            ]
        )
    )[0]
    pd.testing.assert_frame_equal(pd.read_csv(csv), pd.read_csv(gt / "labels.csv"))

    parse = prepare.get_args_parser().parse_args
    prepare.main(
        parse(["split", str(palm_root), "--out", str(tmp_path / "split"), "--val-fraction", "0.25"])
    )
    # the lists' paths lead out of their folder into the data: allowed with the data root
    train = CsvImageSet(
        tmp_path / "split" / "train.csv", transform=build_transform(32, train=False),
        data_root=palm_root,
    )
    val = CsvImageSet(tmp_path / "split" / "val.csv", transform=build_transform(32, train=False),
                      data_root=palm_root)
    assert len(train) == 18 and len(val) == 6
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    assert val.labels.sum() in (3, 4)  # 13/24 PM kept in a 6-image split
    assert train[0][0].shape == (3, 32, 32)

    prepare.main(parse(["kfold", str(palm_root), "--out", str(tmp_path / "folds"), "--k", "3"]))
    folds = pd.read_csv(tmp_path / "folds" / "folds.csv")
    assert sorted(folds["fold"].value_counts().tolist()) == [8, 8, 8]
    for k in range(3):
        fold_val = pd.read_csv(tmp_path / "folds" / f"fold{k}_val.csv")
        assert fold_val["path"].tolist() == folds.loc[folds["fold"] == k, "path"].tolist()
        assert 4 <= fold_val["label"].sum() <= 5  # stratified: 13 PM over 3 folds
    with pytest.raises(ValueError, match="folds must be between 2"):
        kfold_assignment(folds["label"], folds=30, seed=0)


def test_stats_known_colours(tmp_path):
    for cls, bgr in (("red", (0, 0, 255)), ("blue", (255, 0, 0))):
        (tmp_path / cls).mkdir()
        cv2.imwrite(str(tmp_path / cls / "a.png"), np.full((10, 14, 3), bgr, np.uint8))
    result = stats.main(
        stats.get_args_parser().parse_args(
            [str(tmp_path), "--image-size", "16", "--out", str(tmp_path / "s.json")]
        )
    )
    np.testing.assert_allclose(result["mean"], [0.5, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(result["std"], [0.5, 0.0, 0.5], atol=1e-6)
    assert json.loads((tmp_path / "s.json").read_text())["images"] == 2
