"""Prepare label files: PALM XLSX ground truth -> CSV, stratified train/val split, k folds.

Split and fold files are `path,label` CSVs (read by palm.data.CsvImageSet); paths are written
relative to the output folder, so the CSVs keep working when data and lists move together.
When the output folder is not inside the data folder, the paths lead out of it: train with
`--data-root DATA` beside the lists (palm refuses list paths leaving the list's folder
otherwise), as the printed command shows.

Examples:
    python -m data_tools.prepare xlsx2csv PALM-Validation-GT/PM_Label_and_Fovea_Location.xlsx
    python -m data_tools.prepare split demo_data/palm --val-fraction 0.2 --output splits/
    python -m data_tools.prepare kfold demo_data/palm --k 5 --output folds/
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_output_option, add_verbosity_options, command_for,
                             command_parser, library_call, params_of)

RUNS = "palm.data.tasks:run_prepare"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__.split("\n")[0], prog, split=False,
                       formatter=argparse.HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    x = sub.add_parser("xlsx2csv", help="PALM ground-truth XLSX -> CSV",
                       formatter_class=p.formatter_class)
    x.add_argument("xlsx")
    add_output_option(x, "CSV path (default: labels.csv beside the XLSX)", hidden=("--out",))
    for name, help_ in (("split", "stratified train/val split"), ("kfold", "stratified k folds")):
        s = sub.add_parser(name, help=help_, formatter_class=p.formatter_class)
        s.add_argument(
            "data", help="PALM root (its training set), path,label CSV or class-folder root"
        )
        add_output_option(s, "output folder", required=True, hidden=("--out",))
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--skip-bad", action="store_true", help="leave out unreadable images")
        if name == "split":
            s.add_argument("--val-fraction", type=float, default=0.2)
        else:
            s.add_argument("--k", type=int, default=5)
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {**params_of(args), "train_command": command_for("train")}


main = library_call(__name__)
cli = functools.partial(run_command, "prepare")
