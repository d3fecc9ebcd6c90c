"""Channel and spatial attention blocks that reweight a feature map and keep its shape.

- `SqueezeExcite`: Squeeze-and-Excitation (Hu et al. 2018, arXiv:1709.01507). Global average
  pool, a bottleneck of two 1x1 convs, sigmoid, and each channel scaled by its gate.
- `CBAM`: Convolutional Block Attention Module (Woo et al. 2018, arXiv:1807.06521). Channel
  attention (a shared MLP over both average- and max-pooled descriptors), then spatial
  attention (a 7x7 conv over the channel-wise mean and max maps).

Each takes the channel count first, so `functools.partial(SqueezeExcite, reduction=16)` is the
`attn_layer` factory that `palm.models.resnet` builds into every residual block.

Example:
    >>> SqueezeExcite(64)(paddle.rand([2, 64, 8, 8])).shape
    [2, 64, 8, 8]
"""
from __future__ import annotations

from collections.abc import Callable

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class SqueezeExcite(nn.Layer):
    """x * sigmoid(fc2(act(fc1(avg_pool(x))))), the FCs as 1x1 convs with bias.

    Args:
        channels: input (and output) channels.
        reduction: bottleneck ratio r (16 in the paper); ignored when `reduced_channels` is set.
        reduced_channels: bottleneck width, for networks that derive it otherwise
            (EfficientNet: a quarter of the block's input channels).
        act: activation inside the bottleneck (ReLU in the paper; Swish in EfficientNet).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        reduced_channels: int | None = None,
        act: Callable[[], nn.Layer] = nn.ReLU,
    ):
        super().__init__()
        reduced = reduced_channels or max(1, channels // reduction)
        self.fc1 = nn.Conv2D(channels, reduced, 1)
        self.act = act()
        self.fc2 = nn.Conv2D(reduced, channels, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        gate = self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * F.sigmoid(gate)


class ChannelAttention(nn.Layer):
    """CBAM channel attention: one MLP applied to the average- and max-pooled vectors, summed."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        reduced = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2D(channels, reduced, 1), nn.ReLU(), nn.Conv2D(reduced, channels, 1)
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        gate = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * F.sigmoid(gate)


class SpatialAttention(nn.Layer):
    """CBAM spatial attention: a conv (+BN, as in the authors' code) over the channel mean and max."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2D(2, 1, kernel_size, padding=kernel_size // 2, bias_attr=False)
        self.bn = nn.BatchNorm2D(1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # The channel max as a 3-D max pool over the whole channel axis: the same values, but
        # paddle's CPU backward of `max(axis=1)` took ~1 s per call here, over 1000x the pool's.
        channel_max = F.max_pool3d(x.unsqueeze(1), (x.shape[1], 1, 1)).squeeze(1)
        pooled = paddle.concat([x.mean(axis=1, keepdim=True), channel_max], axis=1)
        return x * F.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Layer):
    """Channel attention, then spatial attention (the sequential channel-first order of the paper).

    Args:
        channels: input (and output) channels.
        reduction: channel-MLP bottleneck ratio (16 in the paper).
        kernel_size: spatial-attention conv size (7 in the paper).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.spatial(self.channel(x))
