"""ODIR-5K's annotation sheet -> a per-eye multi-label CSV for `--task multilabel`.

Each eye is labelled from its own diagnostic keywords (the sheet's N..O letters are the
patient's, both eyes together); an eye that is not a usable fundus photo, or has only
image-quality remarks, is left out and counted. Paths are written relative to the CSV's
folder; train with --data-root IMAGES when the images are not inside it (the printed
command says so). --val-output splits the eyes by patient into a training and a validation
list. The keyword table: palm/data/odir.py (docs/data.md).

Example:
    python -m data_tools.odir --annotations "ODIR-5K_Training_Annotations(Updated)_V2.xlsx" \\
        --images "ODIR-5K/Training Images" --output lists/odir_train.csv \\
        --val-output lists/odir_val.csv
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_output_option, add_verbosity_options, command_for,
                             command_parser, library_call, params_of)

RUNS = "palm.data.tasks:run_odir_csv"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    p.add_argument("--annotations", required=True, metavar="SHEET",
                   help="ODIR annotation sheet (.xlsx, or .csv with the same columns)")
    p.add_argument("--images", required=True, metavar="DIR",
                   help="the folder of the images the sheet names (0_left.jpg, ...)")
    add_output_option(p, "the CSV to write (path + one 0/1 column per label); with "
                         "--val-output, the training part", required=True)
    p.add_argument("--val-output", metavar="VAL.csv",
                   help="also hold out validation eyes into this CSV (beside --output): both "
                        "eyes of a patient on one side, stratified by label combination")
    p.add_argument("--val-fraction", type=float,
                   help="share of the eyes held out with --val-output (default 0.2; the "
                        "held-out part is one of round(1/F) patient-grouped folds)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --val-output split")
    p.add_argument("--unknown-as-other", action="store_true",
                   help="label an eye with a keyword the table lacks O (counted) instead of "
                        "stopping with the list of them")
    p.add_argument("--labels", choices=("letters", "full"), default="letters",
                   help="label column names: letters N,D,G,C,A,H,M,O (default) or full "
                        "normal,diabetes,glaucoma,cataract,amd,hypertension,myopia,other")
    p.add_argument("--exist-ok", action="store_true",
                   help="replace an existing --output (and --val-output)")
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {**params_of(args), "train_command": command_for("train")}


main = library_call(__name__)
cli = functools.partial(run_command, "odir-csv")
