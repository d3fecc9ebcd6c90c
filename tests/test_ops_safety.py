"""Operations safety: output locks, the output guard, workers that die with their parent,
range-checked options, one-line OS errors (disk full), unique Grad-CAM names.

Subprocess tests freeze the first run with SIGSTOP while it holds its lock, so the second
run meets the lock every time, whatever the machine's speed.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import paddle
import pytest

from palm.cli import run_tool
from palm.config import check_options, load_config
from palm.engine.checkpoint import load_checkpoint_model, save_checkpoint
from palm.engine.inference import weights_sha256
from palm.data import list_images
from palm.engine.predict import check_output, predict_to_csv
from palm.errors import BadConfig, OutputRefused
from palm.io_utils import output_lock, write_text_atomic
from palm.models import build_model
from palm.viz.cam import write_cam_overlays
from palm.cli import eval as eval_tool
from palm.cli import predict as predict_tool
from palm.cli import train as train_tool

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _exit(main, args):
    with pytest.raises(SystemExit) as info:
        run_tool(main, args)
    return info.value.code


@pytest.fixture(scope="module")
def many_photos(palm_root, tmp_path_factory) -> Path:
    """240 photos (hard links to the 16 synthetic validation images): long enough a run."""
    folder = tmp_path_factory.mktemp("many")
    val = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))
    for k in range(240):
        os.link(val[k % len(val)], folder / f"p{k:03d}.jpg")
    return folder


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie holds no memory and counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _start(tool: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tools" / tool), *argv], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(tool: str, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *argv], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def _lines(stderr: str) -> list[str]:
    """stderr without paddle's import-time OMP_NUM_THREADS banner (see the README)."""
    return [line for line in stderr.strip().splitlines()
            if not line.startswith(("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS"))]


def _frozen_while_locked(proc: subprocess.Popen, lock: Path) -> None:
    """Stop `proc` once it holds `lock` (so a second run meets the lock for certain)."""
    _wait_for(lambda: lock.is_file() and f"pid {proc.pid}" in lock.read_text()
              or proc.poll() is not None, 240, f"{lock}")
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGSTOP)


def _second_run_while_first_holds(tool: str, argv: list[str], lock: Path
                                  ) -> tuple[subprocess.Popen, str, str, str]:
    """Run `tool` twice, the second time while the first is frozen holding `lock`; the second
    must fail with one line. Returns (first process, that line, first's stdout and stderr)."""
    first = _start(tool, argv)
    try:
        _frozen_while_locked(first, lock)
        second = _run(tool, argv)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert second.returncode == 1
    lines = _lines(second.stderr)
    assert len(lines) == 1, lines
    return first, lines[0], stdout, stderr


# --- locks -------------------------------------------------------------------------------

def test_lock_refuses_a_second_holder_and_is_removed(tmp_path):
    out = tmp_path / "preds.csv"
    with output_lock(out) as lock:
        assert lock == tmp_path / "preds.csv.lock"
        assert f"pid {os.getpid()} on " in lock.read_text()
        with pytest.raises(OutputRefused, match=rf"preds.csv is in use by pid {os.getpid()} on "):
            with output_lock(out):
                pass
    assert not (tmp_path / "preds.csv.lock").exists()
    with output_lock(tmp_path / "run", folder=True) as lock:
        assert lock == tmp_path / "run" / ".lock"
    assert not (tmp_path / "run").exists()  # created for the lock, left empty: removed
    with output_lock(tmp_path / "run", folder=True):
        (tmp_path / "run" / "metrics.csv").write_text("epoch\n")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.csv"]
    with output_lock(out):  # free again
        pass


@pytest.mark.slow
def test_lock_of_a_killed_process_is_not_stale(tmp_path):
    out = tmp_path / "preds.csv"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom palm.io_utils import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(600)"],
        env=ENV, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputRefused, match=f"pid {holder.pid}"):
        with output_lock(out):
            pass
    holder.kill()  # SIGKILL: no cleanup runs, the lock file stays
    holder.wait()
    assert (tmp_path / "preds.csv.lock").exists()
    with output_lock(out):  # the OS released the lock with the process
        pass


