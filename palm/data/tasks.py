"""What `palm prepare`, `palm stats`, `palm digits` and `palm odir-csv` do, as functions of
plain parameters (see palm.engine.tasks): the work of palm.data's modules plus the lines the
commands print."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from palm.data.digits import export_digits
from palm.data.odir import OdirConversion, convert_odir_sheet, split_by_patient
from palm.data.prepare import write_fold_lists, write_split_lists, xlsx_to_csv
from palm.data.stats import data_set_stats
from palm.config import check_options
from palm.errors import BadConfig, OutputRefused
from palm.io_utils import write_csv_atomic

log = logging.getLogger(__name__)


def run_prepare(command: str, *, xlsx: str | None = None, data: str | None = None,
                output: str | None = None, seed: int = 0, skip_bad: bool = False,
                val_fraction: float = 0.2, k: int = 5, train_command: str = "palm train"
                ) -> list[Path]:
    """`command` xlsx2csv (of `xlsx`), split or kfold (of `data`) into `output`; print the
    files written and, after a split, the `train_command` line that trains on it."""
    if command == "xlsx2csv":
        written = [xlsx_to_csv(xlsx, output)]
    elif command == "split":
        lists = write_split_lists(data, output, val_fraction, seed, skip_bad)
        written = lists.files
    else:
        written = write_fold_lists(data, output, k, seed, skip_bad).files
    for path in written:
        print(f"wrote {path}")
    if command == "split":
        # PALM photos keep the fundus augmentation; lists default to the label-safe preset
        print(f"train: {train_command} --train-csv {written[0]} --val-csv {written[1]} "
              f"--data-root {lists.data_root}" + (" --augment fundus" if lists.palm_layout else ""))
    return written


def run_stats(source: str | os.PathLike, *, split: str = "train", image_size: int = 224,
              fundus_crop: bool = False, max_images: int | None = None, seed: int = 0,
              output: str | os.PathLike | None = None) -> dict:
    """data_set_stats of `source`, printed (and written to `output` as JSON when given)."""
    check_options({"image_size": image_size})  # the side a model is trained at: 16..4096
    result = data_set_stats(source, split, image_size, fundus_crop, max_images, seed, output)
    print(f"mean (RGB, 0..1): {result['mean']}")
    print(f"std  (RGB, 0..1): {result['std']}  ({result['images']} images)")
    return result


def run_digits(output: str | os.PathLike, *, image_size: int = 32, val_fraction: float = 0.25,
               per_class: int | None = None, seed: int = 0) -> Path:
    """export_digits into `output`, with a line on what was written and how to train on it."""
    if image_size < 8:  # checked here too, to name this function's parameter
        raise BadConfig(f"image_size must be >= 8 (the digits are 8 x 8), got {image_size}",
                        param="image_size")
    out = export_digits(output, image_size, val_fraction, per_class, seed)
    counts = {split: sum(1 for _ in (out / split).rglob("*.png")) for split in ("train", "val")}
    print(f"wrote {counts['train']} training and {counts['val']} validation digits "
          f"({image_size} px) to {out}\n"
          f"train: python tools/train.py --model lenet5 --train-dir {out}/train "
          f"--val-dir {out}/val")
    return out


def run_odir_csv(annotations: str | os.PathLike, images: str | os.PathLike,
                 output: str | os.PathLike, *, val_output: str | os.PathLike | None = None,
                 val_fraction: float | None = None, seed: int = 0,
                 unknown_as_other: bool = False, labels: str = "letters",
                 exist_ok: bool = False, train_command: str = "palm train") -> list[Path]:
    """convert_odir_sheet of `annotations` written to `output` (atomically), or split by
    patient into `output` and `val_output` (`val_fraction` of the eyes, default 0.2); print
    what was kept and dropped and the `train_command` that reads the lists.

    Raises:
        OutputRefused: an output exists and not `exist_ok`.
        BadConfig: val_fraction without val_output, or one it cannot split by.
    """
    if val_fraction is not None and val_output is None:
        raise BadConfig("val_fraction needs val_output (the validation list to write)",
                        param=("val_fraction", "val_output"))
    outputs = [Path(output)] + ([Path(val_output)] if val_output is not None else [])
    _check_list_outputs(outputs, exist_ok)
    converted = convert_odir_sheet(annotations, images, outputs[0],
                                   unknown_as_other=unknown_as_other, labels=labels)
    tables = ([converted.table] if val_output is None else
              split_by_patient(converted, 0.2 if val_fraction is None else val_fraction, seed))
    _report_odir(converted, annotations)
    for path, table in zip(outputs, tables):
        write_csv_atomic(path, table)
        positives = ", ".join(f"{name} {int(table[name].sum())}" for name in table.columns[1:])
        print(f"wrote {path}: {len(table)} eyes; positives {positives}")
    # the CSV's paths may lead out of its folder only into --data-root
    folder, image_dir = Path(os.path.abspath(outputs[0].parent)), Path(os.path.abspath(images))
    data_root = "" if folder in (image_dir, *image_dir.parents) else f" --data-root {images}"
    val = (f"--val-csv {outputs[1]}" if val_output is not None else
           "--val-csv VAL.csv (VAL.csv: another sheet converted so, or use --val-output)")
    print(f"train: {train_command} --task multilabel --train-csv {outputs[0]}{data_root} {val}")
    return outputs


def _check_list_outputs(outputs: list[Path], exist_ok: bool) -> None:
    """Refuse an existing output (unless `exist_ok`) and lists in two folders (their paths
    are relative to their folder: one folder, one --data-root)."""
    for path in outputs:
        if path.exists() and not exist_ok:
            raise OutputRefused(f"{path} already exists; pass exist_ok to replace it or "
                                "choose another name", param="exist_ok")
    if len({os.path.abspath(path) for path in outputs}) < len(outputs):
        raise BadConfig("output and val_output are one file: the validation list would "
                        "replace the training list", param=("output", "val_output"))
    if len({Path(os.path.abspath(path)).parent for path in outputs}) > 1:
        raise BadConfig("output and val_output must be in one folder (their paths are "
                        "relative to it)", param=("output", "val_output"))


def _report_odir(converted: OdirConversion, annotations: str | os.PathLike) -> None:
    """Print the eyes kept and left out; warn of unknown keywords labelled O and of patients
    whose letters differ from their eyes'."""
    print(f"{annotations}: {len(converted.table)} eyes of {converted.patients} patients")
    for reason, eyes in converted.dropped.items():
        shown = ", ".join(eye.removeprefix(f"{Path(annotations)} ") for eye in eyes[:3])
        more = ", ..." if len(eyes) > 3 else ""
        print(f"left out {len(eyes)} eye(s), {reason}: {shown}{more}")
    if converted.repeated_rows:
        print(f"dropped {converted.repeated_rows} row(s) repeating an earlier patient row")
    if converted.mapped_to_other:
        log.warning("labelled O for %d unknown keyword(s) in %d eye(s): %s",
                    len(converted.mapped_to_other), sum(converted.mapped_to_other.values()),
                    ", ".join(map(repr, converted.mapped_to_other)))
    if converted.letter_mismatches:
        ids = converted.letter_mismatches
        log.warning("%d patient(s) whose sheet letters differ from the OR of their eyes' "
                    "labels (IDs %s%s)", len(ids), ", ".join(ids[:10]),
                    ", ..." if len(ids) > 10 else "")
