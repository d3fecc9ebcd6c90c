"""File names a spreadsheet would run as formulas, and checks of the CSV cells palm writes
(shared by the CSV-injection tests of io_utils, predict, compare, cv and prepare)."""
from __future__ import annotations

import csv
from pathlib import Path

from palm.io_utils import FORMULA_STARTS

DANGEROUS = ["=1+2.jpg", "+SUM(1).jpg", "-2+3.jpg", "@cmd.jpg", "\tTAB.jpg", "\rCR.jpg"]
# not dangerous, but must survive the round trip: an apostrophe of its own, a plain name
HARMLESS = ["'=quoted.jpg", "plain.jpg"]
NAMES = DANGEROUS + HARMLESS


def raw_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def assert_no_formula_cells(path: Path) -> None:
    """No cell of the file (header included) starts with a formula character, unless it
    is a plain number such as -0.25."""
    for row in raw_cells(path):
        for cell in row:
            if cell.startswith(FORMULA_STARTS):
                float(cell)  # raises for =1+2.jpg, -2+3.jpg, @cmd.jpg ...
