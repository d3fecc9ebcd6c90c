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
from pathlib import Path

from palm.cli.common import add_verbosity_options, command_for, run_tool
from palm.data.prepare import write_fold_lists, write_split_lists, xlsx_to_csv


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
    elif args.command == "split":
        lists = write_split_lists(args.data, args.out, args.val_fraction, args.seed, args.skip_bad)
        written = lists.files
    else:
        written = write_fold_lists(args.data, args.out, args.k, args.seed, args.skip_bad).files
    for path in written:
        print(f"wrote {path}")
    if args.command == "split":
        # PALM photos keep the fundus augmentation; lists default to the label-safe preset
        print(f"train: {command_for('train')} --train-csv {written[0]} --val-csv {written[1]} "
              f"--data-root {lists.data_root}" + (" --augment fundus" if lists.palm_layout else ""))
    return written


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
