"""Building blocks shared by the model families (the counterpart of timm's `timm/layers`).

- `ConvBNAct`: bias-free conv, BN, activation; `make_divisible`: width rounding of the
  efficient families.
- `SqueezeExcite`: Squeeze-and-Excitation (Hu et al. 2018, arXiv:1709.01507). Global average
  pool, a bottleneck of two 1x1 convs, sigmoid, and each channel scaled by its gate.
- `CBAM`: Convolutional Block Attention Module (Woo et al. 2018, arXiv:1807.06521). Channel
  attention (a shared MLP over both average- and max-pooled descriptors), then spatial
  attention (a 7x7 conv over the channel-wise mean and max maps).
- `ClassifierHead`: the end of every network: global pool, flatten, dropout, classifier,
  or the (pooled) features when a network is built as a backbone (`num_classes <= 0`).
- `AuxLogitsNet`: base of the Inception networks, whose auxiliary classifiers are optional.

The attention blocks take the channel count first, so `functools.partial(SqueezeExcite,
reduction=16)` is the `attn_layer` factory that `palm.models.resnet` builds into every
residual block.

Example:
    >>> SqueezeExcite(64)(paddle.rand([2, 64, 8, 8])).shape
    [2, 64, 8, 8]
"""
from __future__ import annotations

from collections.abc import Callable

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class ConvBNAct(nn.Sequential):
    """Bias-free conv, BN, then `act` (None: no activation); children named `0`, `1`, `2`.

    'Same' padding by default. The numbered children match paddle.vision's
    `ConvNormActivation`, so state dicts of its models load.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: Callable[[], nn.Layer] | None = nn.ReLU,
    ):
        if padding is None:
            kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = ((kh - 1) // 2, (kw - 1) // 2)
        layers = [
            nn.Conv2D(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias_attr=False
            ),
            nn.BatchNorm2D(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of `divisor`, never more than 10 % below `value`.

    The rule of the MobileNet v2 reference code (and paddle.vision), so scaled widths match theirs.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


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
        # paddle's CPU backward of `max(axis=1)` is orders of magnitude slower than the pool's.
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


Classifier = Callable[[paddle.Tensor], paddle.Tensor]


class StochasticDepth(nn.Layer):
    """Drop the whole residual branch per sample with probability `p` in training (Huang et al.
    2016, arXiv:1603.09382), scaling the kept ones by 1/(1-p); the identity in evaluation."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        # one draw per sample, whatever the rank (maps [N, C, H, W], tokens [N, L, D])
        mask = paddle.bernoulli(paddle.full([x.shape[0]] + [1] * (x.ndim - 1), keep, dtype=x.dtype))
        return x * mask / keep


class ClassifierHead(nn.Layer):
    """Pool -> flatten -> dropout -> classifier, or the features when `num_classes <= 0`.

    The head holds no parameters: the classifier (a linear layer, an MLP, a 1x1 conv) stays
    an attribute of the network under the name its published weights use (`fc`, `_fc`,
    `out`, `classifier`, ...), so state dicts keep their keys, and `forward` is handed it.

    Args:
        family: network name, for the error message.
        num_classes: outputs; <= 0 makes the head return the features (pooled if `with_pool`).
        with_pool: apply the pool; False (backbone use) needs num_classes <= 0.
        pool_size: side of the adaptive average pool's output (1: global average pooling);
            None for networks without one (LeNet), which always flatten the whole map.
        dropout: drop probability before the classifier (0: none).
        dropout_mode: paddle's Dropout mode; "downscale_in_infer" where paddle.vision uses it,
            so its weights compute the same function.
        maps_first: the classifier is a 1x1 conv giving one map per class, which the pool
            then averages into logits (NiN, SqueezeNet): dropout -> classifier -> pool.

    Example:
        >>> head, fc = ClassifierHead("demo", num_classes=2), nn.Linear(8, 2)
        >>> head(paddle.rand([4, 8, 5, 5]), fc).shape
        [4, 2]
    """

    def __init__(
        self,
        family: str,
        num_classes: int,
        with_pool: bool = True,
        pool_size: int | None = 1,
        dropout: float = 0.0,
        dropout_mode: str = "upscale_in_train",
        maps_first: bool = False,
    ):
        super().__init__()
        if num_classes > 0 and pool_size is not None and not with_pool:
            raise ValueError(
                f"{family}: with_pool=False is for backbone use; it needs num_classes <= 0"
            )
        self.num_classes = num_classes
        self.maps_first = maps_first
        self.pool = nn.AdaptiveAvgPool2D(pool_size) if with_pool and pool_size is not None else None
        self.dropout = nn.Dropout(dropout, mode=dropout_mode) if dropout > 0 else None

    def _pool(self, x: paddle.Tensor) -> paddle.Tensor:
        return x if self.pool is None else self.pool(x)

    def _drop(self, x: paddle.Tensor) -> paddle.Tensor:
        return x if self.dropout is None else self.dropout(x)

    def forward(self, x: paddle.Tensor, classifier: Classifier | None) -> paddle.Tensor:
        """`x`: the backbone's feature map; `classifier`: the network's last layer(s), never
        called (and None in most networks) when num_classes <= 0."""
        if self.num_classes <= 0:
            return self._pool(x)
        if self.maps_first:
            return paddle.flatten(self._pool(classifier(self._drop(x))), 1)
        return classifier(self._drop(paddle.flatten(self._pool(x), 1)))


class AuxLogitsNet(nn.Layer):
    """Base of the networks with optional auxiliary classifiers (GoogLeNet, Inception-v3).

    Sets `num_classes`, `aux_logits` and a `classifier_head` in paddle.vision's dropout mode,
    so its ImageNet weights give the same outputs; the subclass builds the layers.

    Raises:
        ValueError: `aux_logits` without classes to predict (num_classes <= 0).
    """

    def __init__(
        self, family: str, num_classes: int, with_pool: bool, aux_logits: bool, dropout: float
    ):
        super().__init__()
        if aux_logits and num_classes <= 0:
            raise ValueError(f"{family}: aux_logits=True needs num_classes > 0")
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead(
            family, num_classes, with_pool, dropout=dropout, dropout_mode="downscale_in_infer"
        )
        self.aux_logits = aux_logits
