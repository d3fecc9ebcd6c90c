"""VGG (Simonyan & Zisserman 2014, arXiv:1409.1556): every variant is a row of `VGG_CFGS`.

Parameter names and shapes follow `paddle.vision.models.VGG` (`features.N`, `classifier.N`),
so its ImageNet state dicts load. The adaptive 7 x 7 pool before the classifier lets any input
of 32 px and up through (five 2x2 pools take 32 px down to 1 x 1).
"""
from __future__ import annotations

from typing import Literal

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model

# Configurations A, B, D, E of the paper's Table 1: conv output channels, "M" = 2x2 max pool.
VGG_CFGS: dict[int, list[int | Literal["M"]]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(cfg: list[int | Literal["M"]], batch_norm: bool = False) -> nn.Sequential:
    """3x3 convs (+ BN) + ReLU per number, 2x2 max pool per "M"; same indices as paddle.vision."""
    layers: list[nn.Layer] = []
    in_channels = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2D(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2D(in_channels, item, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2D(item))
        layers.append(nn.ReLU())
        in_channels = item
    return nn.Sequential(*layers)


class VGG(nn.Layer):
    """VGG body `features` + adaptive 7 x 7 pool + three linear layers.

    Args:
        features: the conv body, from `make_features`.
        num_classes: outputs (1 = one logit); <= 0 returns the 512-channel feature map.
        with_pool: apply the 7 x 7 adaptive pool (only False for backbone use, no classifier).
        dropout: drop probability in the classifier (0.5 in the paper).

    Example:
        >>> VGG(make_features(VGG_CFGS[16]), num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(
        self, features: nn.Layer, num_classes: int = 1, with_pool: bool = True, dropout: float = 0.5
    ):
        super().__init__()
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("vgg", num_classes, with_pool, pool_size=7)
        self.features = features
        self.classifier = None
        if num_classes > 0:
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
                nn.Linear(4096, num_classes),
            )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier_head(self.features(x), self.classifier)


def _vgg(depth: int, batch_norm: bool, num_classes: int = 1, **kw) -> VGG:
    return VGG(make_features(VGG_CFGS[depth], batch_norm), num_classes=num_classes, **kw)


@register_model
def vgg11(num_classes: int = 1, **kw) -> VGG:
    return _vgg(11, False, num_classes, **kw)


@register_model
def vgg13(num_classes: int = 1, **kw) -> VGG:
    return _vgg(13, False, num_classes, **kw)


@register_model
def vgg16(num_classes: int = 1, **kw) -> VGG:
    return _vgg(16, False, num_classes, **kw)


@register_model
def vgg19(num_classes: int = 1, **kw) -> VGG:
    return _vgg(19, False, num_classes, **kw)


@register_model
def vgg11_bn(num_classes: int = 1, **kw) -> VGG:
    return _vgg(11, True, num_classes, **kw)


@register_model
def vgg13_bn(num_classes: int = 1, **kw) -> VGG:
    return _vgg(13, True, num_classes, **kw)


@register_model
def vgg16_bn(num_classes: int = 1, **kw) -> VGG:
    return _vgg(16, True, num_classes, **kw)


@register_model
def vgg19_bn(num_classes: int = 1, **kw) -> VGG:
    return _vgg(19, True, num_classes, **kw)
