"""Prepare label files: PALM XLSX ground truth -> CSV, stratified train/val split, k folds.

Split and fold files are `path,label` CSVs (read by palm.data.CsvImageSet); paths are written
relative to the output folder, so the CSVs keep working when data and lists move together.
When the output folder is not inside the data folder, the paths lead out of it: train with
`--data-root DATA` beside the lists (palm refuses list paths leaving the list's folder
otherwise), as the printed command shows.

Examples:
    python -m data_tools.prepare xlsx2csv PALM-Validation-GT/PM_Label_and_Fovea_Location.xlsx
    python -m data_tools.prepare split demo_data/palm --val-fraction 0.2 --out splits/
    python -m data_tools.prepare kfold demo_data/palm --k 5 --out folds/
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from palm.cli.common import add_verbosity_options, command_for, run_tool
from palm.data import ImageSet, PalmTrainSet, open_image_set, read_table
from palm.data.datasets import find_column
from palm.errors import BadConfig
from palm.io_utils import write_csv_atomic


def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    write_csv_atomic(path, table)
    return path


def xlsx_to_csv(xlsx: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Convert the PALM ground-truth XLSX to CSV (all columns kept; default: labels.csv beside it).

    Raises:
        ValueError: the table lacks an imgName or Label column (message names the file).
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


def stratified_split(
    table: pd.DataFrame, val_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/val split keeping the class proportions."""
    if not 0.0 < val_fraction < 1.0:
        raise BadConfig(f"val_fraction must be in (0, 1), got {val_fraction}")
    train, val = train_test_split(
        table, test_size=val_fraction, stratify=table["label"], random_state=seed
    )
    return train.sort_index(), val.sort_index()


def kfold_assign(table: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """Fold index (0..k-1) per row, stratified by label."""
    smallest = table["label"].value_counts().min()
    if not 2 <= k <= smallest:
        raise BadConfig(f"k must be between 2 and the smallest class size ({smallest}), got {k}")
    folds = pd.Series(0, index=table.index, name="fold")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, val_idx) in enumerate(splitter.split(table, table["label"])):
        folds.iloc[val_idx] = fold
    return folds


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    x = sub.add_parser("xlsx2csv", help="PALM ground-truth XLSX -> CSV")
    x.add_argument("xlsx")
    x.add_argument("--out", help="CSV path (default: labels.csv beside the XLSX)")
    for name, help_ in (("split", "stratified train/val split"), ("kfold", "stratified k folds")):
        s = sub.add_parser(name, help=help_)
        s.add_argument(
            "data", help="PALM root (its training set), path,label CSV or class-folder root"
        )
        s.add_argument("--out", required=True, help="output folder")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--skip-bad", action="store_true", help="leave out unreadable images")
        if name == "split":
            s.add_argument("--val-fraction", type=float, default=0.2)
        else:
            s.add_argument("--k", type=int, default=5)
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> list[Path]:
    if args.command == "xlsx2csv":
        written = [xlsx_to_csv(args.xlsx, args.out)]
    else:
        out = Path(args.out)
        ds = open_image_set(args.data, split="train", skip_bad=args.skip_bad)
        table = sample_table(ds, out)
        if args.command == "split":
            train, val = stratified_split(table, args.val_fraction, args.seed)
            written = [_write_csv(train, out / "train.csv"), _write_csv(val, out / "val.csv")]
        else:
            table["fold"] = kfold_assign(table, args.k, args.seed)
            written = [_write_csv(table, out / "folds.csv")]
            for fold in range(args.k):
                rows = table["fold"] == fold
                written += [
                    _write_csv(table.loc[~rows, ["path", "label"]], out / f"fold{fold}_train.csv"),
                    _write_csv(table.loc[rows, ["path", "label"]], out / f"fold{fold}_val.csv"),
                ]
    for path in written:
        print(f"wrote {path}")
    if args.command == "split":
        # PALM photos keep the fundus augmentation; lists default to the label-safe preset
        palm = isinstance(ds, PalmTrainSet)
        data = args.data if Path(args.data).is_dir() else ds.root  # a CSV's images: its root
        print(f"train: {command_for('train')} --train-csv {written[0]} --val-csv {written[1]} "
              f"--data-root {data}" + (" --augment fundus" if palm else ""))
    return written


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
