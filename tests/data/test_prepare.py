"""palm.data.prepare: the labels CSV it writes."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from palm.data.prepare import xlsx_to_csv
from palm.data import read_table
from palm.io_utils import FORMULA_STARTS


DANGEROUS = ["=1+2.jpg", "+SUM(1).jpg", "-2+3.jpg", "@cmd.jpg", "\tTAB.jpg", "\rCR.jpg"]


# not dangerous, but must survive the round trip: an apostrophe of its own, a plain name
HARMLESS = ["'=quoted.jpg", "plain.jpg"]


NAMES = DANGEROUS + HARMLESS


def _raw_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _assert_no_formula_cells(path: Path) -> None:
    """No cell of the file (header included) starts with a formula character, unless it
    is a plain number such as -0.25."""
    for row in _raw_cells(path):
        for cell in row:
            if cell.startswith(FORMULA_STARTS):
                float(cell)  # raises for =1+2.jpg, -2+3.jpg, @cmd.jpg ...


def test_prepare_labels_csv_escapes_and_palm_data_reads_it_back(tmp_path):
    table = pd.DataFrame({"imgName": NAMES, "Label": np.arange(len(NAMES)) % 2})
    table.to_excel(tmp_path / "gt.xlsx", index=False, engine="openpyxl")
    source = read_table(tmp_path / "gt.xlsx")  # openpyxl keeps =1+2.jpg as a formula (NaN)
    assert source["imgName"].isin(["+SUM(1).jpg", "-2+3.jpg", "@cmd.jpg", "\tTAB.jpg"]).sum() == 4
    written = xlsx_to_csv(tmp_path / "gt.xlsx")
    _assert_no_formula_cells(written)
    assert read_table(written).equals(source)  # what the training and eval lists read
