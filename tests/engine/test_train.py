"""Training: run folder, checkpoints, resume, Ctrl-C, NaN loss, losses and schedules.

Runs use the session's tiny synthetic PALM set (24 + 16 images, 64 px) at 32 px with
ResNet18, one or two epochs of three batches each.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import pandas as pd
import pytest

from palm.engine.checkpoint import load_checkpoint_model, load_optimizer_state
from palm.errors import OutputRefused
from palm.engine.losses import ClassificationLoss, auto_pos_weight
from palm.engine.optim import build_optimizer, build_scheduler
from palm.engine.train import (NonFiniteLossError, RunState, Selection, TrainingInterrupted,
                               _record_epoch, selection_key, summary_line, train_one_epoch)
from palm.models import build_model
from palm.cli import train as train_tool
from tests.processes import ctrl_c_in_epoch, ctrl_c_once

REPO = Path(__file__).resolve().parents[2]
# No augmentation: an interrupted + resumed run must then equal an uninterrupted one exactly.
NO_AUGMENT = ("augment: {hflip: false, vflip: false, rotate: 0, brightness: 0, contrast: 0, "
              "random_resized_crop: 1.0}\n")


def _train_args(palm_root: Path, output: Path, *extra: str) -> list[str]:
    return ["--model", "resnet18", "--data-root", str(palm_root), "--image-size", "32",
            "--batch-size", "8", "--num-workers", "0", "--output", str(output), "--seed", "0",
            "--device", "cpu", "--no-progress", *extra]


def _train(argv: list[str]) -> Path:
    return train_tool.main(train_tool.parse_args(argv))


@pytest.fixture(scope="module")
def plain_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "plain.yaml"
    path.write_text("model: resnet18\noptimizer: adam\nlr: 0.002\nscheduler: cosine\n"
                    "warmup_epochs: 0.5\n" + NO_AUGMENT)
    return path


@pytest.mark.slow
def test_run_folder_and_checkpoint_json(palm_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PALM_CACHE_DIR", str(tmp_path / "cache"))
    run = _train(_train_args(palm_root, tmp_path / "run", "--epochs", "2"))
    # the default cache_dir "auto" holds every training and validation image once (the
    # train and eval transforms decode to the same size at 32 px)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 24 + 16
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "last.pdparams", "last.pdopt", "last.json",
            "best.pdparams", "best.json", "loss_curve.png", "metrics_curve.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes leave nothing behind

    history = pd.read_csv(run / "metrics.csv")
    assert history["epoch"].tolist() == [1, 2]
    for column in ("train_loss", "val_loss", "val_accuracy", "val_roc_auc", "val_sensitivity",
                   "val_specificity"):
        assert history[column].notna().all(), column

    meta = json.loads((run / "last.json").read_text())
    assert meta["model"] == "resnet18" and meta["num_classes"] == 1
    assert meta["class_names"] == ["non-PM", "PM"]
    assert meta["image_size"] == 32 and meta["normalize"] == "minus_one_one"
    assert meta["threshold"] == 0.5 and meta["epoch"] == 2
    assert meta["metrics"]["val_roc_auc"] == pytest.approx(history["val_roc_auc"].iloc[-1])
    best = json.loads((run / "best.json").read_text())
    assert best["epoch"] == int(history["epoch"][history["val_roc_auc"].idxmax()])
    assert best["best_metric"] == "val_roc_auc"

    saved = (run / "config.yaml").read_text()
    assert "image_size: 32" in saved and "epochs: 2" in saved
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "auc" in out and "done: best epoch" in out

    model, meta = load_checkpoint_model(run / "best.pdparams")
    assert model(paddle.rand([2, 3, 32, 32])).shape == [2, 1]
    with pytest.raises(OutputRefused, match="exist_ok"):  # never mixes two runs silently
        _train(_train_args(palm_root, run, "--epochs", "2"))


@pytest.mark.slow
def test_resume_equals_uninterrupted_run(palm_root, tmp_path, plain_config, monkeypatch):
    """A run stopped by Ctrl-C after epoch 1 and resumed gives the same weights as an
    uninterrupted one: the epoch count, optimizer moments, LR schedule and batch order all
    continue where they stopped."""
    argv = ["--config", str(plain_config), "--epochs", "2"]
    straight = _train(_train_args(palm_root, tmp_path / "straight", *argv))

    with ctrl_c_in_epoch(monkeypatch, 2), \
            pytest.raises(TrainingInterrupted, match="1 epochs completed"):
        _train(_train_args(palm_root, tmp_path / "split", *argv))
    split = tmp_path / "split"
    assert json.loads((split / "last.json").read_text())["epoch"] == 1
    first_opt = load_optimizer_state(split / "last.pdparams")
    _train(_train_args(palm_root, split, *argv, "--resume"))

    assert json.loads((split / "last.json").read_text())["epoch"] == 2
    a = pd.read_csv(straight / "metrics.csv")
    b = pd.read_csv(split / "metrics.csv")
    assert b["epoch"].tolist() == [1, 2]
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(a["lr"], b["lr"], rtol=1e-6)
    w_a = paddle.load(str(straight / "last.pdparams"))
    w_b = paddle.load(str(split / "last.pdparams"))
    for name in w_a:
        np.testing.assert_allclose(w_a[name].numpy(), w_b[name].numpy(), atol=1e-5, err_msg=name)
    # the scheduler advanced by one more epoch of steps (3 batches of 8 out of 24 images)
    second_opt = load_optimizer_state(split / "last.pdparams")
    assert second_opt["scheduler"]["last_epoch"] - first_opt["scheduler"]["last_epoch"] == 3


@pytest.mark.slow
def test_compiled_training_equals_eager(palm_root, tmp_path, plain_config, monkeypatch):
    from paddle.jit.dy2static.program_translator import StaticFunction

    from palm.engine import runner

    compiled_forwards = []
    real_compile = runner.compile_network

    def spy(*args):
        net = real_compile(*args)
        compiled_forwards.append(isinstance(net.forward, StaticFunction))
        return net

    monkeypatch.setattr(runner, "compile_network", spy)
    argv = ["--config", str(plain_config), "--epochs", "1"]
    eager = _train(_train_args(palm_root, tmp_path / "eager", *argv))
    assert compiled_forwards == []
    compiled = _train(_train_args(palm_root, tmp_path / "compiled", *argv, "--compile"))
    assert compiled_forwards == [True]
    assert "compile: true" in (compiled / "config.yaml").read_text()
    a = pd.read_csv(eager / "metrics.csv")
    b = pd.read_csv(compiled / "metrics.csv")
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["val_roc_auc"], a["val_roc_auc"], atol=1e-6)
    w_a = paddle.load(str(eager / "last.pdparams"))
    w_b = paddle.load(str(compiled / "last.pdparams"))
    assert w_a.keys() == w_b.keys()  # a compiled run's checkpoint loads like any other
    for name in w_a:
        np.testing.assert_allclose(w_b[name].numpy(), w_a[name].numpy(), atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_compiled_network_with_auxiliary_heads_trains_like_eager():
    """GoogLeNet returns (main, aux1, aux2) in training and one tensor in eval mode."""
    from paddle.jit.dy2static.program_translator import StaticFunction

    from palm.engine.runner import compile_network

    x = paddle.to_tensor(np.random.default_rng(0).uniform(-1, 1, (4, 3, 64, 64)), "float32")
    y = paddle.to_tensor([0, 1, 0, 1], "int64")
    results = []
    for compiled in (False, True):
        paddle.seed(0)
        model = build_model("googlenet", num_classes=1, aux_logits=True)
        opt = paddle.optimizer.Momentum(1e-2, parameters=model.parameters())
        net = compile_network(model) if compiled else model
        assert isinstance(net.forward, StaticFunction) == compiled
        loss_fn = ClassificationLoss(1, aux_weight=0.3)
        losses = []
        for _ in range(2):
            model.train()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()
            losses.append(float(loss))
        model.eval()
        results.append((losses, net(x).numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-5)


def test_resume_without_last_is_a_clear_error(palm_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        _train(_train_args(palm_root, tmp_path / "none", "--epochs", "1", "--resume"))


@pytest.mark.slow
def test_sigint_saves_loadable_last(palm_root, tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, str(REPO / "tools" / "train.py"),
            *_train_args(palm_root, run, "--epochs", "200")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = ctrl_c_once(proc, (run / "metrics.csv").is_file, 120, "epoch finished")
    assert proc.returncode != 0
    assert "interrupted in epoch" in err and "--resume" in err
    meta = json.loads((run / "last.json").read_text())
    assert meta["interrupted"] is True and meta["epoch"] >= 1
    model, _ = load_checkpoint_model(run / "last.pdparams")
    assert model(paddle.rand([1, 3, 32, 32])).shape == [1, 1]
    assert "optimizer" in load_optimizer_state(run / "last.pdparams")


@pytest.mark.slow
def test_data_parallel_on_cpu_two_processes(palm_root, tmp_path):
    """paddle.distributed.launch with 2 CPU processes (gloo): DataParallel +
    DistributedBatchSampler train, and only rank 0 writes the run folder."""
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
         str(tmp_path / "log"), str(REPO / "tools" / "train.py"),
         *_train_args(palm_root, run, "--epochs", "1", "--batch-size", "4")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / "log").glob("workerlog.*")}
    assert proc.returncode == 0, proc.stdout[-2000:] + "\n".join(logs.values())[-3000:]
    assert "on cpu x2" in logs["workerlog.0"] and "epoch 1/1" in logs["workerlog.0"]
    assert "epoch 1/1" not in logs["workerlog.1"]  # rank 1 trains silently
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [1]
    meta = json.loads((run / "last.json").read_text())
    assert meta["epoch"] == 1
    assert not any(k.startswith("_layers.") for k in paddle.load(str(run / "last.pdparams")))


class _Exploding(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(3, 1)

    def forward(self, x):
        return self.fc(x.mean(axis=[2, 3])) * float("nan")


def test_nan_loss_stops_with_clear_message():
    model = _Exploding()
    before = model.fc.weight.numpy().copy()
    opt = build_optimizer("adam", model.parameters(), 0.1)
    loader = [(paddle.rand([4, 3, 8, 8]), paddle.to_tensor([0, 1, 0, 1]))]
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, batch 1: training loss is nan.*--lr"):
        train_one_epoch(model, ClassificationLoss(1), opt, loader, epoch=3, progress=False)
    np.testing.assert_array_equal(model.fc.weight.numpy(), before)  # no step was taken


def test_losses_match_formulas():
    logits = paddle.to_tensor([[2.0], [-1.0], [0.5]])
    labels = paddle.to_tensor([1, 0, 1])
    y = np.array([1.0, 0.0, 1.0])
    x = np.array([2.0, -1.0, 0.5])
    sig = 1 / (1 + np.exp(-x))
    bce = -(y * np.log(sig) + (1 - y) * np.log(1 - sig))
    assert float(ClassificationLoss(1)(logits, labels)) == pytest.approx(bce.mean(), rel=1e-5)
    weighted = -(3 * y * np.log(sig) + (1 - y) * np.log(1 - sig))
    assert float(ClassificationLoss(1, pos_weight=3)(logits, labels)) == pytest.approx(weighted.mean(), rel=1e-5)
    # GoogLeNet-style (main, aux1, aux2): main + 0.3 * (aux1 + aux2)
    aux = paddle.to_tensor([[0.0], [0.0], [0.0]])
    total = float(ClassificationLoss(1, aux_weight=0.3)((logits, aux, aux), labels))
    assert total == pytest.approx(bce.mean() + 0.6 * math.log(2), rel=1e-5)
    multi = paddle.to_tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ce = float(ClassificationLoss(3)(multi, paddle.to_tensor([0, 2])))
    assert ce == pytest.approx(float(F.cross_entropy(multi, paddle.to_tensor([0, 2]))))
    assert auto_pos_weight(np.array([0, 0, 0, 1])) == 3.0


def test_schedules_warmup_cosine_step():
    sched = build_scheduler("cosine", 0.1, epochs=2, steps_per_epoch=10, warmup_epochs=0.5)
    lrs = []
    for _ in range(20):
        lrs.append(sched())
        sched.step()
    assert lrs[0] == pytest.approx(0.001)  # warmup starts at 1 % of the base rate
    assert lrs[5] == pytest.approx(0.1)  # warmup over: cosine from the base rate
    assert lrs[-1] < 0.002 and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    step = build_scheduler("step", 0.1, epochs=4, steps_per_epoch=2, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(8):
        lrs.append(step())
        step.step()
    assert lrs == pytest.approx([0.1] * 4 + [0.05] * 4)
    constant = build_scheduler("constant", 0.1, epochs=1, steps_per_epoch=3)
    constant.step()
    assert constant() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="choose from constant"):
        build_scheduler("poly", 0.1, epochs=1, steps_per_epoch=1)


@pytest.mark.parametrize("name, cls", [("momentum", paddle.optimizer.Momentum),
                                       ("adam", paddle.optimizer.Adam),
                                       ("adamw", paddle.optimizer.AdamW)])
def test_optimizers(name, cls):
    layer = paddle.nn.Linear(2, 1)
    assert isinstance(build_optimizer(name, layer.parameters(), 0.01, weight_decay=1e-4), cls)


def test_a_tie_in_the_selection_score_goes_to_the_lower_validation_loss():
    state, selection = RunState(), Selection(files=[], record={})
    rows = [{"val_qwk": 0.5, "val_loss": 0.9}, {"val_qwk": 0.5, "val_loss": 0.7},
            {"val_qwk": 0.5, "val_loss": 0.8}, {"val_qwk": 0.5, "val_loss": math.nan},
            {"val_qwk": math.nan, "val_accuracy": math.nan, "val_loss": 0.1},
            {"val_qwk": 0.6, "val_loss": 2.0}]
    improved = [_record_epoch(state, i + 1, row, selection, None) is not None
                for i, row in enumerate(rows)]
    assert improved == [True, True, False, False, False, True]
    assert (state.best_score, state.best_loss) == (0.6, 2.0)
    assert max(rows[:3], key=selection_key) is rows[1]  # the run's closing line agrees


def test_a_resumed_run_saved_before_ties_were_broken_keeps_its_best_on_a_tie():
    state = RunState(best_score=0.5, best_loss=-math.inf)  # as load_resume_state reads it
    assert _record_epoch(state, 2, {"val_qwk": 0.5, "val_loss": 0.1},
                         Selection(files=[], record={}), None) is None


def test_the_epoch_line_leaves_out_undefined_metrics():
    row = {"epoch": 2, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.75,
           "val_roc_auc": math.nan, "val_qwk": 0.61, "lr": 1e-3, "train_img_per_s": 12.0}
    line = summary_line(row, 5, best=True)
    assert "auc" not in line and "qwk 0.610" in line and "acc 0.750" in line
