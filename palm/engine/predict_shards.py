"""Batch prediction split across processes and machines, merged into one CSV.

Under `python -m paddle.distributed.launch --nnodes N --nproc_per_node M tools/predict.py ...`
every process reads its rank and the number of processes from the launcher's environment
(PADDLE_TRAINER_ID, PADDLE_TRAINERS_NUM); no collective communication is needed. Each
rank takes every `world_size`-th image of the sorted list (so every image is predicted
exactly once and the shards are balanced) and writes them with `predict_to_csv` to its own
part, `OUTPUT.part-R-of-W.csv` beside OUTPUT: atomic, locked and resumable like any
predictions CSV. A finished rank then leaves a marker (`PART.done`) holding the hash of
the image list it predicted. Rank 0, after its own part, waits (bounded) for every marker,
merges the parts into OUTPUT in the order of the image list, with the header and the
record (`OUTPUT.json`) a single process writes, and removes the parts. With `--resume`,
each rank continues its part, or starts it from its rows of a finished OUTPUT.

All ranks must see the input folder and OUTPUT's folder at the same paths (one machine, or
a shared file system). A rank deletes its own old marker before it starts, so rank 0 does not
mistake a part left by an earlier run for this run's, and a marker only counts when its
image list is the one rank 0 computes for that rank.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from palm.engine.predict import PredictSummary, check_output, journal_path, record_path
from palm.errors import BadConfig, UserError
from palm.io_utils import atomic_path, output_lock, unescape_formula, write_json_atomic

RANK_ENV, WORLD_SIZE_ENV = "PADDLE_TRAINER_ID", "PADDLE_TRAINERS_NUM"


class ShardsIncomplete(UserError, RuntimeError):
    """Rank 0 gave up waiting for the parts of other ranks."""


@dataclass(frozen=True)
class Shard:
    """This process's place among `world_size` predicting processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def shard_from_env(environ: dict[str, str] | None = None) -> Shard:
    """The rank and world size set by paddle.distributed.launch; a single process otherwise.

    Raises:
        BadConfig: the variables are not integers with 0 <= rank < world size.
    """
    environ = os.environ if environ is None else environ
    raw_rank, raw_world = environ.get(RANK_ENV, "0"), environ.get(WORLD_SIZE_ENV, "1")
    try:
        shard = Shard(int(raw_rank), int(raw_world))
    except ValueError:
        shard = None
    if shard is None or not 0 <= shard.rank < shard.world_size:
        raise BadConfig(f"{RANK_ENV}={raw_rank!r} and {WORLD_SIZE_ENV}={raw_world!r}: expected "
                        "a rank from 0 to the number of processes - 1")
    return shard


def shard_paths(paths: Sequence[str], shard: Shard) -> list[str]:
    """Every `world_size`-th path from `rank`: disjoint shards covering `paths`, sizes within 1."""
    return list(paths[shard.rank::shard.world_size])


def part_path(output: str | Path, shard: Shard) -> Path:
    """Where `shard` writes its rows: OUTPUT.part-R-of-W.csv beside OUTPUT."""
    output = Path(output)
    return output.with_name(f"{output.stem}.part-{shard.rank}-of-{shard.world_size}{output.suffix}")


