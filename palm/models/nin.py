"""Network in Network (Lin et al. 2013, arXiv:1312.4400), the ImageNet model.

An mlpconv block is a spatial conv followed by two 1x1 convs ("cccp" layers), each with a
ReLU: a small MLP slid over the image. There are no fully connected layers: the last 1x1
conv gives one map per class and global average pooling turns the maps into logits.

Layout: the authors' ImageNet model released with the paper (Caffe Model Zoo
"NIN-Imagenet"): mlpconv 96 (11x11/4), 256 (5x5), 384 (3x3), each followed by a 3x3/2 max
pool (ceil mode, as in Caffe), dropout 0.5, then mlpconv 1024 (3x3) whose last 1x1 conv
gives the class maps. Departures: the last 1x1 conv has no ReLU (a ReLU'd single logit could
never fall below 0, i.e. a probability below 0.5), and the final average pool is adaptive
(6x6 in Caffe at 224 px), so inputs from 64 px up work.
"""
from __future__ import annotations

from itertools import pairwise

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model


def mlpconv(
    in_channels: int, channels: list[int], kernel_size: int, stride: int = 1
) -> nn.Sequential:
    """kxk conv to channels[0], then a 1x1 conv to each later width; ReLU after each."""
    padding = kernel_size // 2 if stride == 1 else 0  # the strided first conv is unpadded
    layers: list[nn.Layer] = [
        nn.Conv2D(in_channels, channels[0], kernel_size, stride=stride, padding=padding),
        nn.ReLU(),
    ]
    for c_in, c_out in pairwise(channels):
        layers += [nn.Conv2D(c_in, c_out, 1), nn.ReLU()]
    return nn.Sequential(*layers)


# (kernel, stride, widths of the conv and its 1x1 convs) per mlpconv block before the head.
NIN_CFG: list[tuple[int, int, list[int]]] = [
    (11, 4, [96, 96, 96]),
    (5, 1, [256, 256, 256]),
    (3, 1, [384, 384, 384]),
]
# The fourth mlpconv: a 3x3 conv and one 1x1 conv of this width, then the class conv.
HEAD_WIDTH = 1024


class NiN(nn.Layer):
    """Network in Network for inputs of 64 px and up.

    Args:
        num_classes: outputs (1 = one logit); <= 0 returns the 1024-channel features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        dropout: drop probability before the last mlpconv block (0.5 in the paper).

    Example:
        >>> NiN(num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(self, num_classes: int = 1, with_pool: bool = True, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        # the class maps are averaged into the logits
        self.classifier_head = ClassifierHead("nin", num_classes, with_pool, maps_first=True)
        layers: list[nn.Layer] = []
        in_channels = 3
        for kernel, stride, widths in NIN_CFG:
            layers += [
                mlpconv(in_channels, widths, kernel, stride),
                nn.MaxPool2D(3, 2, ceil_mode=True),
            ]
            in_channels = widths[-1]
        layers += [nn.Dropout(dropout), mlpconv(in_channels, [HEAD_WIDTH, HEAD_WIDTH], 3)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2D(HEAD_WIDTH, num_classes, 1) if num_classes > 0 else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier_head(self.features(x), self.classifier)


@register_model
def nin(num_classes: int = 1, **kw) -> NiN:
    """Network in Network, the authors' ImageNet layout."""
    return NiN(num_classes=num_classes, **kw)
