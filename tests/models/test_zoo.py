"""What every registered network gets from its registration alone: shape, features-only,
training-step and config checks, parametrised over `palm.models.list_models()`.

A new family file is tested here without editing this file. Representative networks
(REPRESENTATIVE_MODELS in tests/marks.py) run in the quick loop (`-m "not slow"`); the others
are marked slow, so the full suite still covers every one. Per-family particulars live in
test_classic.py and test_later.py.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import pytest

from palm import config
from palm.models import MODELS, build_model, list_models
from tests.marks import quick_or_slow

# Names the zoo has promised (a removed or renamed network fails here); new ones need no entry.
PROMISED = [
    "lenet", "lenet5", "alexnet",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "nin", "densenet121", "densenet169", "se_resnet50", "cbam_resnet50", "mobilenet_v1",
    "mobilenet_v2", "shufflenet_v2_x1_0", "squeezenet1_1", "xception", "efficientnet_b0",
    "inception_v3",
]
# The classic families (LeNet, AlexNet, VGG, GoogLeNet, ResNet) keep their own feature and
# training tests in test_classic.py; every other family gets the generic ones below.
CLASSIC_MODULES = {f"palm.models.{m}" for m in ("lenet", "alexnet", "vgg", "googlenet", "resnet")}
# Input sizes checked besides 64 px: the network's ImageNet size (224 unless listed).
EXTRA_SIZES: dict[str, tuple[int, ...]] = {"lenet": (), "lenet5": (), "inception_v3": (224, 299)}
# Larger builds of a class the suite tests at a smaller size (ViT-Tiny and -Small run every
# test here; the ViT-L ones take 10-46 s a test on 2 cores): their forward shape is checked
# at 64 px only, the generic feature and training tests are left to the smaller ones, and
# test_golden still checks their outputs.
SCALED_UP = {"vit_base_patch16", "vit_large_patch16", "retfound"}
EXTRA_SIZES.update({name: () for name in SCALED_UP})
BUILD_KWARGS = {"lenet": {"image_size": 64}}  # lenet's first linear layer follows the size
# Adam's step in the training test: transformers diverge at 1e-3 without warm-up (ViT-S: loss
# 1.2 -> 6.5), as they are never trained that way; 1e-4 is the scale timm fine-tunes them at
TRAINING_LR = {"palm.models.vit": 1e-4}


def _later() -> list[str]:
    return [n for n in list_models()
            if MODELS[n].__module__ not in CLASSIC_MODULES and n not in SCALED_UP]


def _forward(model: nn.Layer, size: int) -> paddle.Tensor:
    model.eval()
    with paddle.no_grad():
        return model(paddle.rand([2, 3, size, size]))


def test_registry_has_the_promised_names():
    assert set(PROMISED) <= set(list_models())


@pytest.mark.parametrize("num_classes", [1, 10])
@pytest.mark.parametrize("name", quick_or_slow(list_models()))
def test_forward_shape(name, num_classes):
    model = build_model(name, num_classes=num_classes, **BUILD_KWARGS.get(name, {}))
    # the large sizes once per network (num_classes only changes the last layer): the big
    # ones take seconds each on 2 cores
    sizes = (64, *EXTRA_SIZES.get(name, (224,))) if num_classes == 10 else (64,)
    for size in sizes:
        y = _forward(model, size)
        assert y.shape == [2, num_classes], (name, size)
        assert not paddle.isnan(y).any(), (name, size)


@pytest.mark.parametrize("name", quick_or_slow(_later()))
def test_features_only(name):
    pooled = _forward(build_model(name, num_classes=0), 64)
    assert pooled.ndim == 4 and pooled.shape[0] == 2 and pooled.shape[2:] == [1, 1]
    maps = _forward(build_model(name, num_classes=0, with_pool=False), 96)
    assert maps.shape[:2] == pooled.shape[:2] and maps.shape[2] >= 1  # backbone: unpooled maps
    with pytest.raises(ValueError, match="with_pool=False"):
        build_model(name, num_classes=1, with_pool=False)


@pytest.mark.parametrize("name", quick_or_slow(_later()))
def test_training_steps_reduce_loss(name):
    """A few Adam steps on one fixed batch (train mode, BN batch statistics) lower its loss."""
    paddle.seed(0)
    model = build_model(name, num_classes=1)
    model.train()
    x = paddle.rand([4, 3, 64, 64]) * 2 - 1
    y = paddle.to_tensor([[0.0], [1.0], [1.0], [0.0]])
    optimizer = paddle.optimizer.Adam(learning_rate=TRAINING_LR.get(MODELS[name].__module__, 1e-3),
                                      parameters=model.parameters())
    losses = []
    for _ in range(4):
        paddle.seed(1)  # the same dropout / stochastic-depth masks at every step
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        losses.append(float(loss))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < 0.8 * losses[0], losses  # by 0.5x or more in trials with 3 seeds


@pytest.mark.parametrize("name", list_models())
def test_a_packaged_config_builds_its_network(name):
    """Configs are optional (training falls back to DEFAULTS); one that exists must build."""
    path = config.config_path_for_model(name)
    if not path.is_file():
        pytest.skip(f"{name} has no packaged config: training uses the defaults")
    cfg = {**config.DEFAULTS, **config.model_config(name)}  # files hold what differs
    assert config.load_config(path)["model"] == cfg["model"] == name
    if MODELS[name].__module__ not in CLASSIC_MODULES:
        assert cfg["image_size"] == (299 if name == "inception_v3" else 224)
    with paddle.LazyGuard():
        build_model(name, num_classes=1, **cfg.get("model_kwargs", {}))
