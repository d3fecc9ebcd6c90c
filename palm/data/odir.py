"""ODIR-5K's annotation sheet -> a per-eye multi-label CSV (`path` + one 0/1 column per label)
that palm.data.generic.MultiLabelCsvImageSet reads.

ODIR-5K (Peking University, ODIR-2019 challenge) ships `ODIR-5K_Training_Annotations
(Updated)_V2.xlsx`: one row per patient with `ID, Patient Age, Patient Sex, Left-Fundus,
Right-Fundus, Left-Diagnostic Keywords, Right-Diagnostic Keywords, N, D, G, C, A, H, M, O`.
The letters are the patient's (the OR of both eyes), so each eye is labelled here from its own
keywords, several per eye, separated by the full-width comma "，" (U+FF0C) or ",".

KEYWORDS maps every keyword of the V2 sheet (102 distinct ones) to a letter, to NOTE (an
image-quality remark, no diagnosis: "lens dust", "low image quality", ...) or to UNUSABLE (the
photo is not a usable fundus: "no fundus image", "anterior segment image"). The table follows
the ODIR-2019 dataset page (https://odir2019.grand-challenge.org/dataset/), which names the
four image-quality remarks, and the keyword rules of public converters, e.g.
JordiCorbilla/ocular-disease-intelligent-recognition-deep-learning (odir_rule_engine.py: the
four remarks "do not play a decisive role", the two unusable keywords are skipped). On the V2
sheet the OR of both eyes' labels equals every patient's letters (3500 patients), apart from
patient 4149, whose two eyes say only "low image quality" and whose letter is N.

An eye gets N only when it has no other label; an eye with only quality remarks (no
diagnosis) and an UNUSABLE eye are left out and counted.

Example:
    converted = convert_odir_sheet("ODIR-5K_Training_Annotations(Updated)_V2.xlsx",
                                   "ODIR-5K/Training Images", "lists/odir.csv")
    converted.table.columns  # path, N, D, G, C, A, H, M, O
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from palm.data.listing import find_column, int_label, read_table, row_location
from palm.data.splits import grouped_holdout_split
from palm.errors import BadConfig, BadData

__all__ = ["KEYWORDS", "LABEL_NAMES", "LETTERS", "NOTE", "UNUSABLE", "OdirConversion",
           "OdirEye", "convert_odir_sheet", "eye_labels", "split_by_patient", "split_keywords"]

LETTERS = ("N", "D", "G", "C", "A", "H", "M", "O")
# column names of `labels="full"`
LABEL_NAMES = {"N": "normal", "D": "diabetes", "G": "glaucoma", "C": "cataract", "A": "amd",
               "H": "hypertension", "M": "myopia", "O": "other"}
NOTE = "note"  # an image-quality remark: no diagnosis
UNUSABLE = "unusable"  # not a usable fundus photo: the eye is left out

_DIABETES = ("mild nonproliferative retinopathy", "moderate non proliferative retinopathy",
             "suspected moderate non proliferative retinopathy",
             "severe nonproliferative retinopathy", "proliferative diabetic retinopathy",
             "severe proliferative diabetic retinopathy", "diabetic retinopathy",
             "suspected diabetic retinopathy", "suspicious diabetic retinopathy")
# Other diseases and abnormalities. "drusen" and "intraretinal microvascular abnormality" are
# O, not A and D: with them so, the eyes' OR gives the sheet's own A and D letters.
_OTHER = (
    "abnormal pigment", "arteriosclerosis", "asteroid hyalosis", "atrophic change", "atrophy",
    "branch retinal artery occlusion", "branch retinal vein occlusion",
    "central retinal artery occlusion", "central retinal vein occlusion",
    "central serous chorioretinopathy", "chorioretinal atrophy",
    "chorioretinal atrophy with pigmentation proliferation", "choroidal nevus",
    "congenital choroidal coloboma", "depigmentation of the retinal pigment epithelium",
    "diffuse chorioretinal atrophy", "diffuse retinal atrophy", "drusen", "epiretinal membrane",
    "epiretinal membrane over the macula", "fundus laser photocoagulation spots",
    "glial remnants anterior to the optic disc", "idiopathic choroidal neovascularization",
    "intraretinal hemorrhage", "intraretinal microvascular abnormality", "laser spot",
    "macular coloboma", "macular epiretinal membrane", "macular hole",
    "macular pigmentation disorder", "maculopathy", "morning glory syndrome",
    "myelinated nerve fibers", "old branch retinal vein occlusion",
    "old central retinal vein occlusion", "old chorioretinopathy", "old choroiditis",
    "optic disc edema", "optic discitis", "optic disk epiretinal membrane", "optic nerve atrophy",
    "oval yellow-white atrophy", "peripapillary atrophy", "pigment epithelium proliferation",
    "pigmentation disorder", "post laser photocoagulation", "post retinal laser surgery",
    "punctate inner choroidopathy", "refractive media opacity", "retina fold",
    "retinal artery macroaneurysm", "retinal detachment",
    "retinal pigment epithelial hypertrophy", "retinal pigment epithelium atrophy",
    "retinal pigmentation", "retinal vascular sheathing", "retinitis pigmentosa",
    "retinochoroidal coloboma", "rhegmatogenous retinal detachment", "silicone oil eye",
    "spotted membranous change", "suspected abnormal color of optic disc",
    "suspected macular epimacular membrane", "suspected microvascular anomalies",
    "suspected retinal vascular sheathing", "suspected retinitis pigmentosa",
    "tessellated fundus", "vascular loops", "vessel tortuosity", "vitreous degeneration",
    "vitreous opacity", "wedge white line change", "wedge-shaped change", "white vessel")

# keyword (lower case, single spaces) -> a letter of LETTERS, NOTE or UNUSABLE
KEYWORDS: dict[str, str] = {
    "normal fundus": "N",
    **dict.fromkeys(_DIABETES, "D"),
    **dict.fromkeys(("glaucoma", "suspected glaucoma"), "G"),
    **dict.fromkeys(("cataract", "suspected cataract"), "C"),
    **dict.fromkeys(("age-related macular degeneration", "dry age-related macular degeneration",
                     "wet age-related macular degeneration"), "A"),
    "hypertensive retinopathy": "H",
    **dict.fromkeys(("pathological myopia", "myopia retinopathy", "myopic retinopathy",
                     "myopic maculopathy"), "M"),
    **dict.fromkeys(_OTHER, "O"),
    **dict.fromkeys(("lens dust", "low image quality", "optic disk photographically invisible",
                     "image offset"), NOTE),
    **dict.fromkeys(("no fundus image", "anterior segment image"), UNUSABLE),
}

SIDES = ("left", "right")
# the sheet's columns per eye: (image file, keywords), found by find_column
EYE_COLUMNS = {side: (f"{side.title()}-Fundus", f"{side.title()}-Diagnostic Keywords")
               for side in SIDES}
ID_COLUMN = "ID"
_SEPARATORS = re.compile("[，,]")

# why an eye is left out
DROP_UNUSABLE = "not a usable fundus photo (no fundus image, anterior segment image)"
DROP_NO_DIAGNOSIS = "no diagnosis (only image-quality remarks, or no keywords)"


def split_keywords(cell: object) -> list[str]:
    """The keywords of one eye's cell: split at "，" or ",", lower case, spaces collapsed
    (the sheet has "suspected abnormal color of  optic disc" with two)."""
    if pd.isna(cell):
        return []
    words = (" ".join(part.split()).lower() for part in _SEPARATORS.split(str(cell)))
    return [word for word in words if word]


@dataclass(frozen=True)
class OdirEye:
    """One eye's verdict: its letters (empty when dropped), why it is dropped (None: kept)
    and the keywords KEYWORDS does not know."""

    letters: frozenset[str]
    dropped: str | None
    unknown: tuple[str, ...]


def eye_labels(keywords: list[str], unknown_as_other: bool = False) -> OdirEye:
    """The labels of an eye with `keywords` (see split_keywords).

    N only when no other label applies; an unknown keyword is listed in `unknown` (and is O
    when `unknown_as_other`). An UNUSABLE keyword drops the eye; so does having no diagnosis.
    """
    kinds = [KEYWORDS.get(word) for word in keywords]
    unknown = tuple(word for word, kind in zip(keywords, kinds) if kind is None)
    if UNUSABLE in kinds:
        return OdirEye(frozenset(), DROP_UNUSABLE, unknown)
    letters = {kind for kind in kinds if kind in LETTERS}
    if unknown and unknown_as_other:
        letters.add("O")
    if letters - {"N"}:
        letters.discard("N")  # "normal fundus" beside a finding is not normal
    if not letters:
        return OdirEye(frozenset(), DROP_NO_DIAGNOSIS, unknown)
    return OdirEye(frozenset(letters), None, unknown)


@dataclass
class OdirConversion:
    """What convert_odir_sheet made of a sheet.

    Attributes:
        table: `path` (relative to the output CSV's folder) and one 0/1 column per label.
        patient_ids: the patient of each row of `table`.
        patients: patient rows read (repeated rows counted once).
        dropped: reason -> the eyes left out (`<sheet> row <n> left`).
        mapped_to_other: unknown keyword -> the eyes that have it (unknown_as_other).
        letter_mismatches: IDs of patients whose sheet letters differ from the OR of their
            two eyes' labels (checked where the sheet has all eight letters and both eyes
            are kept).
        repeated_rows: rows that repeat an earlier row's patient (one row per image, as some
            re-packagings have), dropped.
    """

    table: pd.DataFrame
    patients: int
    patient_ids: list[str] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    mapped_to_other: Counter = field(default_factory=Counter)
    letter_mismatches: list[str] = field(default_factory=list)
    repeated_rows: int = 0


def _columns(table: pd.DataFrame, sheet: Path) -> dict[str, str]:
    """The sheet's column of each name ODIR uses (ID and the four eye columns).

    Raises:
        BadData: naming every column the sheet lacks.
    """
    wanted = [ID_COLUMN, *(name for pair in EYE_COLUMNS.values() for name in pair)]
    found, missing = {}, []
    for name in wanted:
        try:
            found[name] = find_column(table, name, sheet)
        except BadData:
            missing.append(name)
    if missing:
        raise BadData(f"{sheet}: not an ODIR annotation sheet: no column "
                      f"{', '.join(map(repr, missing))} (found: "
                      f"{', '.join(map(str, table.columns))})")
    return found


def _letter_columns(table: pd.DataFrame) -> dict[str, str] | None:
    """The patient letters' columns N..O, when the sheet has all eight."""
    columns = {str(c).strip(): c for c in table.columns}
    return {letter: columns[letter] for letter in LETTERS} if set(LETTERS) <= set(columns) else None


