"""palm.data.prepare: the labels CSV it writes."""
from __future__ import annotations


import numpy as np
import pandas as pd

from palm.data.prepare import xlsx_to_csv
from palm.data import read_table
from tests.formula_cells import NAMES, assert_no_formula_cells


def test_prepare_labels_csv_escapes_and_palm_data_reads_it_back(tmp_path):
    table = pd.DataFrame({"imgName": NAMES, "Label": np.arange(len(NAMES)) % 2})
    table.to_excel(tmp_path / "gt.xlsx", index=False, engine="openpyxl")
    source = read_table(tmp_path / "gt.xlsx")  # openpyxl keeps =1+2.jpg as a formula (NaN)
    assert source["imgName"].isin(["+SUM(1).jpg", "-2+3.jpg", "@cmd.jpg", "\tTAB.jpg"]).sum() == 4
    written = xlsx_to_csv(tmp_path / "gt.xlsx")
    assert_no_formula_cells(written)
    assert read_table(written).equals(source)  # what the training and eval lists read