@pytest.mark.slow
def test_two_predict_runs_on_one_output(lenet_checkpoint, many_photos, tmp_path):
    out = tmp_path / "preds.csv"
    argv = ["--checkpoint", str(lenet_checkpoint), "--input", str(many_photos), "--output", str(out),
            "--engine", "dygraph", "--batch-size", "4", "--num-workers", "0", "--no-progress"]
    first, refusal, stdout, stderr = _second_run_while_first_holds(
        "predict.py", argv, tmp_path / "preds.csv.lock")
    assert refusal.startswith(f"error: {out} is in use by pid {first.pid} on ")
    assert "(predict.py --checkpoint" in refusal and refusal.endswith("choose another --output")
    assert first.returncode == 0, stderr
    assert "240 images, 0 errors" in stdout
    # the CSV is exactly the first run's: every photo once, as a lone run predicts it
    model, meta = load_checkpoint_model(lenet_checkpoint)
    expected = predict_to_csv(model, meta, list_images(many_photos), tmp_path / "alone.csv",
                              batch_size=4, num_workers=0, progress=False,
                              checkpoint_sha256=weights_sha256(lenet_checkpoint)).output
    got, want = pd.read_csv(out), pd.read_csv(expected)
    assert len(got) == 240 and got["path"].is_unique
    assert got["path"].tolist() == want["path"].tolist()
    np.testing.assert_allclose(got["probability"], want["probability"], atol=2e-6)
    assert not (tmp_path / "preds.csv.lock").exists()


@pytest.mark.slow
def test_two_trainings_into_one_output(palm_root, tmp_path):
    run = tmp_path / "run"
    argv = ["--model", "lenet", "--data-root", str(palm_root), "--image-size", "32",
            "--batch-size", "8", "--epochs", "1", "--num-workers", "0", "--output", str(run),
            "--device", "cpu", "--no-progress", "--cache-dir", "none"]
    first, refusal, _, stderr = _second_run_while_first_holds("train.py", argv, run / ".lock")
    assert refusal.startswith(f"error: {run} is in use by pid {first.pid} on ")
    assert first.returncode == 0, stderr
    assert json.loads((run / "best.json").read_text())["epoch"] == 1
    assert not (run / ".lock").exists()


# --- output guard --------------------------------------------------------------------------

def test_output_guard_protects_checkpoints_inputs_and_foreign_files(lenet_checkpoint, palm_root, tmp_path):
    photos = sorted(map(str, (palm_root / "PALM-Validation400").glob("*.jpg")))
    weights = lenet_checkpoint.read_bytes()
    odd_input = tmp_path / "scan.dat"  # a single input file may have any extension
    odd_input.write_bytes(b"x")
    foreign = tmp_path / "notes.csv"
    foreign.write_text("name,score\na,1\n")
    cases = {
        str(lenet_checkpoint): "has a .pdparams extension",
        str(lenet_checkpoint.with_suffix(".json")): "has a .json extension",
        photos[0]: "has a .jpg extension",
        str(tmp_path / "new.png"): "has a .png extension",  # not even a new image file
        str(tmp_path): "is a folder",
        str(foreign): "exists and is not a predictions CSV written by palm",
    }
    for output, why in cases.items():
        with pytest.raises(OutputRefused, match=why):
            check_output(output, photos)
    with pytest.raises(OutputRefused, match="is one of the input images"):
        check_output(odd_input, [str(odd_input)])
    # through the tool: one line, before any model is loaded, nothing touched
    args = predict_tool.get_args_parser().parse_args(
        ["--checkpoint", str(lenet_checkpoint), "--input", photos[0], "--output", str(lenet_checkpoint)])
    assert _exit(predict_tool.main, args) == (
        f"error: --output {lenet_checkpoint} has a .pdparams extension (a checkpoint, config or image, "
        "not a CSV); predictions go to a new or earlier predictions .csv file")
    args.output = photos[0]
    assert _exit(predict_tool.main, args).startswith(f"error: --output {photos[0]} has a .jpg")
    assert lenet_checkpoint.read_bytes() == weights
    assert foreign.read_text() == "name,score\na,1\n"
    # a CSV palm wrote may be written again (and resumed)
    model, meta = load_checkpoint_model(lenet_checkpoint)
    out = tmp_path / "p.csv"
    for _ in range(2):
        predict_to_csv(model, meta, photos[:2], out, num_workers=0, progress=False,
                       checkpoint_sha256=weights_sha256(lenet_checkpoint))
    assert len(pd.read_csv(out)) == 2


