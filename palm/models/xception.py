"""Xception (Chollet 2017, arXiv:1610.02357): depthwise separable convs with residual links.

Entry flow (two plain 3x3 convs, three blocks that halve the resolution), middle flow
(eight blocks of three separable convs at 728 channels), exit flow (one more reducing block,
then separable convs to 1536 and 2048 channels), global average pooling, linear. A separable
conv here is a 3x3 depthwise conv followed by a 1x1 pointwise conv, with no activation
between them (the paper found that best, section 4.7). As in the paper (Fig. 5), every conv
is followed by BN and the blocks of the entry and exit flows have a strided 1x1 projection
shortcut. Layout and widths as in the Keras reference model the paper's results come from.
"""
from __future__ import annotations

from itertools import pairwise

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model


def separable_conv(in_channels: int, out_channels: int) -> list[nn.Layer]:
    """3x3 depthwise conv, 1x1 pointwise conv, BN (both convs without bias)."""
    return [
        nn.Conv2D(in_channels, in_channels, 3, padding=1, groups=in_channels, bias_attr=False),
        nn.Conv2D(in_channels, out_channels, 1, bias_attr=False),
        nn.BatchNorm2D(out_channels),
    ]


class XceptionBlock(nn.Layer):
    """`reps` ReLU + separable-conv units, a 3x3/2 max pool if `stride` 2, plus a shortcut.

    The width changes at the first unit (`grow_first`) or at the last one (exit flow). The
    shortcut is the identity, or a strided 1x1 conv + BN where the shape changes. The first
    block of the entry flow starts without a ReLU: its input has just passed one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reps: int,
        stride: int,
        start_with_relu: bool,
        grow_first: bool,
    ):
        super().__init__()
        inner = out_channels if grow_first else in_channels
        widths = [in_channels] + [inner] * (reps - 1) + [out_channels]
        layers: list[nn.Layer] = []
        for i, (c_in, c_out) in enumerate(pairwise(widths)):
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU())
            layers += separable_conv(c_in, c_out)
        if stride != 1:
            layers.append(nn.MaxPool2D(3, stride, padding=1))
        self.rep = nn.Sequential(*layers)
        self.skip = None
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias_attr=False),
                nn.BatchNorm2D(out_channels),
            )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.rep(x) + (x if self.skip is None else self.skip(x))


# Fig. 5 of the paper: (input channels, output channels, separable convs, stride,
# start with ReLU, widen at the first conv) for the entry, middle (x8) and exit blocks.
XCEPTION_BLOCKS: list[tuple[int, int, int, int, bool, bool]] = [
    (64, 128, 2, 2, False, True),
    (128, 256, 2, 2, True, True),
    (256, 728, 2, 2, True, True),
    *[(728, 728, 3, 1, True, True)] * 8,
    (728, 1024, 2, 2, True, False),
]


class Xception(nn.Layer):
    """Xception for inputs of 64 px and up (299 px in the paper).

    Args:
        num_classes: outputs (1 = one logit); <= 0 returns the 2048-channel features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.

    Example:
        >>> Xception(num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(self, num_classes: int = 1, with_pool: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("xception", num_classes, with_pool)
        # entry-flow stem: two unpadded 3x3 convs, the first with stride 2
        self.stem = nn.Sequential(
            nn.Conv2D(3, 32, 3, stride=2, bias_attr=False), nn.BatchNorm2D(32), nn.ReLU(),
            nn.Conv2D(32, 64, 3, bias_attr=False), nn.BatchNorm2D(64), nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[XceptionBlock(*row) for row in XCEPTION_BLOCKS])
        # end of the exit flow: separable convs to 1536 and 2048, each with BN + ReLU
        self.head = nn.Sequential(
            *separable_conv(1024, 1536), nn.ReLU(), *separable_conv(1536, 2048), nn.ReLU()
        )
        self.fc = nn.Linear(2048, num_classes) if num_classes > 0 else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier_head(self.head(self.blocks(self.stem(x))), self.fc)


@register_model
def xception(num_classes: int = 1, **kw) -> Xception:
    return Xception(num_classes=num_classes, **kw)
