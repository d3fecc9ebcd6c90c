"""PyTorch weights (torchvision, timm) onto palm's networks, without PyTorch.

A checkpoint is read by palm.torch_weights (`.pth`/`.pt` zip format, `.safetensors`), then
its tensors are matched to the palm network's parameters:

1. unwrapped (`{'model': ...}`, `{'state_dict': ...}`, a `module.` prefix from DataParallel);
2. renamed as Paddle names the same things (`running_mean` -> `_mean`, `running_var` ->
   `_variance`; `num_batches_tracked` dropped, Paddle counts nothing);
3. renamed to palm's (paddle.vision's) layer names where they differ (DenseNet, ShuffleNet
   v2, EfficientNet-B0, SE-ResNet-50: the rules in TORCHVISION_RENAMES), then matched by
   name with every shape checked, whatever order the file lists them in (safetensors sorts
   them); two source names that would become one palm name are refused;
4. Linear weights transposed (PyTorch stores [out, in], Paddle [in, out]); float16 and
   bfloat16 made float32.

Which networks this holds for is listed in TORCHVISION_CONVERTIBLE, each tested against
torchvision's (or timm's) logits (tests/models/test_convert.py and its fixtures).
efficientnet_b0 takes timm's `efficientnet_b0` and torchvision's `efficientnet_b0`, whose
layers are palm's (symmetric padding, BatchNorm eps 1e-5, SiLU in the blocks and in SE, SE
of a quarter of the block's input channels with biases); their names differ, and the rules
of each source match only that source's names. se_resnet50 takes timm's `seresnet50` (stride
on the 3x3 conv, SE of channels/16 with biases after the last BatchNorm, before the
addition). timm's `legacy_seresnet50` is another network: stride on the first 1x1 conv and a
ceil-mode max pool without padding (with seresnet50's weights renamed, its logits differ by
93 % of the largest at 64 px), and it has other names (`layer0.`, `se_module`,
`last_linear`), so it is refused by name.
Others are refused: torchvision's AlexNet, SqueezeNet and Inception-v3 have tensors of the
same shapes as palm's (paddle.vision's) but other layers around them (padding, pooling,
BatchNorm eps), and its GoogLeNet has BatchNorm where palm's has none. Anything that does
not match is named: missing, extra and wrong-shape keys.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import paddle
import paddle.nn as nn

from palm.errors import BadCheckpoint, BadConfig
from palm.models.efficientnet import B0_STAGES
from palm.models.registry import MODELS
from palm.torch_weights import checkpoint_format, read_safetensors, read_torch_checkpoint

# keys under which training scripts nest the state dict (RETFound and timm: 'model';
# Lightning and many others: 'state_dict')
WRAPPER_KEYS = ("model", "state_dict", "model_state", "model_state_dict", "module")
# palm networks whose torchvision weights (timm's, for ResNets and ViTs: the same names) give
# the PyTorch network's outputs
TORCHVISION_CONVERTIBLE = ("vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn",
                           "vgg16_bn", "vgg19_bn", "resnet18", "resnet34", "resnet50",
                           "resnet101", "resnet152", "densenet121", "densenet169",
                           "mobilenet_v2", "shufflenet_v2_x1_0", "efficientnet_b0",
                           "se_resnet50", "vit_tiny_patch16",
                           "vit_small_patch16", "vit_base_patch16", "vit_large_patch16",
                           "retfound")
# RETFound's pre-training checkpoint ({'model': ...}) holds the MAE decoder, its mask token
# and the encoder's `norm`, which fine-tuning with average pooling does not use (RETFound's
# own fine-tuning drops them the same way); it has no `fc_norm` or head, which keep their
# initialisation.
SET_ASIDE = {"retfound": ("decoder", "mask_token", "norm.")}
MAY_BE_MISSING = {"retfound": ("fc_norm.", "head.")}
# PyTorch buffer names -> Paddle's
RENAMES = ((r"running_mean$", "_mean"), (r"running_var$", "_variance"))


_DENSENET = (
    (r"^features\.conv0\.", "conv1_func._conv."),
    (r"^features\.norm0\.", "conv1_func._batch_norm."),
    (r"^features\.denseblock(\d+)\.denselayer(\d+)\.norm(\d)\.",
     lambda m: f"db_conv_{int(m[1]) + 1}.conv{int(m[1]) + 1}_{m[2]}.bn_ac_func{m[3]}._batch_norm."),
    (r"^features\.denseblock(\d+)\.denselayer(\d+)\.conv(\d)\.",
     lambda m: f"db_conv_{int(m[1]) + 1}.conv{int(m[1]) + 1}_{m[2]}.bn_ac_func{m[3]}._conv."),
    (r"^features\.transition(\d+)\.norm\.",
     lambda m: f"tr_conv{int(m[1]) + 1}_blk.conv_ac_func._batch_norm."),
    (r"^features\.transition(\d+)\.conv\.",
     lambda m: f"tr_conv{int(m[1]) + 1}_blk.conv_ac_func._conv."),
    (r"^features\.norm5\.", "batch_norm."),
    (r"^classifier\.", "out."),
)
# torchvision's ShuffleNet v2 unit: branch1 = dw conv, BN, 1x1 conv, BN, ReLU; branch2 = 1x1,
# BN, ReLU, dw, BN, 1x1, BN, ReLU. paddle.vision names each conv+BN pair, with a `_2` on
# branch2's in a stage's first (downsampling) unit, which has both branches.
_SHUFFLE_PARTS = {("branch1", "0"): "_conv_dw_1.0", ("branch1", "1"): "_conv_dw_1.1",
                  ("branch1", "2"): "_conv_linear_1.0", ("branch1", "3"): "_conv_linear_1.1",
                  ("branch2", "0"): "_conv_pw.0", ("branch2", "1"): "_conv_pw.1",
                  ("branch2", "3"): "_conv_dw.0", ("branch2", "4"): "_conv_dw.1",
                  ("branch2", "5"): "_conv_linear.0", ("branch2", "6"): "_conv_linear.1"}


def _shuffle_part(stage: str, unit: str, branch: str, index: str) -> str:
    conv, bn = _SHUFFLE_PARTS[(branch, index)].split(".")
    if unit == "0" and branch == "branch2":
        conv += "_2"
    return f"{stage}_{int(unit) + 1}.{conv}.{bn}."


_SHUFFLENET = (
    (r"^conv1\.", "_conv1."),
    (r"^stage(\d)\.(\d+)\.(branch[12])\.(\d)\.", lambda m: _shuffle_part(*m.groups())),
    (r"^conv5\.", "_last_conv."),
    (r"^fc\.", "_fc."),
)
# EfficientNet-B0: timm and torchvision number blocks within a stage, palm through the network
# (blocks.0 .. blocks.15); palm's MBConv is one Sequential `block` of the layers in order.
_B0_FIRST_BLOCK = list(itertools.accumulate((repeats for *_, repeats in B0_STAGES), initial=0))
# timm's layers -> palm's `block` children: stage 0 (expansion 1) is a DepthwiseSeparableConv
# (dw, SE, pw), the others InvertedResidual (pw, dw, SE, pwl)
_TIMM_MBCONV = {
    True: {"conv_dw": "0.0", "bn1": "0.1", "se.conv_reduce": "1.fc1", "se.conv_expand": "1.fc2",
           "conv_pw": "2.0", "bn2": "2.1"},
    False: {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1",
            "se.conv_reduce": "2.fc1", "se.conv_expand": "2.fc2", "conv_pwl": "3.0", "bn3": "3.1"},
}


def _b0_block(match: re.Match, stage: int, rest: str = "") -> str:
    """palm's name of block `match[2]` of B0 stage `stage`; a block B0 has not (a larger
    variant's file) keeps its name, to be reported as extra rather than land on another."""
    index = int(match[2])
    if stage >= len(B0_STAGES) or index >= B0_STAGES[stage][-1]:
        return match[0]
    return f"blocks.{_B0_FIRST_BLOCK[stage] + index}.block.{rest}"


