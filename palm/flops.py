"""Parameter and FLOP counts through forward hooks.

`paddle.flops` crashes under numpy 2.4 (Paddle 3.3), so palm counts the
dominant layers itself: every Conv2D and Linear forward. One multiply-add is 2 FLOPs (the
convention behind "ResNet50 = 4.1 GMACs = 8.2 GFLOPs"); bias adds, batch norm, activations
and pooling are left out (about 1 % of a ResNet's total).
"""
from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn as nn


def count_params(model: nn.Layer, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with gradients)."""
    return sum(
        int(p.size) for p in model.parameters() if not (trainable_only and p.stop_gradient)
    )


def count_flops(model: nn.Layer, input_shape: Sequence[int] = (1, 3, 224, 224)) -> int:
    """Forward FLOPs per image of `model` for an input of `input_shape` (NCHW).

    Args:
        model: any network; its train/eval mode is restored afterwards.
        input_shape: shape of the dummy input; the count is divided by its batch size.

    Returns:
        FLOPs per image, counting Conv2D and Linear multiply-adds as 2 FLOPs each.

    Example:
        >>> count_flops(nn.Linear(10, 4), (1, 10))
        80
    """
    total = 0

    def conv_hook(layer: nn.Conv2D, inputs, output) -> None:
        nonlocal total
        # weight: [out_channels, in_channels / groups, kh, kw]; each output element
        # needs one multiply-add per weight of its filter.
        per_output = int(layer.weight.shape[1] * layer.weight.shape[2] * layer.weight.shape[3])
        total += 2 * int(output.size) * per_output

    def linear_hook(layer: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += 2 * int(output.size) * int(layer.weight.shape[0])  # weight: [in, out]

    hooks = []
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            hooks.append(layer.register_forward_post_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros(list(input_shape), dtype="float32"))
    finally:
        for h in hooks:
            h.remove()
        if was_training:
            model.train()
    return total // int(input_shape[0])