def seed_part_from_output(output: str | Path, shard: Shard, paths: Sequence[str]) -> bool:
    """Start this rank's part from the rows of a finished OUTPUT, for `--resume`.

    A merged run leaves no parts, so resuming it would predict everything again; instead the
    rank's rows of OUTPUT (those of `paths`, its shard) and OUTPUT's record become its part,
    which `predict_to_csv(resume=True)` then checks and keeps like any earlier output.
    Nothing is done when the part or its journal exists (an interrupted run: they are newer)
    or there is no OUTPUT. Returns whether the part was written.
    """
    output, part = Path(output), part_path(output, shard)
    if part.exists() or journal_path(part).exists() or not output.is_file():
        return False
    mine = set(paths)
    with open(output, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames or [], [row for row in reader
                                                if unescape_formula(row.get("path")) in mine]
    with atomic_path(part) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if record_path(output).is_file():
        shutil.copyfile(record_path(output), record_path(part))
    return True


def _marker_path(part: Path) -> Path:
    return part.with_name(part.name + ".done")


def _paths_digest(paths: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()


def clear_marker(output: str | Path, shard: Shard) -> None:
    """Forget that this rank finished in an earlier run (called before it starts)."""
    _marker_path(part_path(output, shard)).unlink(missing_ok=True)


def mark_done(output: str | Path, shard: Shard, paths: Sequence[str], summary: PredictSummary) -> None:
    """Tell rank 0 that this rank's part holds a row for each of `paths` (its shard)."""
    write_json_atomic(_marker_path(part_path(output, shard)), {
        "paths_sha256": _paths_digest(paths), "images": summary.images,
        "errors": summary.errors, "reused": summary.reused,
    })


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        marker = e
    if not isinstance(marker, dict):
        raise ShardsIncomplete(f"{path}: not a valid marker ({marker}); delete it and rerun "
                               "with resume", param="resume")
    return marker


def _read_part_record(part: Path) -> dict:
    """The record a rank wrote beside its part (columns, checkpoint, settings)."""
    path = record_path(part)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardsIncomplete(f"{part} has no record ({path} is missing); rerun that rank "
                               "with resume", param="resume") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        record = e
    if not isinstance(record, dict) or not isinstance(record.get("columns"), list):
        raise ShardsIncomplete(f"{part}: {path} is not a valid record ({record}); delete the "
                               "part and rerun that rank with resume", param="resume")
    return record


def _read_part_rows(part: Path) -> list[dict[str, str]]:
    """The rows of a rank's part, checked to be a predictions CSV."""
    try:
        with open(part, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise ShardsIncomplete(f"{part}: no 'path' column, not a predictions CSV; "
                                       "delete it and rerun that rank with resume",
                                       param="resume")
            return list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ShardsIncomplete(f"{part}: not a UTF-8 CSV ({e}); delete it and rerun that "
                               "rank with resume", param="resume") from None


def wait_for_parts(output: str | Path, paths: Sequence[str], world_size: int, *,
                   timeout: float, poll: float = 0.5) -> list[dict]:
    """Block until every rank has marked its part done; their markers, by rank.

    Raises:
        ShardsIncomplete: some ranks did not finish within `timeout` seconds (the message
            names them), or a rank predicted another image list than this one's shard of
            `paths` (it saw another folder).
    """
    deadline = time.monotonic() + timeout
    shards = [Shard(rank, world_size) for rank in range(world_size)]
    while True:
        markers = [_read_marker(_marker_path(part_path(output, s))) for s in shards]
        for shard, marker in zip(shards, markers):
            if marker is not None and marker.get("paths_sha256") != _paths_digest(
                    shard_paths(paths, shard)):
                raise ShardsIncomplete(
                    f"{part_path(output, shard)}: rank {shard.rank} predicted another list of "
                    "images than rank 0 assigns it; every rank must see the same input",
                    param="input")
        missing = [s.rank for s, m in zip(shards, markers) if m is None]
        if not missing:
            return markers
        if time.monotonic() >= deadline:
            raise ShardsIncomplete(
                f"waited {timeout:g} s for rank(s) {', '.join(map(str, missing))} of "
                f"{world_size} to finish their part(s) of {output}; finished parts are kept: "
                "rerun with resume (or raise merge_timeout)", param=("resume", "merge_timeout"))
        time.sleep(poll)


def merge_parts(output: str | Path, paths: Sequence[str], world_size: int,
                markers: Sequence[dict]) -> PredictSummary:
    """Write OUTPUT (atomically, locked) from the finished parts, rows in the order of `paths`,
    and its record; then remove the parts.

    Raises:
        ShardsIncomplete: the parts have different columns or records (made by another
            checkpoint or settings).
    """
    output = Path(output)
    parts = [part_path(output, Shard(rank, world_size)) for rank in range(world_size)]
    records = [_read_part_record(p) for p in parts]
    if any(r != records[0] for r in records[1:]):
        raise ShardsIncomplete(f"the parts of {output} were made by different checkpoints or "
                               f"settings (see {', '.join(str(record_path(p)) for p in parts)})")
    rows: dict[str, dict[str, str]] = {}
    for part in parts:
        # a row resumed from a part may also be in another shard after images were added
        for row in _read_part_rows(part):
            rows.setdefault(row["path"], row)
    position = {path: i for i, path in enumerate(paths)}
    # rows an earlier run kept for images no longer listed go last, as they came
    ordered = sorted(rows.values(), key=lambda row: position.get(unescape_formula(row["path"]),
                                                                 len(paths)))
    with output_lock(output):
        check_output(output, paths)
        with atomic_path(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, records[0]["columns"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(ordered)
        write_json_atomic(record_path(output), records[0])
    for part in parts:
        for path in (part, record_path(part), _marker_path(part)):
            path.unlink(missing_ok=True)
    return PredictSummary(len(ordered), sum(1 for row in ordered if row["error"]),
                          sum(m["reused"] for m in markers), output)