def _timm_mbconv(match: re.Match) -> str:
    stage = int(match[1])
    depthwise_separable = stage < len(B0_STAGES) and B0_STAGES[stage][0] == 1
    part = _TIMM_MBCONV[depthwise_separable].get(match[3])
    return match[0] if part is None else _b0_block(match, stage, part + ".")


# each rule matches only its own source's names (palm's never), so one set takes either file
_EFFICIENTNET_B0 = (
    # timm: conv_stem, bn1, blocks.STAGE.INDEX.<layer>, conv_head, bn2, classifier
    (r"^conv_stem\.", "stem.0."),
    (r"^bn1\.", "stem.1."),
    (r"^blocks\.(\d+)\.(\d+)\.(conv_pwl|conv_pw|conv_dw|bn\d|se\.conv_reduce|se\.conv_expand)\.",
     _timm_mbconv),
    (r"^conv_head\.", "head.0."),
    (r"^bn2\.", "head.1."),
    # torchvision: features.0 the stem, features.1-7 the stages (block.N as palm's), features.8
    # the head conv, classifier.1 the Linear after its Dropout
    (r"^features\.0\.", "stem."),
    (r"^features\.(\d+)\.(\d+)\.block\.", lambda m: _b0_block(m, int(m[1]) - 1)),
    (r"^features\.8\.", "head."),
    (r"^classifier\.(1\.)?", "fc."),
)
# timm's seresnet50: torchvision's ResNet-50 names plus `se` (fc1, fc2) in every bottleneck
_SE_RESNET = ((r"^(layer\d\.\d+)\.se\.", r"\1.attn."),)
# name prefixes that only one source gives a network: a file with some of each is two
# networks' tensors spliced, which no duplicate name betrays when each half is whole
SOURCE_PREFIXES = {"efficientnet_b0": {"timm": ("conv_stem.", "blocks.", "conv_head."),
                                       "torchvision": ("features.",)}}
