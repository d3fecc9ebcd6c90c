"""Model registry: `build_model(name, num_classes)` is the one way tools build a network.

Every module of this package except the helpers below is a family module: importing it
registers its factories (`@register_model`, palm/models/registry.py) in MODELS. The loop
below imports them all when palm.models is imported, so a new family is a new file here and
nothing else to edit.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from typing import Callable

import paddle
import paddle.nn as nn

from palm.errors import BadConfig
from palm.models.ordinal import add_rank_biases
from palm.models.imagenet import IMAGENET_WEIGHTS, fetch_imagenet, published_weights
from palm.models.pretrained import IMAGENET, load_pretrained, pretrained_weights_file
from palm.models.registry import MODELS, ModelRegistryError, register_model
from palm.models.vit import VisionTransformer

# Modules that define no network: shared layers, weight loading and published weights, the
# registry itself.
HELPER_MODULES = frozenset({"convert", "imagenet", "layers", "ordinal", "pretrained",
                            "registry"})


def _import_families() -> None:
    """Import every family module; one that registers no model is a forgotten decorator."""
    for module in pkgutil.iter_modules(__path__):
        if module.name in HELPER_MODULES:
            continue
        qualified = f"{__name__}.{module.name}"
        importlib.import_module(qualified)
        if not any(factory.__module__ == qualified for factory in MODELS.values()):
            raise ModelRegistryError(
                f"palm/models/{module.name}.py registers no model: decorate its factories with "
                "@register_model, or add it to HELPER_MODULES in palm/models/__init__.py if it "
                "only holds shared code")


_import_families()


class UnknownModelOption(BadConfig, TypeError):
    """A model option (model_kwargs key) the network does not take. A TypeError too, as
    calling the factory with it would raise, so callers catching that keep working."""


def list_models() -> list[str]:
    """Names accepted by `build_model`, sorted."""
    return sorted(MODELS)


def build_model(name: str, num_classes: int = 1, **kw) -> nn.Layer:
    """Build a registered network; `num_classes=1` gives one logit for sigmoid/BCE.

    Raises:
        ValueError: `name` is not registered; the message lists the valid names.
        UnknownModelOption: an option in `kw` the network does not take (e.g. a misspelt
            model_kwargs key); the message lists the options it takes.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    _check_options(name, MODELS[name], kw)
    return MODELS[name](num_classes=num_classes, **kw)


def build_grading_model(name: str, num_grades: int, ordinal_loss: str = "ce", **kw) -> nn.Layer:
    """A grading (ordinal) network for `num_grades` grades as `ordinal_loss` trains it:
    K logits (ce), one score with CORAL's K-1 biases (coral, palm.models.ordinal), or one
    score (regression). Built by `build_model`, so options and errors are the same."""
    if ordinal_loss == "ce":
        return build_model(name, num_grades, **kw)
    model = build_model(name, 1, **kw)
    return add_rank_biases(model, num_grades) if ordinal_loss == "coral" else model


def is_transformer(name: str) -> bool:
    """Whether network `name` is a Vision Transformer (tools that treat those differently,
    e.g. INT8 calibration, ask this). Built under LazyGuard: no weights are allocated."""
    with paddle.LazyGuard():
        return isinstance(build_model(name), VisionTransformer)


def _check_options(name: str, factory: Callable[..., nn.Layer], kw: dict) -> None:
    """Factories with named parameters only: an unknown option is a one-line error, not a
    TypeError traceback from deep inside the network's constructor."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # `resnet18(num_classes, **kw)` hands its options to the network class it returns
        built = typing.get_type_hints(factory).get("return")
        if not isinstance(built, type):
            return
        params = inspect.signature(built.__init__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        params = {k: v for k, v in params.items() if k != "self"}
    unknown = sorted(set(kw) - set(params))
    if unknown:
        known = [p for p in params if p != "num_classes"]
        raise UnknownModelOption(f"model {name} has no option(s) {', '.join(unknown)} (model_kwargs); "
                        f"it takes: {', '.join(known) or 'none'}")


__all__ = ["IMAGENET", "IMAGENET_WEIGHTS", "MODELS", "ModelRegistryError", "UnknownModelOption",
           "build_grading_model", "build_model", "fetch_imagenet", "is_transformer", "list_models", "load_pretrained",
           "pretrained_weights_file", "published_weights", "register_model"]
