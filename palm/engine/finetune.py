"""Fine-tuning recipes: which parameters are the new head, per-depth learning rates, weight
decay only where it belongs, and a head-only start.

- `head_lr_mult`: the classifier a fine-tuned network starts fresh learns `mult` times
  faster (the Paddle course fine-tunes ResNet's new head at 10x).
- `layer_decay`: the learning rate of a parameter at depth d of D is `lr * decay**(D - d)`
  (BEiT, Bao et al. 2021; MAE and RETFound fine-tune with 0.65 and 0.75). Depth follows
  the network's top-level layers in order; a list of blocks (ViT's `blocks`) counts one
  depth per block, and what follows the last block joins the head, as MAE's
  `get_layer_id_for_vit` does; ResNet's depths are conv1, bn1, layer1..layer4, fc.
- `decay_norm_and_bias: false`: no weight decay on biases, norm scales and the tokens a
  network lists in `NO_WEIGHT_DECAY` (ViT's class token and position embedding), as timm
  and MAE set AdamW up.
- `freeze_epochs`: only the head trains for the first epochs (BatchNorm statistics still
  follow the data, as in timm and PaddleClas, where freezing stops gradients only).
"""
from __future__ import annotations

from typing import Any, Callable

import paddle
from paddle import nn

from palm.models import build_model


def head_parameter_names(model: nn.Layer, model_name: str, model_kwargs: dict[str, Any]
                         ) -> set[str]:
    """Names of `model`'s parameters whose shape depends on the number of outputs: the
    classifier(s) a fine-tuned network starts afresh (auxiliary classifiers included).

    Found by building the same network with one more output (LazyGuard: no weights are
    allocated) and comparing shapes, so every family is covered without a table of names.
    """
    with paddle.LazyGuard():
        wider = build_model(model_name, model.num_classes + 1, **model_kwargs)
    shapes = {name: list(p.shape) for name, p in wider.named_parameters()}
    return {name for name, p in model.named_parameters() if shapes.get(name) != list(p.shape)}


def layer_depths(model: nn.Layer, head: set[str]) -> dict[str, int]:
    """Depth of every parameter of `model` for layer decay (see the module docstring); the
    head, and what follows a list of blocks, get the top depth."""
    children = dict(model.named_children())
    unit_of: dict[str, tuple] = {}
    for name, _ in model.named_parameters():
        first, _, rest = name.partition(".")
        is_list = isinstance(children.get(first), nn.LayerList)
        unit_of[name] = (first, rest.partition(".")[0]) if is_list else (first,)
    body = [name for name in unit_of if name not in head]
    # a network's own parameters (ViT's class token, position embedding) join its first layer
    keys = list(dict.fromkeys(unit_of[name] for name in body if unit_of[name][0] in children))
    depth_of_key = {key: depth for depth, key in enumerate(keys)}
    list_ends = [depth for key, depth in depth_of_key.items() if len(key) == 2]
    top = max(list_ends) + 1 if list_ends else len(keys)
    depths = {name: min(depth_of_key.get(unit_of[name], 0), top) for name in body}
    depths.update({name: top for name in head})
    return depths


def parameter_groups(
    model: nn.Layer,
    head: set[str],
    *,
    weight_decay: float,
    head_lr_mult: float = 1.0,
    layer_decay: float | None = None,
    decay_norm_and_bias: bool = True,
) -> list[dict[str, Any]]:
    """Paddle optimizer parameter groups: {"params", "learning_rate" (a multiplier of the
    scheduled rate), "weight_decay"}, one per distinct (multiplier, decay)."""
    depths = layer_depths(model, head) if layer_decay is not None else {}
    top = max(depths.values(), default=0)
    no_decay_names = set(getattr(model, "NO_WEIGHT_DECAY", ()))
    groups: dict[tuple[float, float], list[paddle.Tensor]] = {}
    for name, param in model.named_parameters():
        scale = layer_decay ** (top - depths[name]) if layer_decay is not None else 1.0
        if name in head:
            scale *= head_lr_mult
        skip_decay = not decay_norm_and_bias and (len(param.shape) <= 1 or name in no_decay_names)
        groups.setdefault((scale, 0.0 if skip_decay else weight_decay), []).append(param)
    return [{"params": params, "learning_rate": scale, "weight_decay": decay}
            for (scale, decay), params in groups.items()]


def create_optimizer_state(optimizer: paddle.optimizer.Optimizer, model: nn.Layer) -> None:
    """Create `optimizer`'s per-parameter state (moments, velocities; zeros, as on a first
    step) for every trainable parameter of `model` now.

    Paddle creates it on a parameter's first step, so a checkpoint saved while the backbone
    is frozen would lack the backbone's, and resuming it after the thaw fails ("should in
    state dict"). Created up front, it is saved and restored whole; values are unchanged.
    """
    block = paddle.static.default_main_program().global_block()
    # private, but the one place Paddle creates this state; step() calls it the same way
    optimizer._create_accumulators(block, [p for p in model.parameters() if not p.stop_gradient])


def backbone_freezer(model: nn.Layer, head: set[str], freeze_epochs: int
                     ) -> Callable[[int], None]:
    """A `before_epoch(epoch)` hook (0-based epoch) for `fit`: the parameters outside the
    head take no gradient (and so no update or weight decay) while epoch < freeze_epochs.

    Set at the start of every epoch from the epoch number alone, so a resumed run freezes
    exactly as an uninterrupted one. Parameters frozen before (stop_gradient) stay frozen.
    Call `create_optimizer_state` before training, so checkpoints saved while frozen resume.
    """
    backbone = [p for name, p in model.named_parameters()
                if name not in head and not p.stop_gradient]

    def before_epoch(epoch: int) -> None:
        for param in backbone:
            param.stop_gradient = epoch < freeze_epochs

    return before_epoch