# palm network -> (a name of one source, a network of that source with the same names and
# shapes but other layers): nothing in the file tells them apart, so a conversion says so
LOOKALIKES = {"efficientnet_b0": (
    "conv_stem.weight", "timm's tf_efficientnet_b0 has these names and shapes too, with "
    "TensorFlow's asymmetric 'same' padding and BatchNorm eps 1e-3; palm cannot tell it from "
    "the file, and converted, its outputs would be wrong")}
# palm network -> (pattern, replacement) applied in turn to torchvision's (timm's) names
TORCHVISION_RENAMES = {"densenet121": _DENSENET, "densenet169": _DENSENET,
                       "shufflenet_v2_x1_0": _SHUFFLENET, "efficientnet_b0": _EFFICIENTNET_B0,
                       "se_resnet50": _SE_RESNET}
DROPPED = re.compile(r"(^|\.)num_batches_tracked$")
SHOWN = 5  # names listed per kind of mismatch


@dataclass
class Conversion:
    """Converted tensors by palm parameter name, and how they were matched."""

    state: dict[str, np.ndarray]
    ignored: list[str] = field(default_factory=list)  # source keys set aside by the caller
    transposed: list[str] = field(default_factory=list)
    cast: dict[str, str] = field(default_factory=dict)  # name -> source dtype made float32
    caution: str = ""  # another network the file may be, which palm cannot tell from it

    def summary(self) -> str:
        casts = sorted(set(self.cast.values()))
        return (f"{len(self.state)} tensors matched by name; "
                f"{len(self.transposed)} Linear weights transposed"
                + (f"; {', '.join(casts)} made float32" if casts else "")
                + (f"; ignored: {_names(self.ignored)}" if self.ignored else "")
                + (f"; CAUTION: {self.caution}" if self.caution else ""))


