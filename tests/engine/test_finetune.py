"""Fine-tuning recipes: the head found per family, layer decay depths as MAE/RETFound
count them, parameter groups applied by Paddle's optimizers, the head-only start, label
smoothing, and RETFound's shipped config."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from palm import config
from palm.engine.finetune import (backbone_freezer, head_parameter_names, layer_depths,
                                  parameter_groups)
from palm.engine.losses import ClassificationLoss
from palm.engine.optim import build_optimizer
from palm.engine.runner import run_training
from palm.models import build_model


def _network(name: str, **kw) -> paddle.nn.Layer:
    paddle.seed(0)
    return build_model(name, 1, **kw)


@pytest.mark.parametrize("name, kwargs, expected", [
    ("resnet18", {}, {"fc.weight", "fc.bias"}),
    ("vgg16", {}, {"classifier.6.weight", "classifier.6.bias"}),  # not the MLP before it
    ("squeezenet1_1", {}, {"_conv9.weight", "_conv9.bias"}),  # a 1x1 conv classifier
    ("googlenet", {"aux_logits": True},
     {"_fc_out.weight", "_fc_out.bias", "_out1.weight", "_out1.bias", "_out2.weight", "_out2.bias"}),
])
def test_head_is_what_depends_on_the_number_of_outputs(name, kwargs, expected):
    with paddle.LazyGuard():
        model = build_model(name, 1, **kwargs)
    assert head_parameter_names(model, name, kwargs) == expected


def _mae_layer_id(name: str, num_layers: int) -> int:
    """MAE's get_layer_id_for_vit (util/lr_decay.py), restated: the reference palm follows."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers


@pytest.mark.parametrize("name", ["vit_tiny_patch16", "retfound"])
def test_vit_depths_are_maes(name):
    with paddle.LazyGuard():
        model = build_model(name, 1)
    depths = layer_depths(model, head_parameter_names(model, name, {}))
    num_layers = len(model.blocks) + 1
    assert depths == {n: _mae_layer_id(n, num_layers) for n, _ in model.named_parameters()}


def test_cnn_depths_follow_the_stages():
    with paddle.LazyGuard():
        model = build_model("resnet18", 1)
    depths = layer_depths(model, {"fc.weight", "fc.bias"})
    assert depths["conv1.weight"] == 0 and depths["bn1.weight"] == 1
    assert {depths[f"layer{k}.0.conv1.weight"] for k in range(1, 5)} == {2, 3, 4, 5}
    assert depths["layer3.1.bn2.weight"] == 4 and depths["fc.weight"] == 6


def _update_sizes(model: paddle.nn.Layer, optimizer, image_size: int) -> dict[str, float]:
    """The largest change of every parameter in one optimizer step."""
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    loss = model(paddle.rand([2, 3, image_size, image_size])).sum()
    loss.backward()
    optimizer.step()
    return {n: float(np.abs(p.numpy() - before[n]).max()) for n, p in model.named_parameters()}


def test_adamw_applies_the_groups_rates_and_decays():
    """Adam's first step moves every weight by lr (times its group's multiplier): measured
    per parameter, the layer-decayed, head-boosted rates are what Paddle applied; with the
    decay on, only the parameters that should decay move further."""
    model, lr = _network("vit_tiny_patch16", image_size=32), 1e-2
    head = head_parameter_names(model, "vit_tiny_patch16", {"image_size": 32})
    groups = parameter_groups(model, head, weight_decay=0.0, head_lr_mult=10, layer_decay=0.8)
    moved = _update_sizes(model, build_optimizer("adamw", groups, lr, weight_decay=0.0), 32)
    depths = layer_depths(model, head)
    for name in ("blocks.11.mlp.fc2.weight", "blocks.0.attn.qkv.weight", "patch_embed.proj.weight"):
        assert moved[name] == pytest.approx(lr * 0.8 ** (13 - depths[name]), rel=1e-3), name
    assert moved["head.weight"] == pytest.approx(lr * 10, rel=1e-3)
    assert moved["norm.weight"] == pytest.approx(lr, rel=1e-3)  # after the blocks: top depth

    # AdamW's decay is decoupled: with it the step ends lr * 0.5 * w further, except on
    # biases, norms and the tokens once decay_norm_and_bias is off
    def one_step(weight_decay: float) -> dict[str, np.ndarray]:
        model = _network("vit_tiny_patch16", image_size=32)
        groups = parameter_groups(model, head, weight_decay=weight_decay,
                                  decay_norm_and_bias=False)
        optimizer = build_optimizer("adamw", groups, lr, weight_decay=weight_decay)
        start = {n: p.numpy().copy() for n, p in model.named_parameters()}
        paddle.seed(1)
        model(paddle.rand([2, 3, 32, 32])).sum().backward()
        optimizer.step()
        return {n: p.numpy() - start[n] * (1 - lr * weight_decay) for n, p in model.named_parameters()}

    plain, decayed = one_step(0.0), one_step(0.5)
    for name in ("blocks.3.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"):
        np.testing.assert_allclose(decayed[name], plain[name], atol=1e-6, err_msg=name)
    start = {n: p.numpy() for n, p in _network("vit_tiny_patch16", image_size=32).named_parameters()}
    for name in ("blocks.3.attn.qkv.bias", "norm.weight", "cls_token", "pos_embed"):
        np.testing.assert_allclose(decayed[name] + start[name] * (1 - lr * 0.5), plain[name] + start[name],
                                   atol=1e-6, err_msg=name)


