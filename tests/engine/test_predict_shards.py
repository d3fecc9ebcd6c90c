"""tools/predict.py split across ranks: each image once, parts merged into the single-process CSV.

The ranks are simulated in this process by setting the launcher's variables (rank 1 first,
so rank 0 finds its part and merges); the slow test runs two real CPU processes under
`python -m paddle.distributed.launch`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from palm.data import list_images
from palm.engine.predict import PredictSummary, journal_path, record_path
from palm.engine.predict_shards import (RANK_ENV, WORLD_SIZE_ENV, Shard, ShardsIncomplete,
                                        mark_done, merge_parts, part_path, shard_from_env,
                                        shard_paths, wait_for_parts)
from palm.errors import BadConfig
from palm.cli import predict as predict_tool
from palm.cli import train as train_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(palm_root, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("lenet5") / "run"
    run = train_tool.main(train_tool.parse_args([
        "--model", "lenet5", "--data-root", str(palm_root), "--image-size", "32",
        "--batch-size", "8", "--epochs", "1", "--num-workers", "0", "--output", str(out),
        "--device", "cpu", "--no-progress",
    ]))
    return str(run / "best.pdparams")


@pytest.fixture(scope="module")
def photos(palm_root, tmp_path_factory) -> Path:
    """11 training photos (an odd count: the shards differ in size) and one unreadable file."""
    folder = tmp_path_factory.mktemp("photos")
    train = sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))
    for src in train[:11]:
        shutil.copy(src, folder / src.name)
    (folder / "broken.jpg").write_text("not a photo\n")
    return folder


def _argv(checkpoint: str, photos: Path, output: Path, *extra: str) -> list[str]:
    return ["--checkpoint", checkpoint, "--input", str(photos), "--output", str(output),
            "--engine", "dygraph", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
            "--no-progress", *extra]


def _run(argv: list[str], monkeypatch, shard: Shard | None = None):
    with monkeypatch.context() as mp:
        if shard is not None:
            mp.setenv(RANK_ENV, str(shard.rank))
            mp.setenv(WORLD_SIZE_ENV, str(shard.world_size))
        return predict_tool.main(predict_tool.get_args_parser().parse_args(argv))


@pytest.fixture(scope="module")
def single_csv(checkpoint, photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "preds.csv"
    with pytest.MonkeyPatch.context() as mp:
        _run(_argv(checkpoint, photos, out), mp)
    return out


def test_shards_cover_every_path_once_and_balanced():
    paths = [f"img{i:02d}.jpg" for i in range(11)]
    shards = [shard_paths(paths, Shard(rank, 4)) for rank in range(4)]
    assert sorted(p for shard in shards for p in shard) == paths
    assert {len(shard) for shard in shards} == {2, 3}


def test_shard_from_env():
    assert shard_from_env({}) == Shard(0, 1)
    assert shard_from_env({RANK_ENV: "3", WORLD_SIZE_ENV: "4"}) == Shard(3, 4)
    for rank, world in [("4", "4"), ("-1", "2"), ("x", "2"), ("0", "0")]:
        with pytest.raises(BadConfig, match=RANK_ENV):
            shard_from_env({RANK_ENV: rank, WORLD_SIZE_ENV: world})


def test_two_ranks_give_the_single_process_csv_and_resume_it(checkpoint, photos, single_csv, tmp_path,
                                               monkeypatch, capsys):
    out = tmp_path / "preds.csv"
    part1 = _run(_argv(checkpoint, photos, out), monkeypatch, Shard(1, 2))
    assert part1.images == 6 and part1.output == part_path(out, Shard(1, 2))
    assert not out.exists()  # only rank 0 merges
    merged = _run(_argv(checkpoint, photos, out), monkeypatch, Shard(0, 2))
    assert (merged.images, merged.errors) == (12, 1)
    assert out.read_bytes() == single_csv.read_bytes()
    assert json.loads(record_path(out).read_text()) == json.loads(
        record_path(single_csv).read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv", "preds.csv.json"]
    assert "merged 2 parts: 12 images, 1 errors" in capsys.readouterr().out
    # resuming the finished run reuses every readable row of OUTPUT (the parts are gone)
    _run([*_argv(checkpoint, photos, out), "--resume"], monkeypatch, Shard(1, 2))
    again = _run([*_argv(checkpoint, photos, out), "--resume"], monkeypatch, Shard(0, 2))
    assert (again.images, again.errors, again.reused) == (12, 1, 11)
    assert out.read_bytes() == single_csv.read_bytes()


def test_missing_rank_times_out_and_resume_finishes(checkpoint, photos, single_csv, tmp_path,
                                                    monkeypatch):
    out = tmp_path / "preds.csv"
    rank0 = _argv(checkpoint, photos, out, "--merge-timeout", "0.2")
    with pytest.raises(ShardsIncomplete, match=r"rank\(s\) 1 of 2 .* rerun with resume"):
        _run(rank0, monkeypatch, Shard(0, 2))
    assert part_path(out, Shard(0, 2)).is_file() and not out.exists()  # rank 0's part kept
    _run(_argv(checkpoint, photos, out), monkeypatch, Shard(1, 2))
    merged = _run([*rank0, "--resume"], monkeypatch, Shard(0, 2))
    rank0_paths = shard_paths(list_images(photos), Shard(0, 2))
    readable = [p for p in rank0_paths if not p.endswith("broken.jpg")]  # that one is retried
    assert merged.reused == len(readable) > 0
    assert out.read_bytes() == single_csv.read_bytes()


def test_a_stale_part_of_another_image_list_is_refused(tmp_path):
    out = tmp_path / "preds.csv"
    paths = ["a.jpg", "b.jpg", "c.jpg"]
    summary = PredictSummary(1, 0, 0, part_path(out, Shard(1, 2)))
    mark_done(out, Shard(1, 2), ["x.jpg"], summary)
    with pytest.raises(ShardsIncomplete, match="rank 1 predicted another list of images"):
        wait_for_parts(out, paths, 2, timeout=0.1, poll=0.05)


COLUMNS = ["path", "probability", "prediction", "class_name", "error"]


def _write_parts(out: Path, paths: list[str], world_size: int) -> list[Path]:
    """Finished parts as the ranks leave them (rows, record, marker), without a model."""
    parts = []
    for rank in range(world_size):
        shard = Shard(rank, world_size)
        mine = shard_paths(paths, shard)
        part = part_path(out, shard)
        lines = [",".join(COLUMNS)] + [f"{p},0.25,0,non-PM," for p in mine]
        part.write_text("\n".join(lines) + "\n", encoding="utf-8")
        record_path(part).write_text(json.dumps({"columns": COLUMNS, "checkpoint": "x"}))
        mark_done(out, shard, mine, PredictSummary(len(mine), 0, 0, part))
        parts.append(part)
    return parts


@pytest.mark.parametrize("damage, words", [
    (lambda part: part.write_text("foo,bar\n1,2\n"), "no 'path' column"),
    (lambda part: part.write_bytes(b"\xff\xfe\x00garbage"), "not a UTF-8 CSV"),
    (lambda part: record_path(part).write_text("{bad"), "not a valid record"),
    (lambda part: record_path(part).write_text("[1, 2]"), "not a valid record"),
    (lambda part: record_path(part).unlink(), "no record"),
    (lambda part: part.with_name(part.name + ".done").write_text("[1, 2]"), "not a valid marker"),
])
def test_a_damaged_part_is_a_clear_error_and_the_parts_are_kept(tmp_path, damage, words):
    out = tmp_path / "preds.csv"
    paths = ["a.jpg", "b.jpg", "c.jpg"]
    parts = _write_parts(out, paths, 2)
    assert merge_parts(out, paths, 2, wait_for_parts(out, paths, 2, timeout=1)).images == 3
    parts = _write_parts(out, paths, 2)
    damage(parts[1])
    with pytest.raises(ShardsIncomplete, match=words) as refused:
        merge_parts(out, paths, 2, wait_for_parts(out, paths, 2, timeout=1))
    assert str(parts[1]) in str(refused.value)
    assert parts[0].is_file() and parts[1].is_file()


def test_a_rank_forgets_its_old_marker_before_it_starts(checkpoint, photos, tmp_path,
                                                        monkeypatch):
    out = tmp_path / "preds.csv"
    _run(_argv(checkpoint, photos, out), monkeypatch, Shard(1, 2))
    marker = part_path(out, Shard(1, 2)).with_name("preds.part-1-of-2.csv.done")
    assert marker.is_file()
    # a rerun that fails after it started leaves no marker that rank 0 could take as this run's
    with pytest.raises(BadConfig):
        _run(_argv(checkpoint, photos, out, "--batch-size", "0"), monkeypatch, Shard(1, 2))
    assert marker.is_file()  # options are checked before anything is touched
    monkeypatch.setattr("palm.engine.tasks.predict_to_csv", _fail)
    with pytest.raises(RuntimeError, match="crashed"):
        _run(_argv(checkpoint, photos, out), monkeypatch, Shard(1, 2))
    assert not marker.exists()


def _fail(*args, **kwargs):
    raise RuntimeError("crashed")


@pytest.mark.slow
def test_paddle_launch_with_two_cpu_ranks(checkpoint, photos, single_csv, tmp_path):
    out = tmp_path / "preds.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(tmp_path / "log"), str(REPO / "tools" / "predict.py"),
         *_argv(checkpoint, photos, out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "log").glob("workerlog.*")))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    assert "merged 2 parts: 12 images, 1 errors" in logs
    assert out.read_bytes() == single_csv.read_bytes()
    assert not journal_path(out).exists()
    assert not list(tmp_path.glob("preds.part-*"))
