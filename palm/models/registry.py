"""The model registry: each family module marks its factories with `@register_model`.

This module imports no family (families import it), so it sits at the bottom of palm.models;
palm/models/__init__.py imports every family module, which fills MODELS. A new network is a
new file in palm/models with decorated factories and nothing to edit elsewhere.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import paddle.nn as nn

Factory = TypeVar("Factory", bound=Callable[..., nn.Layer])

# name -> factory called as factory(num_classes=..., **model_kwargs)
MODELS: dict[str, Callable[..., nn.Layer]] = {}


class ModelRegistryError(RuntimeError):
    """palm/models is inconsistent (a name registered twice, a family that registers nothing):
    a bug of the code, raised when palm.models is imported."""


def register_model(factory: Factory) -> Factory:
    """Register `factory` under its function name (what `build_model` and `--model` take).

    Raises:
        ModelRegistryError: the name is already registered, by this module or another.
    """
    name = factory.__name__
    if name in MODELS:
        raise ModelRegistryError(
            f"model {name!r} is registered twice: by {MODELS[name].__module__} and by "
            f"{factory.__module__}; rename one factory")
    MODELS[name] = factory
    return factory