def test_folder_outputs_refuse_a_file(tmp_path, lenet_checkpoint):
    plain = tmp_path / "plain.txt"
    plain.write_text("keep me")
    with pytest.raises(OutputRefused, match="plain.txt is a file, not a folder"):
        with output_lock(plain, folder=True):
            pass
    args = eval_tool.get_args_parser().parse_args(
        ["--checkpoint", str(lenet_checkpoint), "--val-dir", str(tmp_path), "--output", str(plain)])
    assert _exit(eval_tool.main, args) == (
        f"error: {plain} is a file, not a folder; choose another --output")
    assert plain.read_text() == "keep me"
    args.output = str(tmp_path / "eval")
    with output_lock(tmp_path / "eval", folder=True):  # an evaluation is writing there
        assert _exit(eval_tool.main, args).startswith(
            f"error: {tmp_path / 'eval'} is in use by pid {os.getpid()} on ")


def test_read_only_output_is_one_line(tmp_path, palm_root):
    """A real read-only file system (root mounts a read-only tmpfs; skipped elsewhere)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                            str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code = _exit(train_tool.parse_and_run, ["--model", "lenet", "--data-root", str(palm_root),
                                                "--output", str(ro / "run")])
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
    assert code == f"error: {ro / 'run'}: read-only file system; choose a writable location"


# --- workers die with their parent ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("tool", ["predict", "train"])
def test_no_worker_survives_a_killed_run(tool, lenet_checkpoint, many_photos, palm_root, tmp_path):
    if tool == "predict":
        proc = _start("predict.py", ["--checkpoint", str(lenet_checkpoint), "--input", str(many_photos),
                                     "--output", str(tmp_path / "p.csv"), "--engine", "dygraph",
                                     "--batch-size", "1", "--num-workers", "2", "--no-progress"])
    else:
        proc = _start("train.py", ["--model", "lenet", "--data-root", str(palm_root),
                                   "--image-size", "32", "--batch-size", "2", "--epochs", "200",
                                   "--num-workers", "2", "--output", str(tmp_path / "run"),
                                   "--device", "cpu", "--no-progress", "--cache-dir", "none"])
    workers: list[int] = []
    try:
        _wait_for(lambda: len(_children(proc.pid)) >= 2 or proc.poll() is not None, 240,
                  "two loader workers")
        workers = _children(proc.pid)
        assert proc.poll() is None and len(workers) >= 2, proc.communicate()
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        _wait_for(lambda: not any(map(_alive, workers)), 10, f"workers {workers} to exit")
        print(f"{tool}: {len(workers)} workers gone {time.monotonic() - killed:.2f} s after kill -9")
    finally:  # never leave a process behind, whatever failed
        for pid in {proc.pid, *workers, *_children(proc.pid)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_ORPHAN_SCRIPT = """
import multiprocessing, sys, time
from palm import runtime
if sys.argv[1] == "poll":  # as on a system without prctl
    runtime._set_parent_death_signal = lambda sig: False
def child():
    runtime.worker_init(0)
    print("ready", flush=True)
    time.sleep(600)
