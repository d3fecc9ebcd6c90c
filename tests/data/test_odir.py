"""palm.data.odir and `palm odir-csv`: an ODIR-like sheet (one row per patient) becomes one
row per eye, labelled from that eye's own keywords; bad sheets are refused naming the row,
eye and value; the CSV is read by MultiLabelCsvImageSet and trains as `--task multilabel`."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from palm import config
from palm.cli.common import cli
from palm.data.generic import MultiLabelCsvImageSet
from palm.data.odir import DROP_NO_DIAGNOSIS, DROP_UNUSABLE, convert_odir_sheet
from palm.data.tasks import run_odir_csv
from palm.errors import BadConfig, BadData, OutputRefused

LETTERS = list("NDGCAHMO")
# ID -> (left keywords, right keywords), as the sheet writes them: "，" (U+FF0C) or ","
PATIENTS = {
    0: ("cataract", "normal fundus"),
    1: ("laser spot，moderate non proliferative retinopathy",
        "moderate non proliferative retinopathy"),
    2: ("normal fundus，lens dust", "pathological myopia"),
    3: ("no fundus image", "glaucoma"),
    4: ("low image quality", "hypertensive retinopathy,diabetic retinopathy"),
    5: ("drusen", "dry age-related macular degeneration，normal fundus"),
}
# Each eye's labels, by hand from the keywords above (None: the eye is left out). "normal
# fundus" beside a finding is not N; "lens dust" is no diagnosis; drusen and laser spot are O.
EYES = {
    "0_left.jpg": "C", "0_right.jpg": "N",
    "1_left.jpg": "DO", "1_right.jpg": "D",
    "2_left.jpg": "N", "2_right.jpg": "M",
    "3_left.jpg": None, "3_right.jpg": "G",
    "4_left.jpg": None, "4_right.jpg": "HD",
    "5_left.jpg": "O", "5_right.jpg": "A",
}


def cli_error(command: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli(command, argv)
    return str(stop.value.code)


def patient_letters(pid: int) -> str:
    """The sheet's letters of a patient: the OR of the kept eyes, N only when both are N."""
    union = set("".join(EYES[f"{pid}_{side}.jpg"] or "" for side in ("left", "right")))
    return "".join(union - {"N"} or union)


