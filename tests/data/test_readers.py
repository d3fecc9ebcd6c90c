"""palm.data readers on the synthetic PALM set, the generic layouts, and every bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from palm.data import (
    CsvImageSet,
    FolderImageSet,
    ImageReadError,
    PalmTrainSet,
    PalmValSet,
    build_transform,
    find_palm_layout,
    read_image,
)

T64 = build_transform(64, train=False)


def _gt_csv(root: Path) -> Path:
    return root / "PALM-Validation-GT" / "labels.csv"


# ---------------------------------------------------------------- the PALM layout as it ships


def test_train_set_labels_follow_file_names(palm_root):
    ds = PalmTrainSet(palm_root / "PALM-Training400", transform=T64)  # outer folder: nested found
    assert ds.root.name == "PALM-Training400" and ds.root.parent.name == "PALM-Training400"
    assert ds.classes == ["non-PM", "PM"]
    names = [Path(p).name for p, _ in ds.samples]
    assert len(ds) == 24
    for name, label in zip(names, ds.labels):
        assert label == (name[0] == "P")
    assert ds.labels.sum() == 13 and ds.skipped == []
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0 and y.dtype == np.int64


def test_val_set_xlsx_and_csv_agree_with_ground_truth(palm_root):
    layout = find_palm_layout(palm_root)
    assert layout.val_labels.name == "PM_Label_and_Fovea_Location.xlsx"
    from_xlsx = PalmValSet(layout.val_dir, layout.val_labels, transform=T64)
    from_csv = PalmValSet(layout.val_dir, _gt_csv(palm_root), transform=T64)
    assert from_xlsx.samples == from_csv.samples
    gt = pd.read_csv(_gt_csv(palm_root))
    assert [Path(p).name for p, _ in from_csv.samples] == gt["imgName"].tolist()
    assert from_csv.labels.tolist() == gt["Label"].tolist()


def test_val_columns_found_by_name(palm_root, tmp_path):
    gt = pd.read_csv(_gt_csv(palm_root))
    shuffled = gt[["Fovea_Y", "Label", "Fovea_X", "imgName", "ID"]].rename(
        columns={"imgName": "img_name", "Label": "label"}
    )  # case / underscore differences too
    shuffled["Notes"] = "x"
    path = tmp_path / "reordered.csv"
    shuffled.to_csv(path, index=False)
    ds = PalmValSet(palm_root / "PALM-Validation400", path, transform=T64)
    assert ds.labels.tolist() == gt["Label"].tolist()


def test_val_missing_column_is_named(palm_root, tmp_path):
    path = tmp_path / "gt.csv"
    pd.read_csv(_gt_csv(palm_root)).drop(columns="Label").to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"gt\.csv: no column 'Label'"):
        PalmValSet(palm_root / "PALM-Validation400", path)


def test_find_palm_layout_names_what_is_missing(palm_root, tmp_path):
    layout = find_palm_layout(palm_root)
    assert layout.train_dir == palm_root / "PALM-Training400" / "PALM-Training400"
    assert layout.val_dir == palm_root / "PALM-Validation400"
    (tmp_path / "PALM-Training400").mkdir()
    with pytest.raises(FileNotFoundError, match="PALM-Validation400"):
        find_palm_layout(tmp_path)
    (tmp_path / "PALM-Validation400").mkdir()
    with pytest.raises(FileNotFoundError, match="ground truth"):
        find_palm_layout(tmp_path)


# ---------------------------------------------------------------- bad inputs


@pytest.fixture
def train_copy(palm_root, tmp_path) -> Path:
    """Four good training images (2 PM) in a writable folder."""
    src = palm_root / "PALM-Training400" / "PALM-Training400"
    dst = tmp_path / "PALM-Training400"
    dst.mkdir()
    for name in ("H0001.jpg", "N0001.jpg", "P0001.jpg", "P0002.jpg"):
        shutil.copy(src / name, dst / name)
    return dst


def _truncated(path: Path) -> None:
    data = (path.parent / "P0001.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "non-image": lambda p: p.write_text("this is not a picture"),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": _truncated,
    "png-named-jpg-garbage": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_unreadable_image_names_file_and_skip_bad_drops_it(train_copy, kind):
    bad = train_copy / "N0002.jpg"
    BAD_FILES[kind](bad)
    good = {str(p) for p in train_copy.glob("*.jpg")} - {str(bad)}

    ds = PalmTrainSet(train_copy, transform=T64)  # listing is fine; decoding fails
    index = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(ImageReadError, match="N0002.jpg"):
        ds[index]

    ds = PalmTrainSet(train_copy, transform=T64, skip_bad=True)
    assert {p for p, _ in ds.samples} == good
    assert [w for w, _ in ds.skipped] == [str(bad)]
    assert all(ds[i][0].shape == (3, 64, 64) for i in range(len(ds)))


def test_unknown_prefix_names_file(train_copy):
    shutil.copy(train_copy / "H0001.jpg", train_copy / "X0001.jpg")
    with pytest.raises(ValueError, match=r"X0001\.jpg: unknown file-name prefix 'X'"):
        PalmTrainSet(train_copy)
    ds = PalmTrainSet(train_copy, skip_bad=True, transform=T64)
    assert len(ds) == 4 and "X0001.jpg" in ds.skipped[0][0]


@pytest.fixture
def val_copy(palm_root, tmp_path) -> tuple[Path, pd.DataFrame]:
    """Validation images in a writable folder plus the ground-truth table."""
    dst = tmp_path / "val" / "PALM-Validation400"
    shutil.copytree(palm_root / "PALM-Validation400", dst)
    return dst, pd.read_csv(_gt_csv(palm_root))


def _abs_name(img_dir: Path) -> str:
    return str(img_dir / "V0001.jpg")  # exists, but absolute names are refused


BAD_ROWS = {
    # case: (imgName, Label, expected message fragment)
    "missing image": (lambda d: "V0999.jpg", 0, r"image 'V0999.jpg' not found"),
    "label 2": (lambda d: "V0002.jpg", 2, r"label 2 not in \{0, 1\}"),
    "label text": (lambda d: "V0002.jpg", "PM", r"label PM not in \{0, 1\}"),
    "label empty": (lambda d: "V0002.jpg", np.nan, r"label nan not in \{0, 1\}"),
    "parent escape": (lambda d: "../outside.jpg", 1, r"escapes the image folder"),
    "absolute path": (_abs_name, 1, r"absolute path .* not allowed"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_ground_truth_row_names_file_and_row(val_copy, tmp_path, case):
    img_dir, gt = val_copy
    shutil.copy(img_dir / "V0001.jpg", img_dir.parent / "outside.jpg")  # exists outside the folder
    name_fn, label, fragment = BAD_ROWS[case]
    gt = gt.astype({"Label": object, "imgName": object})
    gt.loc[4, ["imgName", "Label"]] = [name_fn(img_dir), label]  # table row 4 = file row 6
    labels = tmp_path / "gt.csv"
    gt.to_csv(labels, index=False)

    with pytest.raises(ValueError, match=rf"gt\.csv row 6: .*{fragment}"):
        PalmValSet(img_dir, labels)

    ds = PalmValSet(img_dir, labels, skip_bad=True, transform=T64)
    expected = [str(img_dir / n) for i, n in enumerate(gt["imgName"]) if i != 4]
    assert [p for p, _ in ds.samples] == expected
    assert len(ds.skipped) == 1 and ds.skipped[0][0].endswith("gt.csv row 6")


def test_xlsx_row_numbers_match_spreadsheet(val_copy, tmp_path):
    img_dir, gt = val_copy
    gt.loc[0, "Label"] = 3
    labels = tmp_path / "gt.xlsx"
    gt.to_excel(labels, index=False)
    with pytest.raises(ValueError, match=r"gt\.xlsx row 2: V0001\.jpg: label 3"):
        PalmValSet(img_dir, labels)


# ---------------------------------------------------------------- generic layouts


def _write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((20, 24, 3), value, np.uint8))


def test_csv_set_labels_by_int_or_name_and_relative_root(tmp_path):
    for name, value in (("a.png", 10), ("b.png", 100), ("sub/c.png", 200)):
        _write_png(tmp_path / "imgs" / name, value)
    (tmp_path / "ints.csv").write_text("label,path\n0,imgs/a.png\n2,imgs/b.png\n1,imgs/sub/c.png\n")
    ds = CsvImageSet(tmp_path / "ints.csv", transform=T64)
    assert ds.classes == ["0", "1", "2"] and ds.labels.tolist() == [0, 2, 1]

    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "names.csv").write_text("path,label\na.png,cat\nb.png,dog\nsub/c.png,1\n")
    ds = CsvImageSet(
        tmp_path / "lists" / "names.csv",
        root=tmp_path / "imgs",
        classes=["cat", "dog"],
        transform=T64,
    )
    assert ds.labels.tolist() == [0, 1, 1]
    assert ds[1][0].mean() == pytest.approx(100 / 255 * 2 - 1, abs=1e-5)


def test_csv_set_bad_rows(tmp_path):
    _write_png(tmp_path / "a.png", 10)
    (tmp_path / "l.csv").write_text("path,label\na.png,cat\nmissing.png,cat\na.png,bird\n")
    with pytest.raises(ValueError, match=r"l\.csv row 3: image 'missing.png' not found"):
        CsvImageSet(tmp_path / "l.csv", classes=["cat", "dog"])
    ds = CsvImageSet(tmp_path / "l.csv", classes=["cat", "dog"], skip_bad=True)
    assert len(ds) == 1
    assert [w.rsplit(" ", 1)[-1] for w, _ in ds.skipped] == ["3", "4"]
    assert "label bird not in ['cat', 'dog']" in ds.skipped[1][1]


def test_folder_set_and_unicode_paths(tmp_path):
    root = tmp_path / "données_眼底"
    _write_png(root / "chat" / "é1.png", 50)
    _write_png(root / "chien" / "狗.png", 150)
    cv2.imencode(".jpg", np.full((16, 16, 3), 150, np.uint8))[1].tofile(
        str(root / "chien" / "x.JPG")
    )
    (root / "chien" / "notes.txt").write_text("ignored")
    ds = FolderImageSet(root, transform=T64)
    assert ds.classes == ["chat", "chien"] and ds.labels.tolist() == [0, 1, 1]
    assert read_image(root / "chien" / "狗.png").shape == (20, 24, 3)
    with pytest.raises(FileNotFoundError, match="oiseau"):
        FolderImageSet(root, classes=["chat", "oiseau"])
