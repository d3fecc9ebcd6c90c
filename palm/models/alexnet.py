"""AlexNet (Krizhevsky et al. 2012), the single-GPU form with 64-192-384-256-256 channels.

Parameter names and shapes follow `paddle.vision.models.AlexNet`, so its ImageNet state dict
loads (see `palm.models.load_pretrained`). Two additions that hold no parameters: an adaptive
average pool to 6 x 6 before the classifier (identity at 224 px) so other input sizes work,
and an input-size check, because the three stride-2 max pools need at least 63 px.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model

MIN_INPUT_SIZE = 63  # smallest side for which the last 3x3/2 max pool still has a 3x3 input


class ConvPool(nn.Layer):
    """Conv + ReLU + 3x3/2 max pool; sublayer names match paddle.vision (`_conv`, `_pool`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel, stride=stride, padding=padding)
        self._pool = nn.MaxPool2D(kernel_size=3, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self._pool(F.relu(self._conv(x)))


class AlexNet(nn.Layer):
    """AlexNet for inputs of 63 px and up.

    Args:
        num_classes: outputs (1 = one logit); <= 0 returns the 256-channel conv5 feature map.
        dropout: drop probability before fc6 and fc7 (0.5 in the paper).

    Example:
        >>> AlexNet(num_classes=10)(paddle.rand([2, 3, 224, 224])).shape
        [2, 10]
    """

    def __init__(self, num_classes: int = 1, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        self._conv1 = ConvPool(3, 64, 11, 4, 2)
        self._conv2 = ConvPool(64, 192, 5, 1, 2)
        self._conv3 = nn.Conv2D(192, 384, 3, padding=1)
        self._conv4 = nn.Conv2D(384, 256, 3, padding=1)
        self._conv5 = ConvPool(256, 256, 3, 1, 1)
        # without a classifier, the conv5 map is returned unpooled
        self.classifier_head = ClassifierHead("alexnet", num_classes, num_classes > 0, pool_size=6)
        if num_classes > 0:
            # paddle.vision's AlexNet (and its ImageNet weights) scale at inference time, not
            # in training; the same mode keeps loaded weights computing the same function.
            self._drop1 = nn.Dropout(dropout, mode="downscale_in_infer")
            self._fc6 = nn.Linear(256 * 6 * 6, 4096)
            self._drop2 = nn.Dropout(dropout, mode="downscale_in_infer")
            self._fc7 = nn.Linear(4096, 4096)
            self._fc8 = nn.Linear(4096, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # Checked in dygraph only: in a static graph, unknown sizes are not numbers.
        if paddle.in_dynamic_mode() and min(x.shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"alexnet needs inputs of at least {MIN_INPUT_SIZE} px, got {x.shape[2:]}")
        x = self._conv1(x)
        x = self._conv2(x)
        x = F.relu(self._conv3(x))
        x = F.relu(self._conv4(x))
        return self.classifier_head(self._conv5(x), self._classify)

    def _classify(self, x: paddle.Tensor) -> paddle.Tensor:
        """fc6 to fc8 (dropout before fc6 and fc7) on the flattened 6 x 6 pooled map."""
        x = F.relu(self._fc6(self._drop1(x)))
        x = F.relu(self._fc7(self._drop2(x)))
        return self._fc8(x)


@register_model
def alexnet(num_classes: int = 1, **kw) -> AlexNet:
    """AlexNet with paddle.vision parameter names; `dropout` (default 0.5)."""
    return AlexNet(num_classes=num_classes, **kw)