if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    p = multiprocessing.Process(target=child)
    p.start()
    print(p.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how, within", [("prctl", 2.0), ("poll", 2.0 + 2 * 1.0)])
def test_worker_init_child_exits_when_its_parent_is_killed(how, within, tmp_path):
    """The mechanism alone (no Paddle): parent-death signal, and the polling fallback."""
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), how], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline().strip() == "ready"  # worker_init has run
        assert _alive(child)
        parent.kill()
        parent.wait()
        _wait_for(lambda: not _alive(child), within, f"the {how} child to exit")
    finally:
        for pid in (parent.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- options and config --------------------------------------------------------------------

def test_yaml_exponent_numbers_are_numbers(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: lenet\nlr: 1e-3\nweight_decay: 5E-4\nepochs: 3\n")
    assert load_config(cfg) == {"model": "lenet", "lr": 0.001, "weight_decay": 0.0005, "epochs": 3}
    args = train_tool.parse_args(["--config", str(cfg)])
    assert (args.lr, args.weight_decay) == (0.001, 0.0005)


@pytest.mark.parametrize("argv, line", [
    (["--epochs", "0"], "error: --epochs must be >= 1, got 0"),
    (["--epochs", "-3"], "error: --epochs must be >= 1, got -3"),
    (["--lr", "0"], "error: --lr must be > 0, got 0.0"),
    (["--lr", "nan"], "error: --lr must be a finite number > 0, got nan"),
    (["--pos-weight", "-1"], "error: --pos-weight must be > 0, got -1.0"),
    (["--weight-decay", "-0.1"], "error: --weight-decay must be >= 0, got -0.1"),
    (["--warmup-epochs", "-1"], "error: --warmup-epochs must be >= 0, got -1.0"),
    (["--batch-size", "0"], "error: --batch-size must be >= 1, got 0"),
    (["--image-size", "60000"], "error: --image-size must be in [8, 4096], got 60000"),
    (["--num-workers", "-1"], "error: --num-workers must be >= 0, got -1"),
])
def test_train_options_out_of_range_are_one_line(argv, line):
    assert _exit(train_tool.parse_and_run, ["--model", "lenet", *argv]) == line


def test_config_values_out_of_range_name_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("gamma: 0\n")
    assert _exit(train_tool.parse_and_run, ["--config", str(cfg)]) == (
        f"error: {cfg}: gamma must be in (0, 1], got 0")
    with pytest.raises(BadConfig, match="momentum must be in \\[0, 1\\), got 1.5"):
        check_options({"momentum": 1.5}, "run.yaml")


@pytest.mark.parametrize("tool, argv, line", [
    (predict_tool, ["--threshold", "2"], "error: --threshold must be in [0, 1], got 2.0"),
    (predict_tool, ["--threshold", "nan"], "error: --threshold must be a finite number in [0, 1], got nan"),
    (predict_tool, ["--batch-size", "0"], "error: --batch-size must be >= 1, got 0"),
    (eval_tool, ["--threshold", "-1"], "error: --threshold must be in [0, 1], got -1.0"),
    (eval_tool, ["--num-workers", "-2"], "error: --num-workers must be >= 0, got -2"),
])
def test_eval_predict_options_out_of_range_are_one_line(tool, argv, line, lenet_checkpoint, tmp_path):
    base = ["--checkpoint", str(lenet_checkpoint), "--output", str(tmp_path / "out.csv")]
    base += ["--input", str(tmp_path)] if tool is predict_tool else ["--val-dir", str(tmp_path)]
    assert _exit(tool.main, tool.get_args_parser().parse_args(base + argv)) == line
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.slow
def test_epochs_0_from_the_shell_is_one_line_and_exit_1():
    proc = _run("train.py", ["--model", "lenet", "--epochs", "0"], timeout=120)
    assert proc.returncode == 1
    assert _lines(proc.stderr) == ["error: --epochs must be >= 1, got 0"]


# --- ordinary failures are one line ----------------------------------------------------------

@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/out/x.csv"),
     "error: /out/x.csv: no space left on the device; free some space or write elsewhere"),
    (PermissionError(errno.EACCES, "Permission denied", "/out"),
     "error: /out: permission denied; check the permissions or choose another location"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"),
     "error: /mnt/ro/run: read-only file system; choose a writable location"),
    (FileNotFoundError("data/x.jpg: file not found"), "error: data/x.jpg: file not found"),
])
def test_os_errors_are_one_line(exc, line):
    def main(_):
        raise exc

    assert _exit(main, None) == line


