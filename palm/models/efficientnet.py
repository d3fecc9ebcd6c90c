"""EfficientNet (Tan & Le 2019, arXiv:1905.11946): MBConv blocks scaled by compound coefficients.

The B0 baseline (Table 1 of the paper) stacks MBConv blocks: a 1x1 expansion, a depthwise
conv, Squeeze-and-Excitation, a linear 1x1 projection, Swish activations, and a residual
link with stochastic depth where the shape is kept. B1..B7 multiply the widths by `width`,
the block repeats by `depth` and the input size by `resolution` (section 3.3); those
coefficients are a row of EFFICIENTNET_PARAMS, so a larger variant is one row away.
Widths are rounded to multiples of 8 and repeats up, as in the authors' reference code.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn

from palm.models.layers import (ClassifierHead, ConvBNAct, SqueezeExcite, StochasticDepth,
                                make_divisible)
from palm.models.registry import register_model


class MBConv(nn.Layer):
    """Mobile inverted bottleneck with SE (Fig. 2 of MnasNet, arXiv:1807.11626), Swish activations.

    SE squeezes to a quarter of the block's input channels, as in the reference code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        drop_path: float,
    ):
        super().__init__()
        hidden = in_channels * expand_ratio
        layers: list[nn.Layer] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act=nn.Silu))
        layers += [
            ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act=nn.Silu),
            SqueezeExcite(hidden, reduced_channels=max(1, in_channels // 4), act=nn.Silu),
            ConvBNAct(hidden, out_channels, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_path) if self.use_shortcut else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.block(x)
        return x + self.drop_path(out) if self.use_shortcut else out


# Table 1 of the paper (B0): (expansion, kernel, first stride, output channels, repeats) per stage.
B0_STAGES: list[tuple[int, int, int, int, int]] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280

# Compound coefficients of the reference code: variant -> (width, depth, resolution, dropout).
EFFICIENTNET_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
}


class EfficientNet(nn.Layer):
    """EfficientNet of one EFFICIENTNET_PARAMS row.

    Args:
        variant: a key of EFFICIENTNET_PARAMS ("b0" ...).
        num_classes: outputs (1 = one logit); <= 0 returns the features of the last 1x1 conv.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        drop_path: stochastic-depth rate of the last block, rising linearly from 0 at the
            first (0.2 in the reference code).

    The row's resolution is the input size the variant was designed for (`image_size` in
    its config); any size from 32 px up works.

    Example:
        >>> EfficientNet("b0", num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(
        self, variant: str = "b0", num_classes: int = 1, with_pool: bool = True, drop_path: float = 0.2
    ):
        super().__init__()
        if variant not in EFFICIENTNET_PARAMS:
            raise ValueError(
                f"efficientnet: variant {variant!r} not in {', '.join(EFFICIENTNET_PARAMS)}"
            )
        width, depth, _, dropout = EFFICIENTNET_PARAMS[variant]
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead(
            "efficientnet", num_classes, with_pool, dropout=dropout
        )
        in_channels = make_divisible(STEM_CHANNELS * width)
        self.stem = ConvBNAct(3, in_channels, 3, stride=2, act=nn.Silu)
        stages = [
            (t, k, s, make_divisible(c * width), math.ceil(n * depth)) for t, k, s, c, n in B0_STAGES
        ]
        total = sum(n for *_, n in stages)
        blocks = []
        for t, k, s, c, n in stages:
            for i in range(n):
                rate = drop_path * len(blocks) / total
                blocks.append(MBConv(in_channels, c, k, s if i == 0 else 1, t, rate))
                in_channels = c
        self.blocks = nn.Sequential(*blocks)
        head_channels = make_divisible(HEAD_CHANNELS * width)
        self.head = ConvBNAct(in_channels, head_channels, 1, act=nn.Silu)
        self.fc = nn.Linear(head_channels, num_classes) if num_classes > 0 else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier_head(self.head(self.blocks(self.stem(x))), self.fc)


@register_model
def efficientnet_b0(num_classes: int = 1, **kw) -> EfficientNet:
    return EfficientNet("b0", num_classes=num_classes, **kw)
