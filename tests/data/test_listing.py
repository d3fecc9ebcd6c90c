"""palm.data listing: label, path and duplicate checks of image lists."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from palm.cli import run_tool
from palm.data import CsvImageSet, build_transform
from palm.cli import train as train_tool


T32 = build_transform(32, train=False)


def _write_png(path: Path, value: int = 100, size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def _run_tool(main, args) -> str:
    """The message a tool exits with (run_tool turns user errors into `error: ...`)."""
    with pytest.raises(SystemExit) as exc:
        run_tool(main, args)
    return str(exc.value.code)


def _csv_set(tmp_path: Path, labels: list[object], names: list[str] | None = None) -> Path:
    names = names or [f"img/{i}.png" for i in range(len(labels))]
    for name in names:
        if not name.startswith(".."):
            _write_png(tmp_path / name, 7)
    pd.DataFrame({"path": names, "label": labels}).to_csv(tmp_path / "list.csv", index=False)
    return tmp_path / "list.csv"


@pytest.mark.parametrize("stray", [2, "yes"])
def test_stray_label_names_the_row(tmp_path, stray):
    labels: list[object] = [i % 2 for i in range(120)]
    labels[40] = stray  # file row 42
    csv = _csv_set(tmp_path, labels)
    with pytest.raises(ValueError, match=rf"list\.csv row 42: label {stray!r}"):
        CsvImageSet(csv, transform=T32)
    ds = CsvImageSet(csv, transform=T32, skip_bad=True)
    assert ds.classes == ["0", "1"] and len(ds) == 119 and ds.skipped[0][0].endswith("row 42")
    labels[40] = 1
    assert CsvImageSet(_csv_set(tmp_path, labels), transform=T32).classes == ["0", "1"]


def test_stray_label_through_train_tool_is_one_line(tmp_path):
    labels: list[object] = [i % 2 for i in range(120)]
    labels[7] = 2
    csv = _csv_set(tmp_path, labels)
    args = train_tool.parse_args(["--model", "lenet", "--train-csv", str(csv), "--val-csv",
                                  str(csv), "--output", str(tmp_path / "run")])
    message = _run_tool(train_tool.main, args)
    assert message == f"error: {csv} row 9: label 2 occurs in 1 of 120 rows (a typo? list " \
                      "every class in class_names to keep it)"


def test_outside_paths_need_the_flag(tmp_path):
    (tmp_path / "lists").mkdir()
    _write_png(tmp_path / "outside.png")
    _write_png(tmp_path / "lists" / "in.png")
    csv = tmp_path / "lists" / "l.csv"
    csv.write_text("path,label\nin.png,0\n../outside.png,1\n")
    with pytest.raises(ValueError, match=r"l\.csv row 3: path '\.\./outside\.png' escapes the "
                                         r"image folder .*allow_outside_paths"):
        CsvImageSet(csv, classes=["a", "b"], transform=T32)
    csv.write_text(f"path,label\nin.png,0\n{tmp_path / 'outside.png'},1\n")
    with pytest.raises(ValueError, match="row 3: path absolute path .* not allowed"):
        CsvImageSet(csv, classes=["a", "b"], transform=T32)
    ds = CsvImageSet(csv, classes=["a", "b"], transform=T32, allow_outside_paths=True)
    assert [Path(p).name for p, _ in ds.samples] == ["in.png", "outside.png"]
    # lists written beside the data (data_tools.prepare) may lead into the data root
    csv.write_text("path,label\nin.png,0\n../outside.png,1\n")
    assert len(CsvImageSet(csv, classes=["a", "b"], transform=T32, data_root=tmp_path)) == 2
    with pytest.raises(ValueError, match="escapes the image folder .* and the data root"):
        CsvImageSet(csv, classes=["a", "b"], transform=T32, data_root=tmp_path / "lists")
    # a symlinked image folder inside the list's folder is fine (names are checked as written)
    (tmp_path / "lists" / "linked").symlink_to(tmp_path)
    csv.write_text("path,label\nin.png,0\nlinked/outside.png,1\n")
    assert len(CsvImageSet(csv, classes=["a", "b"], transform=T32)) == 2


def test_duplicate_rows_dropped_with_warning_and_conflicts_refused(tmp_path, caplog):
    csv = _csv_set(tmp_path, [0, 1, 0], ["img/a.png", "img/b.png", "img/./a.png"])
    ds = CsvImageSet(csv, classes=["x", "y"], transform=T32)
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    assert ds.duplicates == [f"{csv} row 4: {tmp_path / 'img/./a.png'} repeats {csv} row 2; "
                             "dropped"]
    assert "1 duplicate rows dropped" in caplog.text
    csv = _csv_set(tmp_path, [0, 1, 1], ["img/a.png", "img/b.png", "img/a.png"])
    with pytest.raises(ValueError, match=r"row 4: .*a\.png is also listed in .* row 2 with "
                                         "another label"):
        CsvImageSet(csv, classes=["x", "y"], transform=T32)