def test_not_a_folder_is_one_line_and_bugs_keep_tracebacks(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    code = _exit(lambda _: write_text_atomic(tmp_path / "file" / "sub" / "x.json", "{}"), None)
    assert code.startswith(f"error: {tmp_path / 'file' / 'sub'}: ") and "\n" not in code

    def bug(_):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):
        run_tool(bug, None)
    monkeypatch.setenv("PALM_DEBUG", "1")
    with pytest.raises(BadConfig):  # PALM_DEBUG=1: the traceback of a user error too
        run_tool(lambda _: check_options({"epochs": 0}), None)


def _tiny_model(seed: int):
    paddle.seed(seed)
    return build_model("lenet", 1, image_size=32)


META = {"model": "lenet", "num_classes": 1, "image_size": 32, "model_kwargs": {"image_size": 32}}


def test_disk_full_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A write that fails half way with ENOSPC (patched paddle.save)."""
    ckpt = tmp_path / "run" / "last.pdparams"
    save_checkpoint(ckpt, _tiny_model(0), META)
    before = ckpt.read_bytes()
    real_save = paddle.save

    def disk_full(obj, path, *a, **kw):
        real_save(obj, path, *a, **kw)
        with open(path, "r+b") as f:
            f.truncate(100)  # half written, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(paddle, "save", disk_full)
    code = _exit(lambda _: save_checkpoint(ckpt, _tiny_model(1), META), None)
    assert code == f"error: {ckpt}: no space left on the device; free some space or write elsewhere"
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.json", "last.pdparams"]


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only); skipped where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                                            str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_training_on_a_real_full_device(palm_root, tmpfs):
    run = tmpfs / "run"
    argv = ["--model", "lenet", "--data-root", str(palm_root), "--image-size", "32",
            "--batch-size", "8", "--num-workers", "0", "--output", str(run), "--device", "cpu",
            "--no-progress", "--cache-dir", "none"]
    first = _run("train.py", [*argv, "--epochs", "1"])
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".pdparams", ".json")}
    # leave ~40 KB: enough for metrics.csv, not for a checkpoint
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    (tmpfs / "filler").write_bytes(b"\0" * (free - 40_000))
    second = _run("train.py", [*argv, "--epochs", "2", "--resume"])
    assert second.returncode == 1
    lines = _lines(second.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {run}/"), second.stderr
    assert lines[0].endswith(": no space left on the device; free some space or write elsewhere")
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".pdparams", ".json")}
    assert after == before  # epoch 1's checkpoints, intact
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((run / "last.json").read_text())["epoch"] == 1


# --- Grad-CAM names ------------------------------------------------------------------------

def test_cam_overlays_of_same_stem_get_two_files(lenet_checkpoint, palm_root, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    src = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))[0]
    shutil.copy(src, photos / "eye.jpg")
    import cv2

    cv2.imwrite(str(photos / "eye.png"), cv2.imread(str(src)))
    model, meta = load_checkpoint_model(lenet_checkpoint)
    written, errors = write_cam_overlays(model, meta, list_images(photos), tmp_path / "cams",
                                         root=photos)
    assert (written, errors) == (2, [])
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["eye.jpg_cam.png",
                                                                    "eye.png_cam.png"]