def test_frozen_backbone_takes_no_step_and_thaws_on_time():
    model = _network("resnet18")
    head = head_parameter_names(model, "resnet18", {})
    optimizer = build_optimizer("momentum", model.parameters(), 0.1)
    trainable = [n for n, p in model.named_parameters() if not p.stop_gradient]
    before_epoch = backbone_freezer(model, head, freeze_epochs=1)
    before_epoch(0)
    moved = _update_sizes(model, optimizer, 32)
    assert moved["fc.weight"] > 0
    # (BatchNorm's running statistics, parameters without gradient in Paddle, still move)
    assert all(moved[n] == 0 for n in trainable if n not in head)
    assert moved["bn1._mean"] > 0
    before_epoch(1)
    moved = _update_sizes(model, optimizer, 32)
    assert moved["conv1.weight"] > 0 and moved["layer4.1.conv2.weight"] > 0


def test_label_smoothing_moves_targets_towards_uniform():
    logits, labels = paddle.to_tensor([[2.0], [-1.0]]), paddle.to_tensor([1, 0])
    smoothed = float(ClassificationLoss(1, label_smoothing=0.2)(logits, labels))
    p = 1 / (1 + np.exp(-np.array([2.0, -1.0])))
    target = np.array([0.9, 0.1])
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    assert smoothed == pytest.approx(bce.mean(), rel=1e-5)

    multi = paddle.to_tensor([[2.0, 0.5, -1.0]])
    log_p = multi.numpy()[0] - np.log(np.exp(multi.numpy()[0]).sum())
    expected = -(0.9 + 0.1 / 3) * log_p[0] - (0.1 / 3) * (log_p[1] + log_p[2])
    got = float(ClassificationLoss(3, label_smoothing=0.1)(multi, paddle.to_tensor([0])))
    assert got == pytest.approx(expected, rel=1e-5)


def test_retfound_config_is_the_published_recipe():
    cfg = config.validate_config({**config.DEFAULTS, **config.model_config("retfound")})
    assert cfg["lr"] == pytest.approx(5e-3 * cfg["batch_size"] / 256)
    assert (cfg["optimizer"], cfg["weight_decay"], cfg["layer_decay"]) == ("adamw", 0.05, 0.65)
    assert cfg["model_kwargs"] == {"drop_path_rate": 0.2} and cfg["label_smoothing"] == 0.1
    assert (cfg["epochs"], cfg["warmup_epochs"], cfg["image_size"]) == (50, 10, 224)
    assert cfg["decay_norm_and_bias"] is False and cfg["normalize"] == "imagenet"


@pytest.mark.parametrize("key, value", [("layer_decay", 1.5), ("head_lr_mult", 0),
                                        ("freeze_epochs", -1), ("label_smoothing", 1.0)])
def test_out_of_range_recipe_settings_are_refused(key, value):
    with pytest.raises(config.BadConfig, match=key):
        config.validate_config({**config.DEFAULTS, key: value})


RECIPE = {"head_lr_mult": 10.0, "layer_decay": 0.5, "freeze_epochs": 1,
          "decay_norm_and_bias": False, "label_smoothing": 0.1, "optimizer": "adamw",
          "weight_decay": 0.05, "augment": "none"}


def _fine_tune(palm_root: Path, output: Path, pretrained: Path, epochs: int, **extra) -> Path:
    cfg = {**config.DEFAULTS, **config.model_config("resnet18"), "data_root": str(palm_root),
           "image_size": 32, "batch_size": 8, "num_workers": 0, "device": "cpu",
           "epochs": epochs, "pretrained": str(pretrained), "output": str(output), **RECIPE,
           **extra}
    return run_training(config.validate_config(cfg), progress=False, log=lambda _: None)


