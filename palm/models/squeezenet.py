"""SqueezeNet 1.1 (Iandola et al. 2016, arXiv:1602.07360; v1.1 from the authors' repository).

Fire modules squeeze with 1x1 convs and expand with parallel 1x1 and 3x3 convs; there are no
fully connected layers: a 1x1 conv gives one map per class and global average pooling turns
the maps into logits. v1.1 has a 3x3/2 stem of 64 channels and pools earlier than v1.0, for
2.4x less computation at the same accuracy.

Parameter names follow `paddle.vision.models.SqueezeNet` (`_conv`, `_conv1` .. `_conv8` with
`_conv`, `_conv_path1`, `_conv_path2`, the classifier `_conv9`), so its ImageNet weights load.
One departure: paddle.vision (like the original) applies ReLU to the class maps. Kept for
several classes, where softmax only needs the ranking; with one logit (sigmoid) a ReLU'd
logit could never fall below 0, i.e. a probability below 0.5, so it is left out there.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model


class FireConv(nn.Layer):
    """Conv with bias, then ReLU; wrapped so names read `<name>._conv.weight`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.relu(self._conv(x))


class Fire(nn.Layer):
    """1x1 squeeze, then 1x1 and 3x3 expand side by side, concatenated."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.out_channels = expand1x1 + expand3x3
        self._conv = FireConv(in_channels, squeeze, 1)
        self._conv_path1 = FireConv(squeeze, expand1x1, 1)
        self._conv_path2 = FireConv(squeeze, expand3x3, 3)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self._conv(x)
        return paddle.concat([self._conv_path1(x), self._conv_path2(x)], axis=1)


# Fire modules of v1.1: (3x3/2 max pool before it, squeeze, expand 1x1, expand 3x3).
SQUEEZENET_1_1_FIRES: list[tuple[bool, int, int, int]] = [
    (False, 16, 64, 64),
    (False, 16, 64, 64),
    (True, 32, 128, 128),
    (False, 32, 128, 128),
    (True, 48, 192, 192),
    (False, 48, 192, 192),
    (False, 64, 256, 256),
    (False, 64, 256, 256),
]


class SqueezeNet(nn.Layer):
    """SqueezeNet 1.1: 3x3/2 conv, max pool, eight fire modules, dropout, 1x1 class conv, pool.

    Args:
        num_classes: outputs (1 = one logit); <= 0 returns the 512-channel features.
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        dropout: drop probability before the class conv (0.5 in the paper).

    Example:
        >>> SqueezeNet(num_classes=10)(paddle.rand([2, 3, 64, 64])).shape
        [2, 10]
    """

    def __init__(self, num_classes: int = 1, with_pool: bool = True, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        # the class maps are averaged into the logits; same dropout mode as paddle.vision, so
        # its weights compute the same function
        self.classifier_head = ClassifierHead(
            "squeezenet", num_classes, with_pool, dropout=dropout,
            dropout_mode="downscale_in_infer", maps_first=True,
        )
        self._conv = nn.Conv2D(3, 64, 3, stride=2, padding=1)
        self._pool = nn.MaxPool2D(kernel_size=3, stride=2)
        self._fires: list[tuple[str, bool]] = []
        in_channels = 64
        for i, (pool_before, *widths) in enumerate(SQUEEZENET_1_1_FIRES, start=1):
            fire = Fire(in_channels, *widths)
            self.add_sublayer(f"_conv{i}", fire)
            self._fires.append((f"_conv{i}", pool_before))
            in_channels = fire.out_channels
        self._conv9 = nn.Conv2D(in_channels, num_classes, 1) if num_classes > 0 else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self._pool(F.relu(self._conv(x)))
        for name, pool_before in self._fires:
            if pool_before:
                x = self._pool(x)
            x = getattr(self, name)(x)
        return self.classifier_head(x, self._class_maps)

    def _class_maps(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self._conv9(x)
        return F.relu(x) if self.num_classes > 1 else x


@register_model
def squeezenet1_1(num_classes: int = 1, **kw) -> SqueezeNet:
    """SqueezeNet 1.1 with paddle.vision parameter names."""
    return SqueezeNet(num_classes=num_classes, **kw)
