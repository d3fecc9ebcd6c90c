"""Reading the lists that name images: tables (XLSX/CSV), their columns and rows, names
that must stay inside the image folder, and files listed twice.

Problems are (where, reason) pairs; `where` is a file or `<table> row <n>` as a spreadsheet
shows it, so data sets report them in file order.
"""

from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath

import pandas as pd

from palm.data.image_io import is_image_file
from palm.errors import BadData
from palm.io_utils import read_csv


def images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ground-truth table: .xlsx/.xls with pandas+openpyxl, anything else as CSV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            return pd.read_excel(path)
        # a list palm wrote (prepare, cv folds) has its formula-like cells escaped
        return read_csv(path)
    except Exception as e:  # pandas/openpyxl raise many types for a broken file
        reason = " ".join(str(e).split())  # pandas' parser messages span lines
        raise BadData(f"{path}: cannot read table ({type(e).__name__}: {reason})") from e


def find_column(table: pd.DataFrame, name: str, source: str | os.PathLike) -> str:
    """The column of `table` matching `name`, ignoring case, spaces and underscores."""

    def key(s: object) -> str:
        return str(s).lower().replace(" ", "").replace("_", "")

    for col in table.columns:
        if key(col) == key(name):
            return col
    raise BadData(f"{source}: no column {name!r} (found: {', '.join(map(str, table.columns))})")


def row_location(source: str | os.PathLike, index: int) -> str:
    """`<source> row <n>` for the table row at 0-based `index`."""
    # row numbers as a spreadsheet or text editor shows them: the header is row 1
    return f"{source} row {index + 2}"


def row_number(where: str) -> int:
    """The row number in a `row_location` string (problems are reported in file order)."""
    tail = where.rsplit(" row ", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


def int_label(value: object) -> int | None:
    """1, 1.0, "1" -> 1; anything else (NaN, 0.5, "PM") -> None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def safe_join(folder: Path, name: str, allow_outside: bool = False,
              also_inside: str | os.PathLike | None = None) -> Path:
    """`folder / name`, refusing absolute names and names that leave `folder` (../x.jpg).

    The check is on the name as written (normalised, symlinks not followed), so a list may
    point into a symlinked image folder but not name files elsewhere.

    Args:
        allow_outside: accept any name (absolute names then stand for themselves).
        also_inside: a second folder (the data root) that relative names may lead into.
    """
    name = name.strip().replace("\\", "/")  # Windows separators in a CSV made on Windows
    if allow_outside:
        return folder / name
    if os.path.isabs(name) or PureWindowsPath(name).drive:
        raise BadData(f"absolute path {name!r} not allowed; give a name relative to "
                         f"{folder} (or pass allow_outside_paths)", param="allow_outside_paths")
    path = Path(os.path.abspath(folder / name))
    roots = [folder] + ([Path(also_inside)] if also_inside is not None else [])
    if not any(Path(os.path.abspath(root)) in (path, *path.parents) for root in roots):
        also = f" and the data root {also_inside}" if also_inside is not None else ""
        raise BadData(f"{name!r} escapes the image folder {folder}{also} (pass "
                         "allow_outside_paths to allow it)", param="allow_outside_paths")
    return folder / name


def listed_image(folder: Path, name: str, column: str, allow_outside: bool,
                  also_inside: str | os.PathLike | None = None) -> Path:
    """The image file a table's `column` names (see safe_join).

    Raises:
        BadData: the name leaves the allowed folders, or no such file.
    """
    try:
        path = safe_join(folder, name, allow_outside, also_inside)
    except ValueError as e:
        raise BadData(f"{column} {e}") from None
    if not path.is_file():
        raise BadData(f"image {name!r} not found in {folder}")
    return path


def unique_entries(listed: list[tuple[str, str, int]]
                   ) -> tuple[list[tuple[str, int]], list[tuple[str, str]], list[str]]:
    """(entries, problems, duplicates) from (row, path, label) listings.

    A file listed again with the same label is dropped (reported in `duplicates`, so it is
    not counted twice); with another label it is a problem naming both rows.
    """
    first: dict[str, tuple[str, int]] = {}
    entries, problems, duplicates = [], [], []
    for where, path, label in listed:
        key = os.path.normcase(os.path.abspath(path))
        if key not in first:
            first[key] = (where, label)
            entries.append((path, label))
        elif first[key][1] == label:
            duplicates.append(f"{where}: {path} repeats {first[key][0]}; dropped")
        else:
            problems.append((where, f"{path} is also listed in {first[key][0]} with another "
                                    "label"))
    return entries, problems, duplicates
