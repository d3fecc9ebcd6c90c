"""ResNet-50 with attention in every bottleneck: SE-ResNet-50 and CBAM-ResNet-50.

Both are `palm.models.resnet.ResNet` with an `attn_layer` applied to the residual branch
before the addition, where Hu et al. 2018 (arXiv:1709.01507, Fig. 3) put SE and Woo et al.
2018 (arXiv:1807.06521, Fig. 3) put CBAM; reduction 16 and a 7x7 spatial kernel as in the
papers. The ResNet parameters keep their names, so `load_pretrained` can start them from
plain ResNet-50 ImageNet weights (the attention weights stay at their initial values).
"""
from __future__ import annotations

from functools import partial

from palm.models.layers import CBAM, SqueezeExcite
from palm.models.registry import register_model
from palm.models.resnet import Bottleneck, ResNet, _resnet


@register_model
def se_resnet50(num_classes: int = 1, reduction: int = 16, **kw) -> ResNet:
    """ResNet-50 with Squeeze-and-Excitation (ratio `reduction`) in each bottleneck."""
    attn_layer = partial(SqueezeExcite, reduction=reduction)
    return _resnet(Bottleneck, 50, num_classes, attn_layer=attn_layer, **kw)


@register_model
def cbam_resnet50(num_classes: int = 1, reduction: int = 16, kernel_size: int = 7, **kw) -> ResNet:
    """ResNet-50 with CBAM (channel ratio `reduction`, spatial `kernel_size`) in each bottleneck."""
    attn_layer = partial(CBAM, reduction=reduction, kernel_size=kernel_size)
    return _resnet(Bottleneck, 50, num_classes, attn_layer=attn_layer, **kw)