def write_sheet(root: Path, suffix: str = ".xlsx", patients: dict | None = None,
                letters: dict | None = None) -> Path:
    """ROOT/sheet.SUFFIX with ODIR's columns and ROOT/images/<id>_<side>.jpg (32 px)."""
    patients = PATIENTS if patients is None else patients
    rows = []
    for pid, (left, right) in patients.items():
        own = (letters or {}).get(pid, patient_letters(pid) if pid in PATIENTS else "")
        rows.append({"ID": pid, "Patient Age": 60 + pid, "Patient Sex": "Female",
                     "Left-Fundus": f"{pid}_left.jpg", "Right-Fundus": f"{pid}_right.jpg",
                     "Left-Diagnostic Keywords": left, "Right-Diagnostic Keywords": right,
                     **{letter: int(letter in own) for letter in LETTERS}})
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for row in rows:
        for column in ("Left-Fundus", "Right-Fundus"):
            cv2.imwrite(str(root / "images" / row[column]),
                        rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    sheet = root / f"sheet{suffix}"
    table = pd.DataFrame(rows)
    table.to_excel(sheet, index=False) if suffix == ".xlsx" else table.to_csv(sheet, index=False)
    return sheet


def expected_rows() -> pd.DataFrame:
    kept = {name: labels for name, labels in EYES.items() if labels is not None}
    return pd.DataFrame([{"name": name, **{letter: int(letter in labels) for letter in LETTERS}}
                         for name, labels in kept.items()])


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_each_eye_gets_its_own_labels_from_an_xlsx_or_csv_sheet(tmp_path, suffix):
    sheet = write_sheet(tmp_path, suffix)
    out = tmp_path / "lists" / "odir.csv"
    assert run_odir_csv(sheet, tmp_path / "images", out) == [out]
    written = pd.read_csv(out)
    assert list(written.columns) == ["path", *LETTERS]
    # paths are relative to the CSV's folder and lead to the images
    assert all((out.parent / p).resolve() == (tmp_path / "images" / Path(p).name).resolve()
               for p in written["path"])
    got = written.assign(name=[Path(p).name for p in written["path"]]).drop(columns="path")
    pd.testing.assert_frame_equal(got[["name", *LETTERS]].reset_index(drop=True), expected_rows())


def test_dropped_eyes_are_counted_and_patient_letters_checked(tmp_path):
    result = convert_odir_sheet(write_sheet(tmp_path), tmp_path / "images", tmp_path / "o.csv")
    sheet = tmp_path / "sheet.xlsx"
    assert result.dropped == {DROP_UNUSABLE: [f"{sheet} row 5 left"],
                              DROP_NO_DIAGNOSIS: [f"{sheet} row 6 left"]}
    assert result.patients == 6 and result.letter_mismatches == []
    # a sheet letter the eyes do not explain is reported with the patient's ID
    wrong = convert_odir_sheet(write_sheet(tmp_path / "w", letters={0: "CG"}),
                               tmp_path / "w" / "images", tmp_path / "o.csv")
    assert wrong.letter_mismatches == ["0"]


def test_unknown_keywords_are_all_listed_with_row_and_eye(tmp_path):
    patients = {**PATIENTS, 2: ("normal fundus，sparkly fundus", "pathological myopia"),
                4: ("low image quality", "purple macula"), 5: ("sparkly fundus", "drusen")}
    sheet = write_sheet(tmp_path, patients=patients)
    with pytest.raises(BadData) as error:
        convert_odir_sheet(sheet, tmp_path / "images", tmp_path / "o.csv")
    message = str(error.value)
    assert message.startswith(f"{sheet}: 2 unknown diagnostic keyword(s) in 3 eye(s)")
    assert "'sparkly fundus' (row 4 left, row 7 left)" in message
    assert "'purple macula' (row 6 right)" in message and "unknown_as_other" in message
    # or they are O, and counted
    result = convert_odir_sheet(sheet, tmp_path / "images", tmp_path / "o.csv",
                                unknown_as_other=True)
    assert result.mapped_to_other == {"sparkly fundus": 2, "purple macula": 1}
    rows = result.table.set_index(result.table["path"].map(lambda p: Path(p).name))
    assert rows.loc["2_left.jpg", LETTERS].tolist() == [0, 0, 0, 0, 0, 0, 0, 1]  # not N
    assert rows.loc["4_right.jpg", "O"] == 1 and rows.loc["5_left.jpg", "O"] == 1


def test_missing_columns_are_all_named(tmp_path):
    sheet = write_sheet(tmp_path, ".csv")
    pd.read_csv(sheet).drop(columns=["ID", "Right-Fundus"]).to_csv(sheet, index=False)
    with pytest.raises(BadData, match=r"sheet.csv: not an ODIR annotation sheet: no column "
                                      r"'ID', 'Right-Fundus' \(found: Patient Age"):
        convert_odir_sheet(sheet, tmp_path / "images", tmp_path / "o.csv")


def test_a_missing_image_is_named_with_its_row_and_eye(tmp_path):
    sheet = write_sheet(tmp_path)
    (tmp_path / "images" / "2_right.jpg").unlink()
    (tmp_path / "images" / "3_left.jpg").unlink()  # a left-out eye needs no image
    with pytest.raises(BadData) as error:
        convert_odir_sheet(sheet, tmp_path / "images", tmp_path / "o.csv")
    assert str(error.value) == (f"1 image(s) missing from the images folder {tmp_path / 'images'}: "
                                f"{sheet} row 4 right: image '2_right.jpg' not found")
    assert error.value.param == "images"
    table = pd.read_excel(sheet)
    table.loc[0, "Left-Fundus"] = "../0_left.jpg"
    table.to_excel(sheet, index=False)
    with pytest.raises(BadData, match=r"row 2 left: image name '../0_left.jpg' is not a file name"):
        convert_odir_sheet(sheet, tmp_path / "images", tmp_path / "o.csv")


def test_repeated_patient_rows_count_once_and_a_clash_names_both_rows(tmp_path):
    sheet = write_sheet(tmp_path, ".csv")
    table = pd.read_csv(sheet)
    pd.concat([table, table.iloc[[1]]]).to_csv(sheet, index=False)  # one row per image
    result = convert_odir_sheet(sheet, tmp_path / "images", tmp_path / "o.csv")
    assert result.repeated_rows == 1 and len(result.table) == len(expected_rows())
    clash = pd.concat([table, table.iloc[[1]].assign(**{"Left-Diagnostic Keywords": "glaucoma"})])
    clash.to_csv(sheet, index=False)
    with pytest.raises(BadData, match=rf"{sheet} row 8: patient 1 is also {sheet} row 3"):
        convert_odir_sheet(sheet, tmp_path / "images", tmp_path / "o.csv")


def _cli(argv: list[str]) -> object:
    with pytest.raises(SystemExit) as stop:
        cli("odir-csv", argv)
    return stop.value.code


def test_the_command_writes_a_list_multilabel_reads_and_refuses_to_overwrite_it(tmp_path, capsys):
    sheet = write_sheet(tmp_path / "odir")
    out = tmp_path / "lists" / "odir.csv"
    argv = ["--annotations", str(sheet), "--images", str(tmp_path / "odir" / "images"),
            "--output", str(out), "--labels", "full"]
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    assert f"{sheet}: 10 eyes of 6 patients" in printed and f"wrote {out}: 10 eyes" in printed
    assert "left out 1 eye(s), not a usable fundus photo" in printed and "row 5 left" in printed
    assert f"--data-root {tmp_path / 'odir' / 'images'}" in printed  # the paths leave lists/
    data = MultiLabelCsvImageSet(out, data_root=tmp_path / "odir" / "images")
    assert data.classes == ["normal", "diabetes", "glaucoma", "cataract", "amd",
                            "hypertension", "myopia", "other"]
    want = expected_rows()
    assert [Path(p).name for p, _ in data.samples] == want["name"].tolist()
    np.testing.assert_array_equal(data.labels, want[LETTERS].to_numpy())
    before = out.read_bytes()
    assert _cli(argv) == (f"error: {out} already exists; pass --exist-ok to replace it or "
                          "choose another name")
    assert out.read_bytes() == before
    assert _cli([*argv, "--labels", "letters", "--exist-ok"]) == 0
    assert pd.read_csv(out).columns[1:].tolist() == LETTERS
    # an unknown keyword is one line naming the flag that labels it O
    write_sheet(tmp_path / "odir", patients={**PATIENTS, 1: ("sparkly fundus", "glaucoma")})
    line = _cli([*argv, "--exist-ok"])
    assert line.startswith("error: ") and "\n" not in line and "--unknown-as-other" in line
    assert _cli([*argv, "--exist-ok", "--unknown-as-other"]) == 0
    assert _cli([*argv, "--val-fraction", "0.2"]) == (
        "error: --val-fraction needs --val-output (the validation list to write)")
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


def test_a_validation_list_holds_out_whole_patients(tmp_path, capsys):
    sheet = write_sheet(tmp_path)
    train, val = tmp_path / "train.csv", tmp_path / "val.csv"
    assert run_odir_csv(sheet, tmp_path / "images", train, val_output=val, val_fraction=0.5,
                        seed=1) == [train, val]
    names = {path: [Path(p).name for p in pd.read_csv(path)["path"]] for path in (train, val)}
    assert sorted(names[train] + names[val]) == sorted(expected_rows()["name"])
    patients = {path: {name.split("_")[0] for name in names[path]} for path in names}
    assert patients[train] and patients[val] and not patients[train] & patients[val]
    assert f"--train-csv {train} --val-csv {val}" in capsys.readouterr().out
    with pytest.raises(OutputRefused, match="val.csv already exists; pass exist_ok"):
        run_odir_csv(sheet, tmp_path / "images", tmp_path / "t2.csv", val_output=val)
    assert not (tmp_path / "t2.csv").exists()
    with pytest.raises(BadConfig, match="val_fraction needs val_output"):
        run_odir_csv(sheet, tmp_path / "images", tmp_path / "t3.csv", val_fraction=0.2)
    with pytest.raises(BadConfig, match="output and val_output must be in one folder"):
        run_odir_csv(sheet, tmp_path / "images", tmp_path / "t4.csv",
                     val_output=tmp_path / "sub" / "v.csv")
    with pytest.raises(BadConfig, match="output and val_output are one file"):
        run_odir_csv(sheet, tmp_path / "images", tmp_path / "t5.csv",
                     val_output=tmp_path / "." / "t5.csv")
    assert not (tmp_path / "t5.csv").exists()
    # a fifth of too few patients per label combination: one line, not scikit-learn's error
    assert cli_error("odir-csv", ["--annotations", str(sheet), "--images",
                                  str(tmp_path / "images"), "--output", str(tmp_path / "t6.csv"),
                                  "--val-output", str(tmp_path / "v6.csv")]).startswith(
        "error: --val-fraction 0.2: these ")
    assert not (tmp_path / "t6.csv").exists()


def test_the_lists_train_as_multilabel(tmp_path):
    from palm.engine.runner import run_training

    sheet = write_sheet(tmp_path / "odir")
    lists = tmp_path / "odir"
    run_odir_csv(sheet, lists / "images", lists / "train.csv", val_output=lists / "val.csv",
                 val_fraction=0.5)
    cfg = {**config.DEFAULTS, **config.model_config("lenet5"),
           "train_csv": str(lists / "train.csv"), "val_csv": str(lists / "val.csv"), "task": "multilabel", "image_size": 32,
           "batch_size": 4, "epochs": 1, "num_workers": 0, "device": "cpu", "cache_dir": None,
           "output": str(tmp_path / "run"), "augment": "none"}
    run = run_training(config.validate_config(cfg), progress=False, log=lambda _: None)
    saved = config.load_config(run / "config.yaml")
    assert saved["task"] == "multilabel" and saved["class_names"] == LETTERS
    assert (run / "best.pdparams").is_file() and os.path.getsize(run / "best.pdparams") > 0
