"""Label files for a data set: PALM XLSX ground truth -> CSV, a stratified train/val split,
stratified k folds.

Split and fold files are `path,label` CSVs (read by palm.data.CsvImageSet); paths are
written relative to the output folder, so the CSVs keep working when data and lists move
together. The splits come from palm.data.splits.

Example:
    lists = write_split_lists("demo_data/palm", "splits/", val_fraction=0.2)
    lists.files  # [splits/train.csv, splits/val.csv]
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from palm.data.datasets import ImageSet, PalmTrainSet, find_column, open_image_set, read_table
from palm.data.splits import holdout_split, kfold_assignment
from palm.io_utils import write_csv_atomic

__all__ = ["PreparedLists", "sample_table", "write_fold_lists", "write_split_lists",
           "xlsx_to_csv"]


@dataclass(frozen=True)
class PreparedLists:
    """The CSVs written for a data set, and where their paths lead."""

    files: list[Path]
    data_root: Path  # the folder the lists' paths lead into (a CSV's images: its root)
    palm_layout: bool  # PALM photos (which keep the fundus augmentation)


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    write_csv_atomic(path, table)
    return path


def xlsx_to_csv(xlsx: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Convert the PALM ground-truth XLSX to CSV (all columns kept; default: labels.csv beside it).

    Raises:
        BadData: the table lacks an imgName or Label column (message names the file).
    """
    xlsx = Path(xlsx)
    table = read_table(xlsx)
    for column in ("imgName", "Label"):
        find_column(table, column, xlsx)
    return _write_csv(table, Path(out) if out else xlsx.with_name("labels.csv"))


def sample_table(ds: ImageSet, out_dir: Path) -> pd.DataFrame:
    """path,label rows for a data set, paths relative to out_dir."""
    rows = [
        (os.path.relpath(os.path.abspath(p), os.path.abspath(out_dir)), label)
        for p, label in ds.samples
    ]
    return pd.DataFrame(rows, columns=["path", "label"])


def _open(data: str | os.PathLike, out: Path, skip_bad: bool) -> tuple[ImageSet, pd.DataFrame]:
    ds = open_image_set(data, split="train", skip_bad=skip_bad)
    return ds, sample_table(ds, out)


def _prepared(files: list[Path], data: str | os.PathLike, ds: ImageSet) -> PreparedLists:
    root = Path(data) if Path(data).is_dir() else Path(ds.root)
    return PreparedLists(files, root, isinstance(ds, PalmTrainSet))


def write_split_lists(data: str | os.PathLike, out: str | os.PathLike, val_fraction: float = 0.2,
                      seed: int = 0, skip_bad: bool = False) -> PreparedLists:
    """OUT/train.csv and OUT/val.csv: a stratified split of `data` (a PALM root's training
    set, a path,label CSV or a class-folder root).

    Raises:
        BadConfig: val_fraction outside (0, 1) or too few images of a class to split.
    """
    out = Path(out)
    ds, table = _open(data, out, skip_bad)
    kept, held = holdout_split(table["label"], val_fraction, seed, name="val_fraction")
    files = [_write_csv(table.iloc[kept], out / "train.csv"),
             _write_csv(table.iloc[held], out / "val.csv")]
    return _prepared(files, data, ds)


def write_fold_lists(data: str | os.PathLike, out: str | os.PathLike, folds: int = 5,
                     seed: int = 0, skip_bad: bool = False) -> PreparedLists:
    """OUT/folds.csv (path, label, fold) and OUT/fold<K>_train.csv, fold<K>_val.csv for
    stratified k folds of `data`.

    Raises:
        BadConfig: fewer than 2 folds or more than the smallest class has images.
    """
    out = Path(out)
    ds, table = _open(data, out, skip_bad)
    table["fold"] = kfold_assignment(table["label"], folds, seed=seed)[0]
    files = [_write_csv(table, out / "folds.csv")]
    for fold in range(folds):
        rows = table["fold"] == fold
        files += [_write_csv(table.loc[~rows, ["path", "label"]], out / f"fold{fold}_train.csv"),
                  _write_csv(table.loc[rows, ["path", "label"]], out / f"fold{fold}_val.csv")]
    return _prepared(files, data, ds)