def _drop_repeated_rows(table: pd.DataFrame, columns: dict[str, str], sheet: Path
                        ) -> tuple[pd.DataFrame, int]:
    """`table` without rows repeating an earlier row's patient and eyes; a patient ID listed
    again with other images or keywords is an error naming both rows."""
    used = list(columns.values())
    repeats = table.duplicated(subset=used)
    kept = table[~repeats]
    ids = kept[columns[ID_COLUMN]]
    clash = ids.duplicated(keep=False) & ids.notna()
    if clash.any():
        first, second = list(kept.index[clash][:2])
        raise BadData(f"{row_location(sheet, second)}: patient {ids[second]} is also "
                      f"{row_location(sheet, first)}, with other images or keywords")
    return kept, int(repeats.sum())


def convert_odir_sheet(sheet: str | os.PathLike, images: str | os.PathLike,
                       output: str | os.PathLike, *, unknown_as_other: bool = False,
                       labels: str = "letters") -> OdirConversion:
    """Label each eye of an ODIR annotation sheet (.xlsx, or the same columns as .csv) from
    its own keywords (see module docstring); nothing is written.

    Args:
        sheet: the annotation sheet.
        images: the folder of the training images the sheet names (`0_left.jpg`, ...).
        output: where the CSV will be written; `path` is relative to its folder.
        unknown_as_other: label an eye with a keyword KEYWORDS lacks as O (counted in
            `mapped_to_other`) instead of refusing the sheet.
        labels: the label columns' names: "letters" (N, D, ...) or "full" (normal,
            diabetes, ...).

    Raises:
        BadConfig: `labels` not letters or full.
        BadData: a column missing (all named); keywords KEYWORDS lacks (all listed with
            their rows and eyes) unless unknown_as_other; an image the sheet names missing
            from `images` (row and file); no eye left.
        FileNotFoundError: `sheet` or `images` missing.
    """
    if labels not in ("letters", "full"):
        raise BadConfig(f"labels must be 'letters' or 'full', got {labels!r}", param="labels")
    sheet, images = Path(sheet), Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    table = read_table(sheet)
    columns = _columns(table, sheet)
    table, repeated = _drop_repeated_rows(table, columns, sheet)
    letters = _letter_columns(table)
    result = OdirConversion(pd.DataFrame(), patients=len(table), repeated_rows=repeated)
    rows, unknown, missing = [], [], []
    out_dir = Path(os.path.abspath(Path(output).parent))
    for index, row in table.iterrows():
        where, patient = row_location(sheet, index), str(row[columns[ID_COLUMN]])
        eyes = [eye_labels(split_keywords(row[columns[EYE_COLUMNS[side][1]]]), unknown_as_other)
                for side in SIDES]
        for side, eye in zip(SIDES, eyes):
            unknown += [(word, f"{where} {side}") for word in eye.unknown]
            if eye.dropped is not None:
                result.dropped.setdefault(eye.dropped, []).append(f"{where} {side}")
                continue
            path = _image(images, row[columns[EYE_COLUMNS[side][0]]], f"{where} {side}", missing)
            if path is not None:
                relative = os.path.relpath(os.path.abspath(path), out_dir)
                rows.append([relative, *(int(letter in eye.letters) for letter in LETTERS)])
                result.patient_ids.append(patient)
        if letters is not None and not any(eye.dropped for eye in eyes):
            if _patient_letters(eyes) != {k for k, c in letters.items() if int_label(row[c]) == 1}:
                result.letter_mismatches.append(patient)
    _raise_unknown(sheet, unknown, unknown_as_other)
    _raise_missing(images, missing)
    if unknown_as_other:
        result.mapped_to_other = Counter(word for word, _ in set(unknown))
    if not rows:
        raise BadData(f"{sheet}: no usable eye (every one dropped)")
    names = [LABEL_NAMES[letter] if labels == "full" else letter for letter in LETTERS]
    result.table = pd.DataFrame(rows, columns=["path", *names])
    return result


