"""Inception-v3 (Szegedy et al. 2015, arXiv:1512.00567).

The stem reduces 299 px to 35x35; three Inception-A blocks (5x5 factorized into two 3x3),
a grid reduction (B), four Inception-C blocks at 17x17 with 7x7 convs factorized into 1x7
and 7x1, a second grid reduction (D), and two Inception-E blocks at 8x8 whose 3x3 branches
split into parallel 1x3 and 3x1 convs. Every conv is followed by BN and ReLU.

Parameter names follow `paddle.vision.models.InceptionV3` (`inception_stem.conv_1a_3x3`,
`inception_block_list.N.branch7x7_2`, `fc`), so its ImageNet weights load. The auxiliary
classifier (section 4 of the paper, on the last 17x17 block, with BN) is optional
(`aux_logits=True`, which paddle.vision does not have) and only runs in training, where
`forward` returns `(main, aux)`.

The unpadded stem convs and grid reductions need at least 75 px; smaller inputs are resized
(bicubic) to 75 px first, so the network also runs on the 64 px images of quick experiments.
Bicubic rather than bilinear: Paddle Inference with oneDNN (the export path) failed here on
the bilinear and nearest interpolation ops ("ConvertPirAttribute2RuntimeAttribute not support").
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from palm.models.layers import AuxLogitsNet, ConvBNAct
from palm.models.registry import register_model

MIN_INPUT_SIZE = 75


class InceptionStem(nn.Layer):
    """3x3/2, 3x3, 3x3 (padded), max pool, 1x1, 3x3, max pool: 3 x 299^2 -> 192 x 35^2."""

    def __init__(self):
        super().__init__()
        self.conv_1a_3x3 = ConvBNAct(3, 32, 3, stride=2, padding=0)
        self.conv_2a_3x3 = ConvBNAct(32, 32, 3, padding=0)
        self.conv_2b_3x3 = ConvBNAct(32, 64, 3)
        self.max_pool = nn.MaxPool2D(kernel_size=3, stride=2)
        self.conv_3b_1x1 = ConvBNAct(64, 80, 1)
        self.conv_4a_3x3 = ConvBNAct(80, 192, 3, padding=0)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.max_pool(self.conv_2b_3x3(self.conv_2a_3x3(self.conv_1a_3x3(x))))
        return self.max_pool(self.conv_4a_3x3(self.conv_3b_1x1(x)))


def _avg_pool_3x3() -> nn.AvgPool2D:
    # padded zeros count in the average (exclusive=False), as in paddle.vision
    return nn.AvgPool2D(kernel_size=3, stride=1, padding=1, exclusive=False)


class InceptionA(nn.Layer):
    """35x35 block (Fig. 5): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBNAct(in_channels, 64, 1)
        self.branch5x5_1 = ConvBNAct(in_channels, 48, 1)
        self.branch5x5_2 = ConvBNAct(48, 64, 5)
        self.branch3x3dbl_1 = ConvBNAct(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNAct(64, 96, 3)
        self.branch3x3dbl_3 = ConvBNAct(96, 96, 3)
        self.branch_pool = _avg_pool_3x3()
        self.branch_pool_conv = ConvBNAct(in_channels, pool_features, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool_conv(self.branch_pool(x)),
        ], axis=1)


class InceptionB(nn.Layer):
    """Grid reduction 35 -> 17 (Fig. 10): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBNAct(in_channels, 384, 3, stride=2, padding=0)
        self.branch3x3dbl_1 = ConvBNAct(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBNAct(64, 96, 3)
        self.branch3x3dbl_3 = ConvBNAct(96, 96, 3, stride=2, padding=0)
        self.branch_pool = nn.MaxPool2D(kernel_size=3, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(x),
        ], axis=1)


class InceptionC(nn.Layer):
    """17x17 block (Fig. 6) with 7x7 convs factorized into 1x7 and 7x1; `c7` inner channels."""

    def __init__(self, in_channels: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBNAct(in_channels, 192, 1)
        self.branch7x7_1 = ConvBNAct(in_channels, c7, 1)
        self.branch7x7_2 = ConvBNAct(c7, c7, (1, 7))
        self.branch7x7_3 = ConvBNAct(c7, 192, (7, 1))
        self.branch7x7dbl_1 = ConvBNAct(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBNAct(c7, c7, (7, 1))
        self.branch7x7dbl_3 = ConvBNAct(c7, c7, (1, 7))
        self.branch7x7dbl_4 = ConvBNAct(c7, c7, (7, 1))
        self.branch7x7dbl_5 = ConvBNAct(c7, 192, (1, 7))
        self.branch_pool = _avg_pool_3x3()
        self.branch_pool_conv = ConvBNAct(in_channels, 192, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return paddle.concat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            self.branch7x7dbl_5(self.branch7x7dbl_4(dbl)),
            self.branch_pool_conv(self.branch_pool(x)),
        ], axis=1)


class InceptionD(nn.Layer):
    """Grid reduction 17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max pool/2."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBNAct(in_channels, 192, 1)
        self.branch3x3_2 = ConvBNAct(192, 320, 3, stride=2, padding=0)
        self.branch7x7x3_1 = ConvBNAct(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBNAct(192, 192, (1, 7))
        self.branch7x7x3_3 = ConvBNAct(192, 192, (7, 1))
        self.branch7x7x3_4 = ConvBNAct(192, 192, 3, stride=2, padding=0)
        self.branch_pool = nn.MaxPool2D(kernel_size=3, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b7 = self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))
        return paddle.concat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(b7),
            self.branch_pool(x),
        ], axis=1)


