"""GoogLeNet / Inception-v1 (Szegedy et al. 2014, arXiv:1409.4842).

Follows `paddle.vision.models.GoogLeNet` (itself PaddleClas's) layer for layer, with its
parameter names, so its ImageNet weights load and compute the same function. That network
departs from the paper in ways kept here for that reason: convolutions have no bias, there
is no LRN, and ReLU is applied only to each Inception block's concatenated output (the paper
also has ReLU after the stem convs and after the 1x1 reductions).

The two auxiliary classifiers (after 4a and 4d) are optional (`aux_logits=True`) and only
run in training, where `forward` returns `(main, aux1, aux2)`; the paper weights their loss
0.3. They pool adaptively to 3 x 3, which keeps paddle.vision's shapes (128 x 3 x 3 = 1152
inputs to the first linear) at any input size; the paper's ReLUs are kept in both heads.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from palm.models.layers import AuxLogitsNet
from palm.models.registry import register_model

MIN_INPUT_SIZE = 61  # smallest side for which the fourth 3x3/2 max pool has a 3x3 input


class ConvLayer(nn.Layer):
    """Bias-free 'same' conv, no activation; wrapped so names read `<name>._conv.weight`.

    `relu_input` says whether the conv's input has passed a ReLU. Paddle's default conv init
    (He normal, gain sqrt(2), arXiv:1502.01852) assumes it has; here the stem and the 1x1
    reductions feed convs without one, and with that default the logits start around 20
    and training at lr 1e-3 diverges. Gain 1 for those convs keeps activations at unit scale.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, relu_input: bool = True
    ):
        super().__init__()
        init = nn.initializer.KaimingNormal(nonlinearity="relu" if relu_input else "linear")
        self._conv = nn.Conv2D(
            in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2,
            weight_attr=paddle.ParamAttr(initializer=init), bias_attr=False,
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self._conv(x)


class Inception(nn.Layer):
    """Four branches concatenated: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1."""

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c3_reduce: int,
        c3: int,
        c5_reduce: int,
        c5: int,
        proj: int,
        relu_input: bool = True,
    ):
        super().__init__()
        self.out_channels = c1 + c3 + c5 + proj
        self._conv1 = ConvLayer(in_channels, c1, 1, relu_input=relu_input)
        self._conv3r = ConvLayer(in_channels, c3_reduce, 1, relu_input=relu_input)
        self._conv3 = ConvLayer(c3_reduce, c3, 3, relu_input=False)
        self._conv5r = ConvLayer(in_channels, c5_reduce, 1, relu_input=relu_input)
        self._conv5 = ConvLayer(c5_reduce, c5, 5, relu_input=False)
        self._pool = nn.MaxPool2D(kernel_size=3, stride=1, padding=1)
        self._convprj = ConvLayer(in_channels, proj, 1, relu_input=relu_input)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        branches = [
            self._conv1(x),
            self._conv3(self._conv3r(x)),
            self._conv5(self._conv5r(x)),
            self._convprj(self._pool(x)),
        ]
        return F.relu(paddle.concat(branches, axis=1))


# Table 1 of the paper: (block, 3x3/2 max pool before it, 1x1, 3x3 reduce, 3x3, 5x5 reduce,
# 5x5, pool proj). Input channels follow from the previous row.
INCEPTION_CFG: list[tuple[str, bool, int, int, int, int, int, int]] = [
    ("3a", False, 64, 96, 128, 16, 32, 32),
    ("3b", False, 128, 128, 192, 32, 96, 64),
    ("4a", True, 192, 96, 208, 16, 48, 64),
    ("4b", False, 160, 112, 224, 24, 64, 64),
    ("4c", False, 128, 128, 256, 24, 64, 64),
    ("4d", False, 112, 144, 288, 32, 64, 64),
    ("4e", False, 256, 160, 320, 32, 128, 128),
    ("5a", True, 256, 160, 320, 32, 128, 128),
    ("5b", False, 384, 192, 384, 48, 128, 128),
]
AUX_TAPS = ("4a", "4d")  # the auxiliary classifiers read these blocks' outputs


class GoogLeNet(AuxLogitsNet):
    """Inception-v1 for inputs of 61 px and up.

    Args:
        num_classes: outputs (1 = one logit); <= 0 returns the 1024-channel features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        aux_logits: build the two auxiliary classifiers (used in training only).
        dropout: drop probability before the last linear layer (0.4 in the paper).

    Example:
        >>> GoogLeNet(num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(
        self,
        num_classes: int = 1,
        with_pool: bool = True,
        aux_logits: bool = False,
        dropout: float = 0.4,
    ):
        super().__init__("googlenet", num_classes, with_pool, aux_logits, dropout)
        self._conv = ConvLayer(3, 64, 7, stride=2, relu_input=False)
        self._pool = nn.MaxPool2D(kernel_size=3, stride=2)
        self._conv_1 = ConvLayer(64, 64, 1, relu_input=False)
        self._conv_2 = ConvLayer(64, 192, 3, relu_input=False)
        self._blocks: list[tuple[str, bool]] = []
        in_channels = 192
        aux_channels = []
        for i, (name, pool_before, *widths) in enumerate(INCEPTION_CFG):
            # Only the first block reads the (ReLU-free) stem.
            block = Inception(in_channels, *widths, relu_input=i > 0)
            self.add_sublayer(f"_ince{name}", block)
            self._blocks.append((name, pool_before))
            in_channels = block.out_channels
            if name in AUX_TAPS:
                aux_channels.append(in_channels)
        self._fc_out = nn.Linear(in_channels, num_classes) if num_classes > 0 else None
        if aux_logits:
            # Flat attribute names, as in paddle.vision, so its aux-head weights load too.
            for i, channels in enumerate(aux_channels, start=1):
                self.add_sublayer(f"_conv_o{i}", ConvLayer(channels, 128, 1))
                self.add_sublayer(f"_fc_o{i}", nn.Linear(128 * 3 * 3, 1024))
                self.add_sublayer(f"_drop_o{i}", nn.Dropout(0.7, mode="downscale_in_infer"))
                self.add_sublayer(f"_out{i}", nn.Linear(1024, num_classes))

    def _aux_head(self, i: int, x: paddle.Tensor) -> paddle.Tensor:
        x = F.adaptive_avg_pool2d(x, 3)
        x = F.relu(getattr(self, f"_conv_o{i}")(x))
        x = F.relu(getattr(self, f"_fc_o{i}")(paddle.flatten(x, 1)))
        return getattr(self, f"_out{i}")(getattr(self, f"_drop_o{i}")(x))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor | tuple[paddle.Tensor, ...]:
        # Checked in dygraph only: in a static graph, unknown sizes are not numbers.
        if paddle.in_dynamic_mode() and min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"googlenet needs inputs of at least {MIN_INPUT_SIZE} px, got {x.shape[2:]}"
            )
        x = self._pool(self._conv(x))
        x = self._pool(self._conv_2(self._conv_1(x)))
        with_aux = self.aux_logits and self.training
        taps = []
        for name, pool_before in self._blocks:
            if pool_before:
                x = self._pool(x)
            x = getattr(self, f"_ince{name}")(x)
            if with_aux and name in AUX_TAPS:
                taps.append(x)
        out = self.classifier_head(x, self._fc_out)
        if with_aux:
            return (out, *(self._aux_head(i, t) for i, t in enumerate(taps, start=1)))
        return out


@register_model
def googlenet(num_classes: int = 1, **kw) -> GoogLeNet:
    """GoogLeNet with paddle.vision parameter names; `aux_logits=True` adds the aux heads."""
    return GoogLeNet(num_classes=num_classes, **kw)
