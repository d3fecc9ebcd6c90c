"""Weights that cannot run code, cannot half-load, and are saved as one unit.

A hostile checkpoint here is a pickle whose unpickling runs `touch MARKER`, at the top of
the file or nested inside an otherwise valid state dict (with its sidecar's hash updated,
as an attacker would). Every entry point must refuse it and the marker must never appear.
Runs use LeNet-5 at 32 px on the session's synthetic PALM set.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pandas as pd
import pytest

from palm.engine import checkpoint as ck
from palm.engine.checkpoint import CheckpointError, load_checkpoint_model, recover_folder
from palm.engine.export import META_NAME, ExportVerificationError
from palm.engine.inference import InferencePredictor, load_predictor
from palm.engine.predict import journal_path, record_path
from palm.models import build_model, load_pretrained
from palm.weights import UnsafeWeightsError, file_sha256, read_weights, trust_checkpoints
from palm.cli import cam as cam_tool
from palm.cli import eval as eval_tool
from palm.cli import export as export_tool
from palm.cli import predict as predict_tool
from palm.cli import report as report_tool
from palm.cli import train as train_tool
import errno
from palm.cli import run_tool
from palm.engine.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[2]
NO_AUGMENT = ("augment: {hflip: false, vflip: false, rotate: 0, brightness: 0, contrast: 0, "
              "random_resized_crop: 1.0}\n")


class Payload:
    """Unpickling this runs `touch MARKER`: what a hostile checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def _common_argv(palm_root: Path) -> list[str]:
    return ["--model", "lenet5", "--data-root", str(palm_root), "--image-size", "32",
            "--batch-size", "8", "--num-workers", "0", "--seed", "0", "--device", "cpu",
            "--no-progress"]


def _train_argv(palm_root: Path, output: Path, *extra: str) -> list[str]:
    return [*_common_argv(palm_root), "--output", str(output), *extra]


def _train(argv: list[str]) -> Path:
    return train_tool.main(train_tool.parse_args(argv))


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    """A 1-epoch LeNet-5 run folder (read-only: copy before changing), built by conftest's
    tiny_run with the options _common_argv gives the tool."""
    return tiny_run("lenet5")


def _raw(path: Path):
    # our own file, so plain pickle is fine here: the raw structure paddle.save wrote
    with open(path, "rb") as f:
        return pickle.load(f)


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def _rehash(params_path: Path) -> None:
    """Record the current files' hashes in the sidecar (an attacker controls both)."""
    side = params_path.with_suffix(".json")
    meta = json.loads(side.read_text())
    for kind in meta["files"]:
        path = params_path.with_suffix(f".{kind}")
        meta["files"][kind] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    side.write_text(json.dumps(meta))


def _poison(path: Path, how: str, marker: Path) -> None:
    """Replace `path` by a payload alone (top) or hidden deep in its real content (nested)."""
    if how == "top":
        obj = Payload(marker)
    else:
        obj = _raw(path)
        target = obj.get("scheduler") if "optimizer" in obj else obj
        target["_note"] = {"inner": [np.zeros(2, np.float32), (Payload(marker),)]}
    _dump(obj, path)
    if path.with_suffix(".json").is_file():
        _rehash(path.with_suffix(".pdparams"))


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _run_tool(tool, *argv: str):
    return tool.main(tool.get_args_parser().parse_args([str(a) for a in argv]))


# Every entry point that reads weights: name -> (file it reads, call(run copy, palm_root, tmp))
ENTRY_POINTS = {
    "eval": ("best.pdparams", lambda d, root, tmp: _run_tool(
        eval_tool, "--checkpoint", d / "best.pdparams", "--data-root", root,
        "--output", tmp / "ev", "--engine", "dygraph")),
    "predict": ("best.pdparams", lambda d, root, tmp: _run_tool(
        predict_tool, "--checkpoint", d / "best.pdparams", "--input", root / "PALM-Validation400",
        "--output", tmp / "p.csv", "--num-workers", "0", "--no-progress")),
    "cam": ("best.pdparams", lambda d, root, tmp: _run_tool(
        cam_tool, "--checkpoint", d / "best.pdparams", "--input", root / "PALM-Validation400",
        "--output", tmp / "cams")),
    "export": ("best.pdparams", lambda d, root, tmp: _run_tool(
        export_tool, "--checkpoint", d / "best.pdparams", "--output", tmp / "exp")),
    "report": ("best.pdparams", lambda d, root, tmp: _run_tool(
        report_tool, "--run", d, "--output", tmp / "r.html")),
    "train --pretrained": ("best.pdparams", lambda d, root, tmp: _train(_train_argv(
        root, tmp / "new", "--epochs", "1", "--pretrained", str(d / "best.pdparams")))),
    "train --resume (pdparams)": ("last.pdparams", lambda d, root, tmp: _train(_train_argv(
        root, d, "--epochs", "2", "--resume"))),
    "train --resume (pdopt)": ("last.pdopt", lambda d, root, tmp: _train(_train_argv(
        root, d, "--epochs", "2", "--resume"))),
}