@pytest.fixture(scope="module")
def start_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("start") / "start.pdparams"
    paddle.save(_network("resnet18").state_dict(), str(path))
    return path


def _weights(run: Path) -> dict[str, np.ndarray]:
    return {n: t.numpy() for n, t in paddle.load(str(run / "last.pdparams")).items()}


def test_recipe_trains_head_only_first_and_records_the_settings(palm_root, tmp_path, start_weights):
    run = _fine_tune(palm_root, tmp_path / "run", start_weights, epochs=1)
    start, after = paddle.load(str(start_weights)), _weights(run)
    assert not np.allclose(after["fc.weight"], start["fc.weight"].numpy())
    for name in ("conv1.weight", "layer2.0.conv1.weight", "layer4.1.bn2.weight", "bn1.bias"):
        np.testing.assert_array_equal(after[name], start[name].numpy(), err_msg=name)
    saved = config.load_config(run / "config.yaml")
    assert {k: saved[k] for k in RECIPE if k != "augment"} == {
        k: v for k, v in RECIPE.items() if k != "augment"}


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "momentum"])
def test_recipe_resumed_equals_uninterrupted(palm_root, tmp_path, start_weights, optimizer):
    """Resuming after the frozen epoch restores the groups' optimizer state and thaws the
    backbone exactly as the uninterrupted run does."""
    straight = _fine_tune(palm_root, tmp_path / "straight", start_weights, epochs=2,
                          optimizer=optimizer)
    split = _fine_tune(palm_root, tmp_path / "split", start_weights, epochs=1, optimizer=optimizer)
    _fine_tune(palm_root, split, start_weights, epochs=2, resume=True, optimizer=optimizer)
    assert json.loads((split / "last.json").read_text())["epoch"] == 2
    a, b = _weights(straight), _weights(split)
    assert not np.allclose(a["conv1.weight"], paddle.load(str(start_weights))["conv1.weight"].numpy())
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "adamw"])
def test_every_optimizer_leaves_norms_and_biases_undecayed(optimizer):
    """With no gradient, one step moves only what weight decay reaches: the weights, never
    the biases once decay_norm_and_bias is off (Adam's L2 once fell back to the global)."""
    model = _network("lenet5")
    groups = parameter_groups(model, head_parameter_names(model, "lenet5", {}), weight_decay=0.5,
                              decay_norm_and_bias=False)
    opt = build_optimizer(optimizer, groups, 0.1, weight_decay=0.5)
    for p in model.parameters():
        p.set_value(paddle.ones(p.shape))
    (model(paddle.rand([2, 3, 32, 32])) * 0).sum().backward()
    opt.step()
    moved = {n: float((1 - p).abs().max()) for n, p in model.named_parameters()}
    assert all(moved[n] == 0 for n in moved if n.endswith("bias"))
    assert all(moved[n] > 0.01 for n in moved if n.endswith("weight"))


@pytest.mark.parametrize("key", ["head_lr_mult", "freeze_epochs", "label_smoothing",
                                 "decay_norm_and_bias"])
def test_null_is_refused_where_the_setting_has_no_unset_state(key):
    with pytest.raises(config.BadConfig, match=f"{key}.*not null"):
        config.validate_config({**config.DEFAULTS, key: None})


def test_freezing_with_compile_is_refused_before_any_work(palm_root, tmp_path, start_weights):
    with pytest.raises(config.BadConfig, match="freeze_epochs: not supported with --compile"):
        _fine_tune(palm_root, tmp_path / "run", start_weights, epochs=2, compile=True)
    assert not (tmp_path / "run").exists()


def test_validation_loss_is_the_plain_loss_with_smoothing(palm_root, tmp_path, start_weights):
    """Label smoothing changes the training loss only: the validation loss of the same
    weights is the same with and without it (runs stay comparable)."""
    plain = _fine_tune(palm_root, tmp_path / "plain", start_weights, epochs=1, label_smoothing=0.0,
                       freeze_epochs=1, head_lr_mult=1e-9)
    smooth = _fine_tune(palm_root, tmp_path / "smooth", start_weights, epochs=1,
                        label_smoothing=0.5, freeze_epochs=1, head_lr_mult=1e-9)
    import pandas as pd
    a, b = pd.read_csv(plain / "metrics.csv"), pd.read_csv(smooth / "metrics.csv")
    assert a["val_loss"][0] == pytest.approx(b["val_loss"][0], rel=1e-4)
    assert a["train_loss"][0] != pytest.approx(b["train_loss"][0], rel=1e-3)
