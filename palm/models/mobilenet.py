"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861) and v2 (Sandler et al. 2018, 1801.04381).

v1 stacks depthwise separable convolutions (a 3x3 depthwise conv, then a 1x1 pointwise conv,
each with BN and ReLU) and scales every width by the multiplier `scale`. v2 uses inverted
residuals: a 1x1 expansion, a 3x3 depthwise conv (ReLU6 after both) and a linear 1x1
projection, with the shortcut only where the shape is kept.

Parameter names follow `paddle.vision.models.MobileNetV1` / `MobileNetV2` (`conv1`,
`conv2_1._depthwise_conv.0`, ..., `features.N.conv.M`, `classifier.1`), so their ImageNet
weights load.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead, ConvBNAct, make_divisible
from palm.models.registry import register_model


class DepthwiseSeparable(nn.Layer):
    """3x3 depthwise conv (with `stride`) then 1x1 pointwise conv, BN + ReLU after each."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self._depthwise_conv = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self._pointwise_conv = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self._pointwise_conv(self._depthwise_conv(x))


# Table 1 of the v1 paper after the 3x3/2 stem conv of 32 channels: (name, output
# channels at scale 1, stride). The names are paddle.vision's.
MOBILENET_V1_CFG: list[tuple[str, int, int]] = [
    ("conv2_1", 64, 1), ("conv2_2", 128, 2),
    ("conv3_1", 128, 1), ("conv3_2", 256, 2),
    ("conv4_1", 256, 1), ("conv4_2", 512, 2),
    ("conv5_1", 512, 1), ("conv5_2", 512, 1), ("conv5_3", 512, 1),
    ("conv5_4", 512, 1), ("conv5_5", 512, 1), ("conv5_6", 1024, 2),
    ("conv6", 1024, 1),
]


class MobileNetV1(nn.Layer):
    """MobileNet v1 with width multiplier `scale`.

    Args:
        scale: width multiplier (alpha in the paper: 1.0, 0.75, 0.5, 0.25).
        num_classes: outputs (1 = one logit); <= 0 returns the features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.

    Example:
        >>> MobileNetV1(num_classes=10)(paddle.rand([2, 3, 64, 64])).shape
        [2, 10]
    """

    def __init__(self, scale: float = 1.0, num_classes: int = 1, with_pool: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("mobilenet_v1", num_classes, with_pool)
        in_channels = int(32 * scale)
        self.conv1 = ConvBNAct(3, in_channels, 3, stride=2)
        self._block_names = []
        for name, channels, stride in MOBILENET_V1_CFG:
            out_channels = int(channels * scale)
            self.add_sublayer(name, DepthwiseSeparable(in_channels, out_channels, stride))
            self._block_names.append(name)
            in_channels = out_channels
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.conv1(x)
        for name in self._block_names:
            x = getattr(self, name)(x)
        return self.classifier_head(x, self.fc)


class InvertedResidual(nn.Layer):
    """1x1 expand (skipped when `expand_ratio` is 1), 3x3 depthwise, linear 1x1 project.

    ReLU6 after the first two; the projection has no activation ("linear bottleneck"), and the
    input is added back when stride is 1 and the width is unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_shortcut = stride == 1 and in_channels == out_channels
        layers: list[nn.Layer] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            nn.Conv2D(hidden, out_channels, 1, bias_attr=False),
            nn.BatchNorm2D(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


# Table 2 of the v2 paper: (expansion t, output channels c, repeats n, first stride s).
MOBILENET_V2_CFG: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(nn.Layer):
    """MobileNet v2 with width multiplier `scale`.

    Args:
        scale: width multiplier; the last 1x1 conv keeps 1280 channels for scale <= 1.
        num_classes: outputs (1 = one logit); <= 0 returns the features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        dropout: drop probability before the classifier (0.2, as in paddle.vision/torchvision).

    Example:
        >>> MobileNetV2(num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(
        self, scale: float = 1.0, num_classes: int = 1, with_pool: bool = True, dropout: float = 0.2
    ):
        super().__init__()
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("mobilenet_v2", num_classes, with_pool)
        in_channels = make_divisible(32 * scale)
        last_channels = make_divisible(1280 * max(1.0, scale))
        features: list[nn.Layer] = [ConvBNAct(3, in_channels, 3, stride=2, act=nn.ReLU6)]
        for t, c, n, s in MOBILENET_V2_CFG:
            out_channels = make_divisible(c * scale)
            for i in range(n):
                features.append(InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t))
                in_channels = out_channels
        features.append(ConvBNAct(in_channels, last_channels, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        # dropout inside `classifier`, as in paddle.vision: its linear layer is `classifier.1`
        self.classifier = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
            if num_classes > 0 else None
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier_head(self.features(x), self.classifier)


@register_model
def mobilenet_v1(num_classes: int = 1, **kw) -> MobileNetV1:
    """MobileNet v1 (`scale` = width multiplier) with paddle.vision parameter names."""
    return MobileNetV1(num_classes=num_classes, **kw)


@register_model
def mobilenet_v2(num_classes: int = 1, **kw) -> MobileNetV2:
    """MobileNet v2 (`scale` = width multiplier) with paddle.vision parameter names."""
    return MobileNetV2(num_classes=num_classes, **kw)
