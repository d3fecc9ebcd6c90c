"""Optimizers (Momentum, Adam, AdamW) and per-step learning-rate schedules with linear warmup.

Schedules step once per optimizer step, not per epoch, so warmup is smooth even when an
epoch has few batches. Their state is saved with `last.pdopt` for `--resume`.
"""
from __future__ import annotations

from typing import Any, Iterable

import paddle
from paddle.optimizer import lr as lr_sched

from palm.errors import BadConfig

# Warmup starts from this fraction of the base learning rate (Goyal et al. 2017,
# arXiv:1706.02677, ramp linearly from a small rate to avoid early divergence).
WARMUP_START_FACTOR = 0.01


def _constant(step: int) -> float:
    # module level (not a lambda) so the scheduler stays picklable
    return 1.0


def build_scheduler(
    name: str,
    lr: float,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    step_size: int = 10,
    gamma: float = 0.1,
) -> lr_sched.LRScheduler:
    """A learning-rate schedule over `epochs * steps_per_epoch` optimizer steps.

    Args:
        name: "constant", "step" (multiply by `gamma` every `step_size` epochs) or "cosine"
            (to 0 at the end of training, after warmup).
        lr: base learning rate.
        warmup_epochs: linear ramp from lr * 0.01 to lr over this many epochs (may be < 1).

    Returns:
        A paddle LRScheduler; call `.step()` after every optimizer step.
    """
    steps_per_epoch = max(1, steps_per_epoch)
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total, round(warmup_epochs * steps_per_epoch))
    if name == "constant":
        schedule: lr_sched.LRScheduler = lr_sched.LambdaDecay(lr, _constant)
    elif name == "step":
        schedule = lr_sched.StepDecay(lr, step_size=max(1, step_size) * steps_per_epoch, gamma=gamma)
    elif name == "cosine":
        schedule = lr_sched.CosineAnnealingDecay(lr, T_max=max(1, total - warmup))
    else:
        raise BadConfig(f"unknown scheduler {name!r}; choose from constant, step, cosine")
    if warmup > 0:
        schedule = lr_sched.LinearWarmup(schedule, warmup, start_lr=lr * WARMUP_START_FACTOR, end_lr=lr)
    return schedule


def build_optimizer(
    name: str,
    parameters: Iterable[paddle.Tensor] | list[dict[str, Any]],
    learning_rate: float | lr_sched.LRScheduler,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> paddle.optimizer.Optimizer:
    """Momentum SGD, Adam or AdamW.

    `weight_decay` is an L2 penalty added to the gradient for Momentum and Adam (paddle's
    float `weight_decay`), and decoupled weight decay for AdamW (Loshchilov & Hutter 2019).
    `parameters` may be groups (palm.engine.finetune.parameter_groups), each with its own
    learning-rate multiplier and weight decay.
    """
    parameters = list(parameters)
    decay = weight_decay or None
    if name == "momentum":
        return paddle.optimizer.Momentum(learning_rate, momentum=momentum, parameters=parameters,
                                         weight_decay=decay)
    if name == "adam":
        return paddle.optimizer.Adam(learning_rate, parameters=parameters, weight_decay=decay)
    if name == "adamw":
        return paddle.optimizer.AdamW(learning_rate, parameters=parameters, weight_decay=weight_decay)
    raise BadConfig(f"unknown optimizer {name!r}; choose from momentum, adam, adamw")