@pytest.mark.parametrize("how", ["top", "nested"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_hostile_pickle_refused_by_every_entry_point(entry, how, run, palm_root, tmp_path):
    name, call = ENTRY_POINTS[entry]
    folder = _copy_run(run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    _poison(folder / name, how, marker)
    with pytest.raises(UnsafeWeightsError) as info:
        call(folder, palm_root, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"refusing {folder / name}: it contains posix.system")
    assert not marker.exists()


@pytest.mark.slow
def test_hostile_pickle_via_the_command_line(run, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    marker = tmp_path / "PWNED"
    _poison(folder / "best.pdparams", "nested", marker)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "cam.py"), "--checkpoint",
                           str(folder / "best.pdparams"), "--input", str(tmp_path), "--output",
                           str(tmp_path / "cams")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: refusing .*best\.pdparams: it contains posix\.system, which a "
                        r"weights file never needs .*--trust-checkpoint.*", last), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_trust_checkpoint_loads_what_the_safe_reader_refuses(tmp_path, capsys):
    import datetime as dt

    path = tmp_path / "old.pdparams"
    paddle.seed(0)
    state = build_model("lenet5", 1).state_dict()
    paddle.save({**state, "saved_on": dt.date(2020, 1, 1)}, str(path))
    with pytest.raises(UnsafeWeightsError, match="it contains datetime.date"):
        load_pretrained(build_model("lenet5", 1), path)
    with trust_checkpoints(True):
        report = load_pretrained(build_model("lenet5", 1), path)
    assert report["unexpected"] == ["saved_on"] and len(report["loaded"]) == len(state)
    assert "a malicious file can run any command" in capsys.readouterr().err
    with pytest.raises(UnsafeWeightsError):  # trust ends with the block
        read_weights(path)


@pytest.mark.parametrize("tool", [eval_tool, predict_tool, cam_tool, export_tool, report_tool,
                                  train_tool])
def test_tools_offer_trust_checkpoint_and_say_what_it_risks(tool):
    text = " ".join(tool.get_args_parser().format_help().split())
    assert "--trust-checkpoint" in text and "runs any command as you" in text


def test_eval_disguised_as_dense_tensor_is_refused(tmp_path):
    class EvalPayload:
        def __reduce__(self):
            return eval, ("__import__('os').getcwd()", {})

    path = tmp_path / "x.pdparams"
    _dump({"w": EvalPayload()}, path)
    with pytest.raises(UnsafeWeightsError, match=r"x.pdparams: it calls eval\(\"__import__"):
        read_weights(path)
    # the form paddle.save really writes for a DenseTensor still loads
    class DenseTensorLike:
        def __reduce__(self):
            return eval, ("data", {"data": np.arange(3, dtype=np.float32)})

    _dump({"w": DenseTensorLike()}, path)
    np.testing.assert_array_equal(read_weights(path)["w"].numpy(), [0, 1, 2])


def test_real_files_load_as_with_paddle_load(run, tmp_path):
    """Our checkpoints (weights and optimizer state), a paddle.vision state dict and a
    Momentum state with LinearWarmup + GradScaler read the same as with paddle.load."""
    model = paddle.vision.models.resnet18(num_classes=10)
    scheduler = paddle.optimizer.lr.LinearWarmup(paddle.optimizer.lr.CosineAnnealingDecay(0.1, 10),
                                                 2, 0.0, 0.1)
    opt = paddle.optimizer.Momentum(scheduler, parameters=model.parameters())
    model(paddle.rand([2, 3, 32, 32])).mean().backward()
    opt.step()
    paddle.save(model.state_dict(), str(tmp_path / "vision.pdparams"))
    paddle.save({"optimizer": opt.state_dict(), "scaler": paddle.amp.GradScaler().state_dict()},
                str(tmp_path / "vision.pdopt"))
    files = [run / "best.pdparams", run / "last.pdopt", tmp_path / "vision.pdparams",
             tmp_path / "vision.pdopt"]
    for path in files:
        _assert_same(read_weights(path), paddle.load(str(path)), str(path))
    report = load_pretrained(build_model("resnet18", 1), tmp_path / "vision.pdparams")
    assert report["skipped"] == ["fc.weight", "fc.bias"]


def test_checkpoint_saved_before_hashes_were_recorded_still_loads(run, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    meta = json.loads((folder / "best.json").read_text())
    del meta["files"]
    (folder / "best.json").write_text(json.dumps(meta))
    model, loaded = load_checkpoint_model(folder / "best.pdparams")
    assert "files" not in loaded and model(paddle.rand([1, 3, 32, 32])).shape == [1, 1]


@pytest.mark.parametrize("fixture", ["tiny_vit.pth", "tiny_vit.safetensors"])
def test_a_pytorch_file_in_a_checkpoints_place_is_named_as_such(fixture, run, tmp_path):
    """Refused either way; the Paddle reader called a torch zip 'unsafe' (its first byte is a
    pickle opcode that loads an external object), as if it were an attack."""
    folder = _copy_run(run, tmp_path / "run")
    shutil.copyfile(Path(__file__).parents[1] / "fixtures" / "pytorch" / fixture,
                    folder / "best.pdparams")
    meta = json.loads((folder / "best.json").read_text())
    del meta["files"]  # as a sidecar from before hashes were recorded: nothing to mismatch
    (folder / "best.json").write_text(json.dumps(meta))
    kind = "torch" if fixture.endswith(".pth") else "safetensors"
    with pytest.raises(CheckpointError, match=f"a {kind} file, not the Paddle weights"):
        load_checkpoint_model(folder / "best.pdparams")


def _assert_same(a, b, where: str) -> None:
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), where
        for key in b:
            _assert_same(a[key], b[key], f"{where}[{key}]")
    elif isinstance(b, paddle.Tensor):
        assert isinstance(a, paddle.Tensor) and a.name == b.name, where
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=where)
    else:
        assert a == b, where


def _state(run: Path) -> dict:
    return {k: v.numpy() for k, v in read_weights(run / "best.pdparams").items()}


def _resave(folder: Path, state: dict) -> Path:
    """best.pdparams replaced by `state`, its sidecar hash updated (a consistent checkpoint)."""
    paddle.save(state, str(folder / "best.pdparams"))
    _rehash(folder / "best.pdparams")
    return folder / "best.pdparams"


@pytest.mark.parametrize("change, expected", [
    (lambda s: {}, r"10 missing: features\.0\.weight, features\.0\.bias, features\.3\.weight and 7 more"),
    (lambda s: dict(list(s.items())[:5]), r"5 missing: "),
    (lambda s: {**s, "head.extra": np.zeros(3, np.float32)}, r"1 unexpected: head\.extra$"),
    (lambda s: {**s, "features.0.weight": np.zeros([3, 3], np.float32)},
     r"1 wrong shape: features\.0\.weight \[3, 3\] \(needs \[6, 3, 5, 5\]\)"),
])
def test_half_loading_is_refused_with_the_names(change, expected, run, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    path = _resave(folder, change(_state(run)))
    with pytest.raises(CheckpointError, match=rf"best.pdparams does not fit LeNet5 \(10 tensors\): "
                                              rf".*{expected}"):
        load_checkpoint_model(path)


def test_weights_of_another_network_beside_a_sidecar_are_refused(run, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    meta = json.loads((folder / "best.json").read_text())
    (folder / "best.json").write_text(json.dumps({**meta, "model": "resnet18", "model_kwargs": {}}))
    with pytest.raises(CheckpointError, match="does not fit ResNet .*missing.*unexpected"):
        load_checkpoint_model(folder / "best.pdparams")


def test_resume_refuses_weights_that_do_not_fit(run, palm_root, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    state = _state(run)
    del state["classifier.4.bias"]
    paddle.save(state, str(folder / "last.pdparams"))
    _rehash(folder / "last.pdparams")
    with pytest.raises(CheckpointError, match="last.pdparams does not fit LeNet5 .*1 missing"):
        _train(_train_argv(palm_root, folder, "--epochs", "2", "--resume"))


def test_pretrained_skips_only_the_classifier(tmp_path):
    paddle.seed(0)
    path = tmp_path / "imagenet.pdparams"
    state = {k: v.numpy() for k, v in build_model("lenet5", 1000).state_dict().items()}
    paddle.save(state, str(path))
    report = load_pretrained(build_model("lenet5", 1), path)
    assert sorted(report["skipped"]) == sorted(k for k in state if state[k].shape[-1:] == (1000,))
    state["features.0.weight"] = np.zeros([3, 3], np.float32)  # not the classifier
    paddle.save(state, str(path))
    with pytest.raises(ValueError, match=r"1 tensor\(s\) outside the classifier have another "
                                         r"shape: features\.0\.weight \[3, 3\]->\[6, 3, 5, 5\]"):
        load_pretrained(build_model("lenet5", 1), path)


@pytest.mark.parametrize("damage, expected", [
    (lambda p: _flip_byte(p), "corrupt or changed since it was saved"),
    (lambda p: os.truncate(p, p.stat().st_size // 2), r"truncated \(\d+ of \d+ bytes\)"),
])
@pytest.mark.parametrize("name", ["best.pdparams", "last.pdopt"])
def test_damaged_file_is_named_as_such(name, damage, expected, run, palm_root, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    damage(folder / name)
    with pytest.raises(CheckpointError, match=rf"{name}: {expected}"):
        if name == "best.pdparams":
            load_checkpoint_model(folder / name)
        else:
            _train(_train_argv(palm_root, folder, "--epochs", "2", "--resume"))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("change, expected", [
    ({"num_classes": 0}, "num_classes must be an integer >= 1, not 0"),
    ({"image_size": 8}, "image_size must be an integer in 16..4096, not 8"),
    ({"image_size": "32"}, "image_size must be an integer in 16..4096, not '32'"),
    ({"model": "lenet7"}, "unknown model 'lenet7'"),
    ({"class_names": "PM"}, "class_names must be a list"),
    ({"threshold": 2}, "threshold must be a number in 0..1"),
])
def test_sidecar_validated_before_building(change, expected, run, tmp_path):
    folder = _copy_run(run, tmp_path / "run")
    meta = json.loads((folder / "best.json").read_text())
    (folder / "best.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(CheckpointError, match=rf"best.json: .*{re.escape(expected)}"):
        load_checkpoint_model(folder / "best.pdparams")


# ---------------------------------------------------------------- saving as one unit

# Kills a --resume run at the Nth file write or rename of its save (N = 1, 2, ...), each
# in a forked copy of one process that imported everything once (imports take most of
# most of the time); forked before paddle computed anything. Prints the Ns that crashed.
CRASH_SWEEP = r"""
import json, os, shutil, sys
import palm
import palm.engine.checkpoint as ck
from palm.cli import train

template, argv = sys.argv[1], sys.argv[2:]
real_write, real_rename = ck._write_durably, ck._rename_durably
crashed = []
for crash_at in range(1, 40):
    folder = f"{template}-crash{crash_at}"
    shutil.copytree(template, folder)
    pid = os.fork()
    if pid == 0:
        steps = [0]

        def crash_now():
            steps[0] += 1
            return steps[0] == crash_at

        def write(final, fill):
            tmp = real_write(final, fill)
            if crash_now():  # killed while this file was being written: half of it on disk
                os.truncate(tmp, tmp.stat().st_size // 2)
                os._exit(9)
            return tmp

        def rename(src, dst):
            if crash_now():
                os._exit(9)
            real_rename(src, dst)

        ck._write_durably, ck._rename_durably = write, rename
        train.main(train.parse_args([*argv, "--output", folder]))
        os._exit(0)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status == 0:  # this save has fewer steps: all were tried
        shutil.rmtree(folder)
        break
    assert status == 9, status
    crashed.append(folder)
print(json.dumps(crashed))
"""


@pytest.fixture(scope="module")
def plain_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "plain.yaml"
    # a constant LR: a 1-epoch run is then the first epoch of a 2-epoch run
    path.write_text("model: lenet5\noptimizer: adam\nlr: 0.002\nscheduler: constant\n"
                    "warmup_epochs: 0\n" + NO_AUGMENT)
    return path


@pytest.mark.longest(70)
@pytest.mark.slow
def test_kill_at_every_write_of_a_save_then_resume_equals_a_clean_run(palm_root, tmp_path,
                                                                      plain_config):
    """Epoch 2's save (last, best, metrics.csv) is killed at each of its file writes and
    renames in turn; --resume then ends exactly like an uninterrupted 2-epoch run."""
    argv = ["--config", str(plain_config)]
    straight = _train(_train_argv(palm_root, tmp_path / "straight", *argv, "--epochs", "2"))
    epoch1 = _train(_train_argv(palm_root, tmp_path / "epoch1", *argv, "--epochs", "1"))
    resume_argv = [*_common_argv(palm_root), *argv, "--epochs", "2", "--resume"]
    sweep = subprocess.run([sys.executable, "-c", CRASH_SWEEP, str(epoch1), *resume_argv],
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                           capture_output=True, text=True)
    assert sweep.returncode == 0, sweep.stderr
    crashed = [Path(p) for p in json.loads(sweep.stdout.strip().splitlines()[-1])]
    # last x3, best x3 (weights, sidecar, selection predictions; when epoch 2 is better),
    # metrics.csv and the commit record: as many writes as renames
    files = 8 if json.loads((straight / "best.json").read_text())["epoch"] == 2 else 5
    assert len(crashed) == 2 * files, crashed
    for folder in crashed:
        assert list(folder.glob(".*")), folder  # the kill left temporaries or a commit record
        _train(_train_argv(palm_root, folder, *argv, "--epochs", "2", "--resume"))
        _assert_same_run(folder, straight)
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], folder


def _assert_same_run(folder: Path, reference: Path) -> None:
    a, b = read_weights(folder / "last.pdparams"), read_weights(reference / "last.pdparams")
    for name in b:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), atol=1e-6, err_msg=name)
    columns = ["epoch", "lr", "train_loss", "val_loss", "val_accuracy", "val_roc_auc"]
    got, want = pd.read_csv(folder / "metrics.csv"), pd.read_csv(reference / "metrics.csv")
    np.testing.assert_allclose(got[columns], want[columns], rtol=1e-5, atol=1e-7)
    for name in ("last.json", "best.json"):
        got, want = (json.loads((f / name).read_text()) for f in (folder, reference))
        assert got["epoch"] == want["epoch"], name
    load_checkpoint_model(folder / "best.pdparams")  # complete and consistent


def test_interrupted_commit_is_finished_and_leftovers_removed(tmp_path, monkeypatch):
    """In-process: a save that stops after its commit record is rolled forward; one that
    stops before leaves the previous checkpoint, and its temporaries are removed."""
    model = build_model("lenet5", 1)
    meta = {"model": "lenet5", "num_classes": 1, "image_size": 32, "epoch": 1}
    ck.save_checkpoint(tmp_path / "last.pdparams", model, meta)
    first = file_sha256(tmp_path / "last.pdparams")
    paddle.seed(1)
    newer = build_model("lenet5", 1)
    calls = []

    def stop_after_first_rename(src, dst):
        if len(calls) == 2:  # the record and one file are in place
            raise KeyboardInterrupt
        calls.append(dst)
        os.replace(src, dst)

    monkeypatch.setattr(ck, "_rename_durably", stop_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path / "last.pdparams", newer, {**meta, "epoch": 2})
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="a save was interrupted here"):
        load_checkpoint_model(tmp_path / "last.pdparams")  # weights new, sidecar old
    (tmp_path / ".last.pdparams.deadbeef.tmp").write_bytes(b"x")  # an earlier crash's leftover
    notes = recover_folder(tmp_path)
    assert len(notes) == 2 and "finished" in notes[0] and "removed 1 temporary" in notes[1]
    loaded, got = load_checkpoint_model(tmp_path / "last.pdparams")
    assert got["epoch"] == 2 and file_sha256(tmp_path / "last.pdparams") != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.pdparams"]


class Killed(BaseException):
    """Stands in for a kill: nothing in palm catches it."""


def test_a_run_killed_in_its_first_save_can_start_again(palm_root, tmp_path, monkeypatch):
    def killed(src, dst):
        raise Killed

    monkeypatch.setattr(ck, "_rename_durably", killed)  # before the commit record is in place
    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        _train(_train_argv(palm_root, run_dir, "--epochs", "1"))
    monkeypatch.undo()
    assert [p.name for p in run_dir.glob(".*.tmp")]
    with pytest.raises(FileNotFoundError, match="nothing to resume from .*without --resume"):
        _train(_train_argv(palm_root, run_dir, "--epochs", "1", "--resume"))
    _train(_train_argv(palm_root, run_dir, "--epochs", "1"))  # not "already holds a run"
    assert json.loads((run_dir / "best.json").read_text())["epoch"] == 1
    assert not list(run_dir.glob(".*"))


# ---------------------------------------------------------------- export

def test_failed_export_leaves_nothing_loadable(run, tmp_path, monkeypatch):
    monkeypatch.setattr("palm.engine.tasks.probe_export", lambda *a, **k: "logits differ by 0.597")
    out = tmp_path / "exp"
    args = export_tool.get_args_parser().parse_args(
        ["--checkpoint", str(run / "best.pdparams"), "--output", str(out)])
    with pytest.raises(ExportVerificationError, match="logits differ by 0.597; nothing was installed"):
        export_tool.main(args)
    assert list(out.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="not a palm export"):
        load_predictor(out)


def test_changed_export_is_refused(run, tmp_path):
    out = tmp_path / "exp"
    export_tool.main(export_tool.get_args_parser().parse_args(
        ["--checkpoint", str(run / "best.pdparams"), "--output", str(out), "--no-verify"]))
    assert InferencePredictor(out).predict(np.zeros([1, 3, 32, 32], np.float32)).shape == (1, 1)
    _flip_byte(out / "model.pdiparams")
    with pytest.raises(CheckpointError, match="model.pdiparams: corrupt or changed since the export"):
        load_predictor(out)
    meta = json.loads((out / META_NAME).read_text())
    (out / META_NAME).write_text(json.dumps({**meta, "image_size": 99999}))
    with pytest.raises(CheckpointError, match="image_size must be an integer in 16..4096"):
        load_predictor(out)


# ---------------------------------------------------------------- predict --resume

def _predict(ckpt: Path, root: Path, out: Path, *extra: str):
    return predict_tool.main(predict_tool.get_args_parser().parse_args(
        ["--checkpoint", str(ckpt), "--input", str(root / "PALM-Validation400"), "--output",
         str(out), "--num-workers", "0", "--engine", "dygraph", "--no-progress", *extra]))


def test_torn_and_edited_journal_rows_are_redone(run, palm_root, tmp_path):
    out = tmp_path / "preds.csv"
    _predict(run / "best.pdparams", palm_root, out)
    full = out.read_text().splitlines()
    header, rows = full[0], full[1:]
    # an interrupted run: 5 good rows, an edited row `path,0.9`, and a row torn by a full disk
    edited = rows[5].split(",")[0] + ",0.9"
    torn = rows[6][: len(rows[6]) // 2]
    journal = journal_path(out)
    journal.write_text("\n".join([header, *rows[:5], edited, torn]))
    shutil.copy(record_path(out), record_path(journal))
    out.unlink()
    summary = _predict(run / "best.pdparams", palm_root, out, "--resume")
    assert (summary.images, summary.reused) == (16, 5)
    assert sorted(out.read_text().splitlines()[1:]) == sorted(rows)
    assert not journal.exists()


def test_resume_with_another_checkpoint_or_threshold_is_refused(run, palm_root, tmp_path):
    out = tmp_path / "preds.csv"
    _predict(run / "best.pdparams", palm_root, out)
    with pytest.raises(ValueError, match=r"were made differently \(threshold 0\.5 there, 0\.3 now\)"):
        _predict(run / "best.pdparams", palm_root, out, "--resume", "--threshold", "0.3")
    other = _copy_run(run, tmp_path / "other")
    state = _state(run)
    state["classifier.4.bias"] = state["classifier.4.bias"] + 1
    _resave(other, state)
    with pytest.raises(ValueError, match=r"checkpoint_sha256 '[0-9a-f]{64}' there, '[0-9a-f]{64}' now"):
        _predict(other / "best.pdparams", palm_root, out, "--resume")
    record_path(out).unlink()
    with pytest.raises(ValueError, match=r"preds.csv.json: missing, so nothing says which checkpoint"):
        _predict(run / "best.pdparams", palm_root, out, "--resume")


def test_one_module_unpickles_weights():
    """paddle.load / pickle appear in palm.weights only (tools and data_tools included), and
    in palm.torch_weights, whose reader is palm.weights' unpickler with torch's tensors added."""
    users = set()
    for folder in ("palm", "tools", "data_tools"):
        for path in (REPO / folder).rglob("*.py"):
            if re.search(r"\bpaddle\.load\(|\bimport pickle\b|\bpickle\.load", path.read_text()):
                users.add(path.relative_to(REPO).as_posix())
    assert users == {"palm/weights.py", "palm/torch_weights.py"}
    assert "(_RestrictedUnpickler)" in (REPO / "palm" / "torch_weights.py").read_text()


def test_a_small_file_of_shared_references_loads_quickly(tmp_path):
    """50 levels of a list holding the one below twice: 2**50 paths, 50 objects."""
    import time

    nested = [np.zeros(1, np.float32)]
    for _ in range(50):
        nested = [nested, nested]
    path = tmp_path / "bomb.pdparams"
    _dump({"w": nested}, path)
    start = time.perf_counter()
    assert isinstance(read_weights(path)["w"], list)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("change, expected", [
    ({"num_classes": 10**9, "class_names": []},
     r"describes a lenet5 of 85,000,061,156 parameters, more than best.pdparams \([\d,]+ bytes\)"),
    ({"model_kwargs": {"in_channels": 10**8}}, r"describes a lenet5 of 15,000,060,791 parameters"),
    ({"model_kwargs": {"in_channels": -1}}, r"best.json: cannot build lenet5 \("),
    ({"files": {"pdparams": "x"}}, r"best.json: files.pdparams must be \{\"sha256\": hex text"),
    ({"class_names": ["PM"]}, r"best.json: 1 class_names for num_classes 1 \(needs 2\)"),
    ({"class_names": ["PM", "PM"]}, r"best.json: class_names must differ"),
])
def test_sidecar_cannot_ask_for_a_huge_or_broken_network(change, expected, fresh_checkpoint):
    """A sidecar's sizes allocated gigabytes (MemoryError) or crashed before the weights
    were read; a wrong count of class names silently labelled positives ""."""
    side = fresh_checkpoint.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), **change}))
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint_model(fresh_checkpoint)


def test_recovery_removes_only_palm_leftovers(tmp_path):
    """Recovery ran on any --output folder and deleted every hidden .tmp file in it."""
    others = [tmp_path / ".notes.tmp", tmp_path / ".backup.20240101.tmp"]
    ours = [tmp_path / ".last.pdparams.0a1b2c3d.tmp", tmp_path / ".config.yaml.k2_x9qzt.tmp"]
    for path in others + ours:
        path.write_text("x")
    assert recover_folder(tmp_path) == [f"{tmp_path}: removed 2 temporary file(s) of an "
                                        "interrupted write"]
    assert [p.exists() for p in others + ours] == [True, True, False, False]


@pytest.mark.parametrize("name", ["best.json", ".palm-commit.json"])
def test_deeply_nested_json_is_named_as_damaged(name, fresh_checkpoint):
    """100000 nested brackets: a RecursionError naming no file (a traceback in recovery)."""
    (fresh_checkpoint.parent / name).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)}: (not valid JSON|damaged "
                                              r"commit record) \(maximum recursion depth"):
        load_checkpoint_model(fresh_checkpoint) if name == "best.json" else recover_folder(
            fresh_checkpoint.parent)


def test_an_export_folder_given_as_checkpoint_is_named_as_such(tmp_path):
    from palm.engine.checkpoint import CheckpointError, load_checkpoint_model

    (tmp_path / "palm_meta.json").write_text("{}")
    with pytest.raises(CheckpointError, match="Paddle Inference export.*pdparams checkpoint"):
        load_checkpoint_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_checkpoint_model(tmp_path / "..")


def _exit(main, args) -> int | str | None:
    """The exit code (or `error: ...` line) of a tool run as its command line runs it."""
    with pytest.raises(SystemExit) as info:
        run_tool(main, args)
    return info.value.code


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
