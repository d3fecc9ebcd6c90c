"""LeNet: the PALM course variant (`lenet`) and the classic LeCun et al. 1998 layout (`lenet5`).

`lenet` is the network of the Paddle course 《零基础实践深度学习》 for PALM: 3-channel input,
conv-pool-conv-pool-conv and two linear layers, the first sized for the input resolution
(120 x 50 x 50 = 300,000 features at 224 px). The course used sigmoid activations and the net
did not learn (validation accuracy stuck at 0.5275); ReLU is the default here and
`activation="sigmoid"` reproduces the course.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model

ACTIVATIONS: dict[str, type[nn.Layer]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
POOLINGS: dict[str, type[nn.Layer]] = {"max": nn.MaxPool2D, "avg": nn.AvgPool2D}


def _activation(name: str) -> nn.Layer:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _pool(name: str) -> nn.Layer:
    """A 2 x 2, stride 2 subsampling layer: max (modern) or average (closer to the paper's)."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; choose from {', '.join(POOLINGS)}")
    return POOLINGS[name](2, 2)


def _lenet_feature_side(image_size: int) -> int:
    """Side of LeNet's last feature map: conv5 -> pool2 -> conv5 -> pool2 -> conv4."""
    side = (image_size - 4) // 2
    side = (side - 4) // 2
    return side - 3


class LeNet(nn.Layer):
    """PALM LeNet; the first linear layer is sized from `image_size`.

    Args:
        num_classes: outputs of the last layer (1 = one logit); <= 0 returns the conv features.
        image_size: side of the square input the network is built for (>= 28).
        activation: "relu", "sigmoid" (as in the course) or "tanh".
        pooling: "max" (as in the course) or "avg".

    Example:
        >>> LeNet(num_classes=1, image_size=64)(paddle.rand([2, 3, 64, 64])).shape
        [2, 1]
    """

    def __init__(self, num_classes: int = 1, image_size: int = 224, activation: str = "relu",
                 pooling: str = "max"):
        super().__init__()
        side = _lenet_feature_side(image_size)
        if side < 1:
            raise ValueError(f"lenet needs image_size >= 28, got {image_size}")
        self.num_classes = num_classes
        self.image_size = image_size
        self.classifier_head = ClassifierHead("lenet", num_classes, pool_size=None)
        self.features = nn.Sequential(
            nn.Conv2D(3, 6, 5), _activation(activation), _pool(pooling),
            nn.Conv2D(6, 16, 5), _activation(activation), _pool(pooling),
            nn.Conv2D(16, 120, 4), _activation(activation),
        )
        if num_classes > 0:
            self.classifier = nn.Sequential(
                nn.Linear(120 * side * side, 64), _activation(activation),
                nn.Linear(64, num_classes),
            )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier_head(self.features(x), self._classify)

    def _classify(self, x: paddle.Tensor) -> paddle.Tensor:
        expected = self.classifier[0].weight.shape[0]
        # A mismatch would otherwise surface as an opaque matmul shape error (checked in
        # dygraph only: in a static graph, unknown sizes are not numbers).
        if paddle.in_dynamic_mode() and x.shape[1] != expected:
            raise ValueError(
                f"lenet was built for image_size={self.image_size} "
                f"({expected} features) but the input gives {x.shape[1]}; "
                f"build it with image_size equal to the input side"
            )
        return self.classifier(x)


class LeNet5(nn.Layer):
    """LeNet-5 (LeCun et al. 1998): 6 and 16 feature maps, then 120, 84 and output units.

    Conv1 pads by 2 so a 28 px image sees the paper's 32 px field (the paper centred the
    28 px MNIST digits in 32 x 32). An adaptive pool before C5 keeps the 5 x 5 field of C5
    for larger inputs (identity at 28 px). Max pooling and ReLU replace the paper's
    trainable subsampling and scaled tanh, as in most modern re-implementations.

    Args:
        num_classes: outputs (the paper had 10); <= 0 returns the 16 x 5 x 5 feature map.
        in_channels: 1 (grayscale) or 3.
        activation: "relu", "sigmoid" or "tanh".
        pooling: "max" or "avg" (the paper's subsampling averaged, with a trained scale).
    """

    def __init__(self, num_classes: int = 1, in_channels: int = 3, activation: str = "relu",
                 pooling: str = "max"):
        super().__init__()
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("lenet5", num_classes, pool_size=None)
        self.features = nn.Sequential(
            nn.Conv2D(in_channels, 6, 5, padding=2), _activation(activation), _pool(pooling),
            nn.Conv2D(6, 16, 5), _activation(activation), _pool(pooling),
            nn.AdaptiveAvgPool2D(5),
        )
        self.classifier = None
        if num_classes > 0:
            self.classifier = nn.Sequential(
                nn.Linear(16 * 5 * 5, 120), _activation(activation),
                nn.Linear(120, 84), _activation(activation),
                nn.Linear(84, num_classes),
            )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier_head(self.features(x), self.classifier)


@register_model
def lenet(num_classes: int = 1, image_size: int = 224, activation: str = "relu",
          pooling: str = "max") -> LeNet:
    """PALM-course LeNet; pass `image_size` (default 224) matching the input."""
    return LeNet(num_classes, image_size, activation, pooling)


@register_model
def lenet5(num_classes: int = 1, in_channels: int = 3, activation: str = "relu",
           pooling: str = "max") -> LeNet5:
    """Classic LeNet-5 for 28-32 px inputs (works larger); `in_channels` 1 or 3."""
    return LeNet5(num_classes, in_channels, activation, pooling)