def split_by_patient(converted: OdirConversion, fraction: float, seed: int = 0
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of `converted.table`: about `fraction` of the eyes
    held out, both eyes of a patient on the same side (they are alike: one in each would
    flatter validation), stratified by the eyes' label combinations as far as patients allow
    (palm.data.splits.grouped_holdout_split).

    Raises:
        BadConfig: `fraction` outside (0, 0.5] or too few patients (names val_fraction).
    """
    table = converted.table
    combinations = table.iloc[:, 1:].astype(str).agg("".join, axis=1)
    kept, held = grouped_holdout_split(combinations, converted.patient_ids, fraction, seed,
                                       name="val_fraction")
    return table.iloc[kept].reset_index(drop=True), table.iloc[held].reset_index(drop=True)


def _image(images: Path, name: object, where: str, missing: list[str]) -> Path | None:
    """The image file `name` in `images`, or None with the problem added to `missing`."""
    name = "" if pd.isna(name) else str(name).strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        missing.append(f"{where}: image name {name!r} is not a file name")
        return None
    path = images / name
    if not path.is_file():
        missing.append(f"{where}: image {name!r} not found")
        return None
    return path


def _patient_letters(eyes: list[OdirEye]) -> set[str]:
    """The letters a patient with these eyes has: the OR of both, N only when both are N."""
    union = set().union(*(eye.letters for eye in eyes))
    return union - {"N"} or union


def _raise_unknown(sheet: Path, unknown: list[tuple[str, str]], unknown_as_other: bool) -> None:
    """One BadData listing every unknown keyword with the eyes that have it."""
    if not unknown or unknown_as_other:
        return
    by_word: dict[str, list[str]] = {}
    for word, where in unknown:
        wheres = by_word.setdefault(word, [])
        if where.removeprefix(f"{sheet} ") not in wheres:
            wheres.append(where.removeprefix(f"{sheet} "))
    listed = "; ".join(f"{word!r} ({', '.join(wheres)})" for word, wheres in by_word.items())
    eyes = len({where for _, where in unknown})
    raise BadData(f"{sheet}: {len(by_word)} unknown diagnostic keyword(s) in {eyes} eye(s): "
                  f"{listed}. Add them to palm.data.odir.KEYWORDS, or label them O "
                  "with unknown_as_other", param="unknown_as_other")


def _raise_missing(images: Path, missing: list[str], shown: int = 5) -> None:
    """One BadData naming the first `shown` images the sheet names but `images` lacks."""
    if not missing:
        return
    more = f" (and {len(missing) - shown} more)" if len(missing) > shown else ""
    raise BadData(f"{len(missing)} image(s) missing from the images folder {images}: "
                  f"{'; '.join(missing[:shown])}{more}", param="images")
