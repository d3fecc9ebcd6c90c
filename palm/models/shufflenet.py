"""ShuffleNet v2 (Ma et al. 2018, arXiv:1807.11164): channel split, branch, concat, shuffle.

A unit of stride 1 passes half its channels through untouched and sends the other half
through 1x1 conv, 3x3 depthwise conv, 1x1 conv; the halves are concatenated and the channels
shuffled so information crosses between the halves. The first unit of each stage (stride 2)
feeds the whole input to two branches, doubling the width while halving the resolution.

Parameter names follow `paddle.vision.models.ShuffleNetV2` (`_conv1`, `2_1._conv_dw_1`, ...,
`_last_conv`, `_fc`), so its ImageNet weights load.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead, ConvBNAct
from palm.models.registry import register_model


def channel_shuffle(x: paddle.Tensor, groups: int) -> paddle.Tensor:
    """Interleave the channels of `groups` equal groups (section 2 of ShuffleNet v1)."""
    _, c, h, w = x.shape
    # -1 for the batch: it is unknown when exported with a dynamic batch size
    x = paddle.reshape(x, [-1, groups, c // groups, h, w])
    return paddle.reshape(paddle.transpose(x, [0, 2, 1, 3, 4]), [-1, c, h, w])


class ShuffleUnit(nn.Layer):
    """Stride-1 unit (Fig. 3c): keep one half, transform the other, concat, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self._conv_pw = ConvBNAct(half, half, 1)
        self._conv_dw = ConvBNAct(half, half, 3, groups=half, act=None)
        self._conv_linear = ConvBNAct(half, half, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        kept, x = paddle.split(x, 2, axis=1)
        x = self._conv_linear(self._conv_dw(self._conv_pw(x)))
        return channel_shuffle(paddle.concat([kept, x], axis=1), 2)


class ShuffleDownUnit(nn.Layer):
    """Stride-2 unit (Fig. 3d): two branches over the whole input, each giving half the output."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self._conv_dw_1 = ConvBNAct(in_channels, in_channels, 3, 2, groups=in_channels, act=None)
        self._conv_linear_1 = ConvBNAct(in_channels, half, 1)
        self._conv_pw_2 = ConvBNAct(in_channels, half, 1)
        self._conv_dw_2 = ConvBNAct(half, half, 3, 2, groups=half, act=None)
        self._conv_linear_2 = ConvBNAct(half, half, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        left = self._conv_linear_1(self._conv_dw_1(x))
        right = self._conv_linear_2(self._conv_dw_2(self._conv_pw_2(x)))
        return channel_shuffle(paddle.concat([left, right], axis=1), 2)


STAGE_REPEATS = [4, 8, 4]  # units per stage (stages 2-4), Table 5 of the paper
# Table 5: width multiplier -> output channels of stem, stages 2-4 and the last 1x1 conv.
SHUFFLENET_V2_WIDTHS: dict[float, list[int]] = {
    0.5: [24, 48, 96, 192, 1024],
    1.0: [24, 116, 232, 464, 1024],
    1.5: [24, 176, 352, 704, 1024],
}


class ShuffleNetV2(nn.Layer):
    """ShuffleNet v2: 3x3/2 conv, 3x3/2 max pool, three stages of units, 1x1 conv, pool, linear.

    Args:
        scale: width multiplier, a key of SHUFFLENET_V2_WIDTHS.
        num_classes: outputs (1 = one logit); <= 0 returns the features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.

    Example:
        >>> ShuffleNetV2(1.0, num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(self, scale: float = 1.0, num_classes: int = 1, with_pool: bool = True):
        super().__init__()
        if scale not in SHUFFLENET_V2_WIDTHS:
            raise ValueError(f"shufflenet_v2: scale {scale} not in {sorted(SHUFFLENET_V2_WIDTHS)}")
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("shufflenet_v2", num_classes, with_pool)
        stem, *stage_channels, last = SHUFFLENET_V2_WIDTHS[scale]
        self._conv1 = ConvBNAct(3, stem, 3, stride=2)
        self._max_pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self._unit_names = []
        in_channels = stem
        for stage, (channels, repeats) in enumerate(zip(stage_channels, STAGE_REPEATS), start=2):
            for i in range(repeats):
                unit = ShuffleDownUnit(in_channels, channels) if i == 0 else ShuffleUnit(channels)
                self.add_sublayer(f"{stage}_{i + 1}", unit)  # paddle.vision's names
                self._unit_names.append(f"{stage}_{i + 1}")
            in_channels = channels
        self._last_conv = ConvBNAct(in_channels, last, 1)
        self._fc = nn.Linear(last, num_classes) if num_classes > 0 else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self._max_pool(self._conv1(x))
        for name in self._unit_names:
            x = getattr(self, name)(x)
        return self.classifier_head(self._last_conv(x), self._fc)


@register_model
def shufflenet_v2_x1_0(num_classes: int = 1, **kw) -> ShuffleNetV2:
    return ShuffleNetV2(1.0, num_classes=num_classes, **kw)