def read_pytorch_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict of a PyTorch checkpoint or safetensors file: unwrapped, flat
    name -> numpy array, in the file's order."""
    path = Path(path)
    obj = (read_safetensors(path) if checkpoint_format(path) == "safetensors"
           else read_torch_checkpoint(path))
    return state_dict_of(obj, path)


def state_dict_of(obj: object, path: Path) -> dict[str, np.ndarray]:
    """The flat name -> array state dict inside a loaded checkpoint `obj` (from `path`):
    wrappers taken off, `module.` prefixes dropped, step counters left out."""
    for _ in range(3):  # {'model': {'state_dict': ...}} at most a few levels deep
        inner = next((obj[k] for k in WRAPPER_KEYS
                      if isinstance(obj, dict) and isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise BadCheckpoint(f"{path}: no state dict found (expected name -> tensor)")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise BadCheckpoint(f"{path}: {str(key)[:60]} is not a named tensor "
                                f"({type(value).__name__})")
        name = key[len("module."):] if key.startswith("module.") else key
        if not DROPPED.search(name):
            state[name] = value
    return state


def head_size(state: Mapping[str, np.ndarray], model_name: str) -> int:
    """The number of classes of a torchvision state dict for palm's `model_name`: the length
    of its classifier's bias, found as the tensor whose shape follows num_classes."""
    with paddle.LazyGuard():  # shapes only, nothing allocated
        one, two = (MODELS[model_name](num_classes=n).state_dict() for n in (1, 2))
    heads = [k for k in one if k.endswith("bias") and one[k].shape != two[k].shape]
    renamed = _as_paddle_names(state, model_name)
    found = [renamed[k] for k in heads if k in renamed and renamed[k].ndim == 1]
    if len(found) != 1:
        raise BadCheckpoint(f"cannot tell the number of classes: no classifier bias "
                            f"{', '.join(heads)} in the checkpoint")
    return int(found[0].shape[0])


def check_convertible(model_name: str) -> None:
    """Raise BadConfig(param="model") unless palm converts PyTorch weights for `model_name`."""
    if model_name not in TORCHVISION_CONVERTIBLE:
        raise BadConfig(f"PyTorch weights are not converted for {model_name!r}: its layers "
                        f"differ from torchvision's or are not verified against it; converted: "
                        f"{', '.join(TORCHVISION_CONVERTIBLE)}", param="model")


def convert_state_dict(source: Mapping[str, np.ndarray], model: nn.Layer, model_name: str,
                       ignore: tuple[str, ...] = (), head_may_differ: bool = False
                       ) -> Conversion:
    """`source` (torchvision's names and layouts) as a state dict of `model`, palm's network
    `model_name`, matched by name whatever the order of `source`.

    Args:
        ignore: prefixes of source keys to set aside (reported, never loaded), e.g. the
            MAE decoder of a pre-training checkpoint.
        head_may_differ: classifier tensors may differ from the model's in their class
            dimension (fine-tuning 1000 ImageNet classes to one logit); they are returned
            in their own shape for the loader to skip.

    Raises:
        BadCheckpoint: naming the missing, extra and wrong-shape keys.
    """
    ignore = ignore + SET_ASIDE.get(model_name, ())
    ignored = [k for k in source if k.startswith(ignore)] if ignore else []
    renamed = _as_paddle_names({k: v for k, v in source.items() if k not in ignored}, model_name)
    target = {k: list(v.shape) for k, v in model.state_dict().items()}
    linear = _linear_weights(model)
    fits = _shape_check(linear, getattr(model, "num_classes", None) if head_may_differ else None)
    optional = MAY_BE_MISSING.get(model_name, ()) if head_may_differ else ()
    missing = [k for k in target if k not in renamed and not (optional and k.startswith(optional))]
    extra = [k for k in renamed if k not in target]
    wrong = [f"{k} {list(renamed[k].shape)} -> {shape}" for k, shape in target.items()
             if k in renamed and not fits(k, renamed[k], shape)]
    # every parameter and statistic of palm's networks is a float: an integer or boolean
    # tensor in its place is another model's (or a broken) file
    not_float = [f"{k} ({renamed[k].dtype})" for k in target
                 if k in renamed and not _is_float(renamed[k])]
    if missing or extra or wrong or not_float:
        raise BadCheckpoint(f"the checkpoint does not fit {model_name} ({len(renamed)} tensors "
                            f"for {len(target)} parameters): missing {_names(missing)}; extra "
                            f"{_names(extra)}; wrong shape {_names(wrong)}"
                            + (f"; not floating point {_names(not_float)}" if not_float else ""))
    conversion = Conversion({}, ignored)
    marker, caution = LOOKALIKES.get(model_name, ("", ""))
    if marker in source:
        conversion.caution = caution
    for name in (k for k in target if k in renamed):
        value = renamed[name]
        if name in linear:
            value = value.T
            conversion.transposed.append(name)
        if value.dtype != np.float32:
            conversion.cast[name] = str(value.dtype)
            value = value.astype(np.float32)
        conversion.state[name] = np.ascontiguousarray(value)
    return conversion


def _is_float(value: np.ndarray) -> bool:
    return value.dtype.kind == "f" or str(value.dtype) == "bfloat16"


def _as_paddle_names(state: Mapping[str, np.ndarray], model_name: str) -> dict[str, np.ndarray]:
    """`state` under the names palm's `model_name` gives the same tensors.

    Raises:
        BadCheckpoint: two names become one (a file mixing timm's and torchvision's names),
            which would otherwise keep one of the tensors silently; or names of two sources
            (timm's stem, torchvision's blocks) without any becoming one.
    """
    rules = TORCHVISION_RENAMES.get(model_name, ())
    renamed: dict[str, np.ndarray] = {}
    source_of: dict[str, str] = {}
    for key, value in state.items():
        name = _paddle_name(key, rules)
        if name in source_of:
            raise BadCheckpoint(f"the checkpoint does not fit {model_name}: {source_of[name]} "
                                f"and {key} are both its {name}")
        renamed[name], source_of[name] = value, key
    _check_one_source(state, model_name)
    return renamed


def _check_one_source(state: Mapping[str, np.ndarray], model_name: str) -> None:
    """BadCheckpoint if `state` holds names of more than one source of `model_name`."""
    found = {source: next((k for k in state if k.startswith(prefixes)), None)
             for source, prefixes in SOURCE_PREFIXES.get(model_name, {}).items()}
    found = {source: key for source, key in found.items() if key is not None}
    if len(found) > 1:
        raise BadCheckpoint(f"the checkpoint does not fit {model_name}: it mixes "
                            + " and ".join(f"{source}'s names ({key})"
                                           for source, key in found.items())
                            + ", the tensors of two networks")


def _paddle_name(key: str, rules: tuple = ()) -> str:
    for pattern, replacement in (*RENAMES, *rules):
        key = re.sub(pattern, replacement, key)
    return key


def _linear_weights(model: nn.Layer) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, layer in model.named_sublayers()
            if isinstance(layer, nn.Linear)}


def is_head_shape(saved: list[int], wanted: list[int], outputs: int | None) -> bool:
    """A classifier tensor that differs only in its class dimension: [1000, 512] -> [1, 512]."""
    return (outputs is not None and len(saved) == len(wanted)
            and all(a == b or b == outputs for a, b in zip(saved, wanted)))


def _shape_check(linear: set[str], outputs: int | None):
    """fits(name, value, shape): `value` (PyTorch layout) fills parameter `name` of `shape`,
    or is its classifier with another number of classes (when `outputs` is given)."""
    def fits(name: str, value: np.ndarray, shape: list[int]) -> bool:
        mine = list(value.shape[::-1]) if name in linear and value.ndim == 2 else list(value.shape)
        return mine == shape or is_head_shape(mine, shape, outputs)
    return fits


def _names(names: list[str]) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more

