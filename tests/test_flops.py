"""palm.flops: hook-based FLOP and parameter counts against hand-computed figures."""
from __future__ import annotations

import paddle.nn as nn

from palm.flops import count_flops, count_params


def _small_net() -> nn.Layer:
    # 3x16x16 -> conv 3x3 pad 1 (8 ch) -> ReLU -> conv 3x3 stride 2, groups 2 (8 ch, 8x8)
    # -> flatten -> linear 512 -> 10
    return nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2D(8, 8, 3, stride=2, padding=1, groups=2),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


def test_count_flops_matches_hand_computation():
    conv1 = 2 * (8 * 16 * 16) * (3 * 3 * 3)  # outputs x multiply-adds per output x 2
    conv2 = 2 * (8 * 8 * 8) * (4 * 3 * 3)  # groups=2: each filter sees 8/2 channels
    linear = 2 * 10 * 512
    assert count_flops(_small_net(), (1, 3, 16, 16)) == conv1 + conv2 + linear == 157_696


def test_count_flops_is_per_image_and_restores_mode():
    net = _small_net()
    net.train()
    assert count_flops(net, (4, 3, 16, 16)) == count_flops(net, (1, 3, 16, 16))
    assert net.training
    # hooks are removed: a second count does not double up
    assert count_flops(net, (1, 3, 16, 16)) == 157_696


def test_count_params():
    net = _small_net()
    expected = (8 * 3 * 9 + 8) + (8 * 4 * 9 + 8) + (512 * 10 + 10)
    assert count_params(net) == expected
    net[0].weight.stop_gradient = True
    assert count_params(net, trainable_only=True) == expected - 8 * 3 * 9


def test_resnet50_flops_close_to_published():
    # torchvision/paddle.vision report ResNet50 at 4.1 GMACs = 8.2 GFLOPs for 224 px
    from palm.models import build_model

    flops = count_flops(build_model("resnet50", num_classes=1000))
    assert 8.0e9 < flops < 8.4e9
