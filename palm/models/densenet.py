"""DenseNet-BC (Huang et al. 2016, arXiv:1608.06993): dense blocks joined by transitions.

Every layer of a dense block reads the concatenation of all earlier feature maps and adds
`growth_rate` new ones (BN-ReLU-1x1 conv to `bn_size * growth_rate` channels, then
BN-ReLU-3x3 conv); a transition halves the channels (compression 0.5) with a 1x1 conv and
the resolution with a 2x2 average pool.

Parameter names follow `paddle.vision.models.DenseNet` (`conv1_func`, `db_conv_2.conv2_1
.bn_ac_func1`, `tr_conv2_blk.conv_ac_func`, `batch_norm`, `out`), so its ImageNet weights load.
"""
from __future__ import annotations

import math
from typing import Sequence

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model


class BNReLUConv(nn.Layer):
    """The pre-activation unit of DenseNet: BN, ReLU, then a bias-free conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self._batch_norm = nn.BatchNorm2D(in_channels)
        self.relu = nn.ReLU()
        self._conv = nn.Conv2D(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias_attr=False
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self._conv(self.relu(self._batch_norm(x)))


class DenseLayer(nn.Layer):
    """Bottleneck (1x1) and 3x3 units; returns the input with `growth_rate` channels appended."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, dropout: float):
        super().__init__()
        self.bn_ac_func1 = BNReLUConv(in_channels, bn_size * growth_rate, 1)
        self.bn_ac_func2 = BNReLUConv(bn_size * growth_rate, growth_rate, 3)
        # same mode as paddle.vision, so its weights compute the same function
        self.dropout = nn.Dropout(dropout, mode="downscale_in_infer") if dropout else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        new = self.bn_ac_func2(self.bn_ac_func1(x))
        if self.dropout is not None:
            new = self.dropout(new)
        return paddle.concat([x, new], axis=1)


class DenseBlock(nn.Sequential):
    """`n_layers` dense layers named `conv{stage}_{j}` (paddle.vision's names)."""

    def __init__(
        self, stage: int, in_channels: int, n_layers: int, growth_rate: int, bn_size: int, dropout: float
    ):
        layers = [
            DenseLayer(in_channels + j * growth_rate, growth_rate, bn_size, dropout)
            for j in range(n_layers)
        ]
        super().__init__(*[(f"conv{stage}_{j + 1}", layer) for j, layer in enumerate(layers)])


class Transition(nn.Layer):
    """BN-ReLU-1x1 conv to `out_channels`, then 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_ac_func = BNReLUConv(in_channels, out_channels, 1)
        self.pool2d_avg = nn.AvgPool2D(kernel_size=2, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.pool2d_avg(self.conv_ac_func(x))


class StemConv(nn.Layer):
    """7x7/2 conv, BN, ReLU (named as in paddle.vision's `ConvBNLayer`)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self._conv = nn.Conv2D(3, out_channels, 7, stride=2, padding=3, bias_attr=False)
        self._batch_norm = nn.BatchNorm2D(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.relu(self._batch_norm(self._conv(x)))


# Table 1 of the paper: depth -> (stem channels, growth rate, layers per dense block).
DENSENET_CFG: dict[int, tuple[int, int, list[int]]] = {
    121: (64, 32, [6, 12, 24, 16]),
    169: (64, 32, [6, 12, 32, 32]),
}


class DenseNet(nn.Layer):
    """DenseNet-BC: stem, four dense blocks with transitions between them, BN-ReLU, pool, linear.

    Args:
        depth: a key of DENSENET_CFG (121 when neither it nor `config` is given).
        num_classes: outputs (1 = one logit); <= 0 returns the features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        bn_size: bottleneck width as a multiple of the growth rate (4 in the paper).
        dropout: drop probability after each new feature map (0 for ImageNet in the paper).
        config: (stem channels, growth rate, layers per dense block) in place of `depth`, as
            torchvision's `DenseNet(growth_rate, block_config, num_init_features)` takes them:
            narrow, shallow networks for small inputs or few images. Parameter names are those
            of the depths', shapes and block lengths follow the config.

    Example:
        >>> DenseNet(121, num_classes=1)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
        >>> DenseNet(config=(8, 4, [2, 1, 1, 1]), bn_size=2, num_classes=0)(
        ...     paddle.rand([2, 3, 32, 32])).shape
        [2, 9, 1, 1]
    """

    def __init__(
        self,
        depth: int | None = None,
        num_classes: int = 1,
        with_pool: bool = True,
        bn_size: int = 4,
        dropout: float = 0.0,
        config: tuple[int, int, Sequence[int]] | None = None,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("densenet", num_classes, with_pool)
        channels, growth_rate, block_layers = _layout(depth, config)
        self.conv1_func = StemConv(channels)
        self.pool2d_max = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self._stage_names = []
        for i, n_layers in enumerate(block_layers):
            stage = i + 2  # paddle.vision numbers the dense blocks from 2
            block = DenseBlock(stage, channels, n_layers, growth_rate, bn_size, dropout)
            self.add_sublayer(f"db_conv_{stage}", block)
            self._stage_names.append(f"db_conv_{stage}")
            channels += n_layers * growth_rate
            if i < len(block_layers) - 1:
                self.add_sublayer(f"tr_conv{stage}_blk", Transition(channels, channels // 2))
                self._stage_names.append(f"tr_conv{stage}_blk")
                channels //= 2
        self.batch_norm = nn.BatchNorm2D(channels)
        self.relu = nn.ReLU()
        self.out = None
        if num_classes > 0:
            # paddle.vision's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(channels)
            init = nn.initializer.Uniform(-bound, bound)
            self.out = nn.Linear(channels, num_classes, weight_attr=paddle.ParamAttr(initializer=init))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.pool2d_max(self.conv1_func(x))
        for name in self._stage_names:
            x = getattr(self, name)(x)
        return self.classifier_head(self.relu(self.batch_norm(x)), self.out)


def _layout(depth: int | None, config: tuple[int, int, Sequence[int]] | None
            ) -> tuple[int, int, list[int]]:
    """(stem channels, growth rate, layers per block) of `depth` or `config`, checked."""
    if config is None:
        depth = 121 if depth is None else depth
        if depth not in DENSENET_CFG:
            raise ValueError(f"densenet: depth {depth} not in {sorted(DENSENET_CFG)}")
        return DENSENET_CFG[depth]
    if depth is not None:
        raise ValueError(f"densenet: give depth ({depth}) or config ({config}), not both")
    try:
        channels, growth_rate, block_layers = config
        numbers = [channels, growth_rate, *block_layers]
    except (TypeError, ValueError):
        numbers = None
    if not numbers or len(numbers) < 3 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in numbers):
        raise ValueError(f"densenet: config {config} is not (stem channels, growth rate, "
                         f"[layers per dense block, ...]) of integers at least 1")
    return channels, growth_rate, list(block_layers)


@register_model
def densenet121(num_classes: int = 1, **kw) -> DenseNet:
    return DenseNet(121, num_classes=num_classes, **kw)


@register_model
def densenet169(num_classes: int = 1, **kw) -> DenseNet:
    return DenseNet(169, num_classes=num_classes, **kw)
