"""Model registry: `build_model(name, num_classes)` is the one way tools build a network."""
from __future__ import annotations

from typing import Callable

import paddle.nn as nn

from palm.models.pretrained import load_pretrained

MODELS: dict[str, Callable[..., nn.Layer]] = {}


def list_models() -> list[str]:
    """Names accepted by `build_model`, sorted."""
    return sorted(MODELS)


def build_model(name: str, num_classes: int = 1, **kw) -> nn.Layer:
    """Build a registered network; `num_classes=1` gives one logit for sigmoid/BCE.

    Raises:
        ValueError: `name` is not registered; the message lists the valid names.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    return MODELS[name](num_classes=num_classes, **kw)


__all__ = ["MODELS", "build_model", "list_models", "load_pretrained"]
