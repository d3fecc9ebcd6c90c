"""Model registry: `build_model(name, num_classes)` is the one way tools build a network."""
from __future__ import annotations

import inspect
from typing import Callable

import paddle.nn as nn

from palm.errors import BadConfig

from palm.models.alexnet import alexnet
from palm.models.attention_resnet import cbam_resnet50, se_resnet50
from palm.models.densenet import densenet121, densenet169
from palm.models.efficientnet import efficientnet_b0
from palm.models.googlenet import googlenet
from palm.models.inception_v3 import inception_v3
from palm.models.lenet import lenet, lenet5
from palm.models.mobilenet import mobilenet_v1, mobilenet_v2
from palm.models.nin import nin
from palm.models.pretrained import load_pretrained
from palm.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from palm.models.shufflenet import shufflenet_v2_x1_0
from palm.models.squeezenet import squeezenet1_1
from palm.models.vgg import vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from palm.models.xception import xception

MODELS: dict[str, Callable[..., nn.Layer]] = {
    # classic families
    "lenet": lenet, "lenet5": lenet5, "alexnet": alexnet,
    "vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16, "vgg19": vgg19,
    "vgg11_bn": vgg11_bn, "vgg13_bn": vgg13_bn, "vgg16_bn": vgg16_bn, "vgg19_bn": vgg19_bn,
    "googlenet": googlenet,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
    "resnet101": resnet101, "resnet152": resnet152,
    # later architectures
    "nin": nin,
    "densenet121": densenet121, "densenet169": densenet169,
    "se_resnet50": se_resnet50, "cbam_resnet50": cbam_resnet50,
    "mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2,
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0, "squeezenet1_1": squeezenet1_1,
    "xception": xception, "efficientnet_b0": efficientnet_b0, "inception_v3": inception_v3,
}


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


def _check_options(name: str, factory: Callable[..., nn.Layer], kw: dict) -> None:
    """Factories with named parameters only: an unknown option is a one-line error, not a
    TypeError traceback from deep inside the network's constructor."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kw) - set(params))
    if unknown:
        known = [p for p in params if p != "num_classes"]
        raise UnknownModelOption(f"model {name} has no option(s) {', '.join(unknown)} (model_kwargs); "
                        f"it takes: {', '.join(known) or 'none'}")


__all__ = ["MODELS", "UnknownModelOption", "build_model", "list_models", "load_pretrained"]
