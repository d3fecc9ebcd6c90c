"""ResNet (He et al. 2015, arXiv:1512.03385): BasicBlock for 18/34, Bottleneck for 50/101/152.

Parameter names and shapes follow `paddle.vision.models.ResNet` (`conv1`, `bn1`,
`layerK.N.convM`, `layerK.N.downsample.{0,1}`, `fc`), so its ImageNet state dicts load.
Blocks take an optional `attn_layer(channels) -> Layer`, applied to the residual branch
before the addition (the placement of SE, arXiv:1709.01507, and CBAM, arXiv:1807.06521);
`_resnet(block, depth, attn_layer=...)` builds those variants from the same depth table.
"""
from __future__ import annotations

from typing import Callable, Sequence

import paddle
import paddle.nn as nn

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model

AttnFactory = Callable[[int], nn.Layer]


class BasicBlock(nn.Layer):
    """Two 3x3 convs with BN; `stride` on the first conv."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Layer | None = None,
        attn_layer: AttnFactory | None = None,
    ):
        super().__init__()
        self.conv1 = nn.Conv2D(in_channels, channels, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(channels)
        self.conv2 = nn.Conv2D(channels, channels, 3, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(channels)
        self.relu = nn.ReLU()
        self.attn = attn_layer(channels) if attn_layer else None
        self.downsample = downsample

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attn is not None:
            out = self.attn(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Layer):
    """1x1 reduce, 3x3 (with `stride`, as in paddle.vision/torchvision "ResNet v1.5"), 1x1 expand."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        downsample: nn.Layer | None = None,
        attn_layer: AttnFactory | None = None,
    ):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2D(in_channels, channels, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(channels)
        self.conv2 = nn.Conv2D(channels, channels, 3, stride=stride, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(channels)
        self.conv3 = nn.Conv2D(channels, out_channels, 1, bias_attr=False)
        self.bn3 = nn.BatchNorm2D(out_channels)
        self.relu = nn.ReLU()
        self.attn = attn_layer(out_channels) if attn_layer else None
        self.downsample = downsample

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attn is not None:
            out = self.attn(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


# Blocks per stage (conv2_x .. conv5_x), Table 1 of the paper.
RESNET_LAYERS: dict[int, list[int]] = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


class ResNet(nn.Layer):
    """7x7/2 stem, 3x3/2 max pool, four stages of `block`, global average pool, linear.

    Args:
        block: `BasicBlock` or `Bottleneck` (or a subclass with the same constructor).
        layers: blocks per stage, e.g. `RESNET_LAYERS[50]`.
        num_classes: outputs (1 = one logit); <= 0 returns features (pooled if `with_pool`).
        with_pool: global average pool at the end; False (backbone use) needs num_classes <= 0.
        attn_layer: optional `channels -> Layer` built into every block (SE, CBAM, ...).
        widths: channels of each stage's blocks (times `block.expansion` at their output);
            narrower than the paper's 64/128/256/512 for small inputs or few images. Parameter
            names stay the same, only shapes change.
        stem_width: channels of the 7x7 stem; `widths[0]` if None, as in the paper. timm's
            `ResNet(..., channels=...)` keeps a 64-channel single-conv stem whatever its
            channels (its `stem_width` sizes only the deep stems), so its narrow networks are
            `widths=channels, stem_width=64`.

    Example:
        >>> ResNet(Bottleneck, RESNET_LAYERS[50], num_classes=0)(paddle.rand([2, 3, 64, 64])).shape
        [2, 2048, 1, 1]
        >>> ResNet(BasicBlock, [1, 1, 1, 1], widths=(8, 16, 32, 64), num_classes=0)(
        ...     paddle.rand([2, 3, 32, 32])).shape
        [2, 64, 1, 1]
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1,
        with_pool: bool = True,
        attn_layer: AttnFactory | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int | None = None,
    ):
        super().__init__()
        # forward runs layer1 .. layer4, as paddle.vision's names have them
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"resnet: layers {list(layers)} and widths {list(widths)} need "
                             f"4 entries each, one per stage")
        stem_width = widths[0] if stem_width is None else stem_width
        if min(*widths, stem_width) < 1 or min(layers) < 1:
            raise ValueError(f"resnet: widths {list(widths)}, stem_width {stem_width} and "
                             f"layers {list(layers)} must be at least 1")
        self.num_classes = num_classes
        self.classifier_head = ClassifierHead("resnet", num_classes, with_pool)
        self.conv1 = nn.Conv2D(3, stem_width, 7, stride=2, padding=3, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(stem_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        in_channels = stem_width
        for i, (channels, blocks) in enumerate(zip(widths, layers)):
            stage = self._make_stage(
                block, in_channels, channels, blocks, stride=1 if i == 0 else 2, attn_layer=attn_layer
            )
            self.add_sublayer(f"layer{i + 1}", stage)
            in_channels = channels * block.expansion
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else None

    @staticmethod
    def _make_stage(
        block: type[BasicBlock | Bottleneck],
        in_channels: int,
        channels: int,
        blocks: int,
        stride: int,
        attn_layer: AttnFactory | None,
    ) -> nn.Sequential:
        out_channels = channels * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            # Projection shortcut (option B of the paper) only where the shape changes.
            downsample = nn.Sequential(
                nn.Conv2D(in_channels, out_channels, 1, stride=stride, bias_attr=False),
                nn.BatchNorm2D(out_channels),
            )
        stage = [block(in_channels, channels, stride, downsample, attn_layer)]
        stage += [block(out_channels, channels, attn_layer=attn_layer) for _ in range(blocks - 1)]
        return nn.Sequential(*stage)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.classifier_head(x, self.fc)


def _resnet(block: type[BasicBlock | Bottleneck], depth: int, num_classes: int = 1, **kw) -> ResNet:
    """ResNet of `depth` (a key of RESNET_LAYERS) with `block`; kw go to `ResNet`."""
    return ResNet(block, RESNET_LAYERS[depth], num_classes=num_classes, **kw)


@register_model
def resnet18(num_classes: int = 1, **kw) -> ResNet:
    return _resnet(BasicBlock, 18, num_classes, **kw)


@register_model
def resnet34(num_classes: int = 1, **kw) -> ResNet:
    return _resnet(BasicBlock, 34, num_classes, **kw)


@register_model
def resnet50(num_classes: int = 1, **kw) -> ResNet:
    return _resnet(Bottleneck, 50, num_classes, **kw)


@register_model
def resnet101(num_classes: int = 1, **kw) -> ResNet:
    return _resnet(Bottleneck, 101, num_classes, **kw)


@register_model
def resnet152(num_classes: int = 1, **kw) -> ResNet:
    return _resnet(Bottleneck, 152, num_classes, **kw)