class InceptionE(nn.Layer):
    """8x8 block (Fig. 7): the 3x3 branches fork into parallel 1x3 and 3x1 convs."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch1x1 = ConvBNAct(in_channels, 320, 1)
        self.branch3x3_1 = ConvBNAct(in_channels, 384, 1)
        self.branch3x3_2a = ConvBNAct(384, 384, (1, 3))
        self.branch3x3_2b = ConvBNAct(384, 384, (3, 1))
        self.branch3x3dbl_1 = ConvBNAct(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBNAct(448, 384, 3)
        self.branch3x3dbl_3a = ConvBNAct(384, 384, (1, 3))
        self.branch3x3dbl_3b = ConvBNAct(384, 384, (3, 1))
        self.branch_pool = _avg_pool_3x3()
        self.branch_pool_conv = ConvBNAct(in_channels, 192, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return paddle.concat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool_conv(self.branch_pool(x)),
        ], axis=1)


# Table 1 of the paper as paddle.vision builds it: (block type, input channels, extra argument:
# pool features for A, inner 7x7 channels for C). Output: 2048 channels.
INCEPTION_V3_BLOCKS: list[tuple[type[nn.Layer], int, int | None]] = [
    (InceptionA, 192, 32), (InceptionA, 256, 64), (InceptionA, 288, 64),
    (InceptionB, 288, None),
    (InceptionC, 768, 128), (InceptionC, 768, 160), (InceptionC, 768, 160), (InceptionC, 768, 192),
    (InceptionD, 768, None),
    (InceptionE, 1280, None), (InceptionE, 2048, None),
]
AUX_TAP = 7  # the auxiliary classifier reads the last 17x17 block (the fourth C)


class InceptionAux(nn.Layer):
    """Pool to 5x5, 1x1 conv to 128, 5x5 conv to 768 (both with BN), linear.

    The paper pools 17x17 with a 5x5/3 average pool; an adaptive pool to 5x5 gives the same
    shape at any input size.
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv0 = ConvBNAct(in_channels, 128, 1)
        self.conv1 = ConvBNAct(128, 768, 5, padding=0)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.conv1(self.conv0(F.adaptive_avg_pool2d(x, 5)))
        return self.fc(paddle.flatten(x, 1))


class InceptionV3(AuxLogitsNet):
    """Inception-v3 for 299 px (any size works; below 75 px the input is resized to 75).

    Args:
        num_classes: outputs (1 = one logit); <= 0 returns the 2048-channel features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        aux_logits: build the auxiliary classifier (used in training only).
        dropout: drop probability before the last linear layer (0.2, as in paddle.vision).

    Example:
        >>> InceptionV3(num_classes=1)(paddle.rand([2, 3, 299, 299])).shape
        [2, 1]
    """

    def __init__(
        self,
        num_classes: int = 1,
        with_pool: bool = True,
        aux_logits: bool = False,
        dropout: float = 0.2,
    ):
        super().__init__("inception_v3", num_classes, with_pool, aux_logits, dropout)
        self.inception_stem = InceptionStem()
        self.inception_block_list = nn.LayerList([
            block(channels) if arg is None else block(channels, arg)
            for block, channels, arg in INCEPTION_V3_BLOCKS
        ])
        self.fc = None
        if num_classes > 0:
            # paddle.vision's init, so its weights give the same outputs
            bound = 1.0 / math.sqrt(2048)
            init = nn.initializer.Uniform(-bound, bound)
            self.fc = nn.Linear(2048, num_classes, weight_attr=paddle.ParamAttr(initializer=init))
        if aux_logits:
            tap_channels = INCEPTION_V3_BLOCKS[AUX_TAP + 1][1]  # the next block's input
            self.aux_head = InceptionAux(tap_channels, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor | tuple[paddle.Tensor, paddle.Tensor]:
        if min(x.shape[2:]) < MIN_INPUT_SIZE:
            x = F.interpolate(x, size=[max(s, MIN_INPUT_SIZE) for s in x.shape[2:]], mode="bicubic")
        x = self.inception_stem(x)
        with_aux = self.aux_logits and self.training
        aux = None
        for i, block in enumerate(self.inception_block_list):
            x = block(x)
            if with_aux and i == AUX_TAP:
                aux = self.aux_head(x)
        out = self.classifier_head(x, self.fc)
        return (out, aux) if with_aux else out


@register_model
def inception_v3(num_classes: int = 1, **kw) -> InceptionV3:
    """Inception-v3 with paddle.vision parameter names; `aux_logits=True` adds the aux head."""
    return InceptionV3(num_classes=num_classes, **kw)
