"""The classic families (LeNet, AlexNet, VGG, GoogLeNet, ResNet): input sizes, paddle.vision compatibility, ResNet attention hook."""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from paddle.vision import models as pv

from palm.models import build_model, list_models
from palm.models.alexnet import MIN_INPUT_SIZE as ALEXNET_MIN
from palm.models.googlenet import MIN_INPUT_SIZE as GOOGLENET_MIN
from palm.models.resnet import RESNET_LAYERS, BasicBlock, Bottleneck, ResNet, _resnet
from tests.marks import quick_or_slow

# Shapes, features-only, training-step and config checks of every network: test_zoo.py.


def _forward(model: nn.Layer, size: int, channels: int = 3) -> paddle.Tensor:
    model.eval()
    with paddle.no_grad():
        return model(paddle.rand([2, channels, size, size]))


def _trainable(model: nn.Layer) -> int:
    return sum(math.prod(p.shape) for p in model.parameters() if not p.stop_gradient)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="resnet5O") as err:
        build_model("resnet5O")
    assert all(name in str(err.value) for name in list_models())


@pytest.mark.parametrize("name", quick_or_slow(["lenet5", "vgg11", "resnet18", "resnet50"]))
def test_forward_at_32px(name):
    # alexnet (>= 63 px) and googlenet (>= 61 px) cannot go this small: their stride-2 max
    # pools without padding run out of pixels; see test_too_small_input_is_a_clear_error.
    assert _forward(build_model(name, num_classes=3), 32).shape == [2, 3]


@pytest.mark.parametrize("name, min_size", [("alexnet", ALEXNET_MIN), ("googlenet", GOOGLENET_MIN)])
def test_too_small_input_is_a_clear_error(name, min_size):
    model = build_model(name)
    assert _forward(model, min_size).shape == [2, 1]
    with pytest.raises(ValueError, match=f"{name} needs inputs of at least {min_size} px"):
        _forward(model, min_size - 1)


@pytest.mark.parametrize("size", [32, 64, 224])
def test_lenet_first_linear_follows_image_size(size):
    model = build_model("lenet", image_size=size)
    assert _forward(model, size).shape == [2, 1]


def test_lenet_course_size_and_mismatch_error():
    # The course's LeNet flattened 120 x 50 x 50 = 300,000 features at 224 px.
    assert build_model("lenet").classifier[0].weight.shape == [300000, 64]
    with pytest.raises(ValueError, match="image_size=224"):
        _forward(build_model("lenet"), 64)


@pytest.mark.parametrize("in_channels, size", [(1, 28), (3, 32)])
def test_lenet5_classic_layout(in_channels, size):
    model = build_model("lenet5", num_classes=10, in_channels=in_channels)
    assert _forward(model, size, in_channels).shape == [2, 10]
    widths = [layer.weight.shape[1] for layer in model.classifier if isinstance(layer, nn.Linear)]
    assert widths == [120, 84, 10]
    features = build_model("lenet5", num_classes=0, in_channels=in_channels)
    assert _forward(features, size, in_channels).shape == [2, 16, 5, 5]


# Trainable parameters at 1000 classes; the same figures are published for torchvision's
# networks of identical layout. The test also checks paddle.vision's count, computed here.
KNOWN_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
}


def _paddle_vision(name: str) -> nn.Layer:
    if name.endswith("_bn"):
        return getattr(pv, name[: -len("_bn")])(batch_norm=True)
    return getattr(pv, name)()


@pytest.mark.parametrize("name", list(KNOWN_PARAMS))
def test_param_count_matches_paddle_vision(name):
    # LazyGuard creates parameters without initialising them: shapes only, instant.
    with paddle.LazyGuard():
        ours = _trainable(build_model(name, num_classes=1000))
        theirs = _trainable(_paddle_vision(name))
    assert ours == theirs == KNOWN_PARAMS[name]


def test_googlenet_with_aux_matches_paddle_vision_params():
    # paddle.vision's GoogLeNet always builds its aux heads: 11,535,736 parameters with them.
    with paddle.LazyGuard():
        ours = build_model("googlenet", num_classes=1000, aux_logits=True)
        theirs = pv.googlenet()
    assert _trainable(ours) == _trainable(theirs) == 11_535_736
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("name", quick_or_slow(["alexnet", "vgg16", "resnet18", "resnet50", "googlenet"]))
def test_paddle_vision_state_dict_gives_same_outputs(name):
    paddle.seed(0)
    theirs = _paddle_vision(name)
    # Our googlenet needs its aux heads to hold every key of paddle.vision's.
    ours = build_model(name, num_classes=1000, **({"aux_logits": True} if name == "googlenet" else {}))
    state = theirs.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in state.items()}
    ours.set_state_dict(state)
    x = paddle.rand([2, 3, 224, 224])
    theirs.eval()
    ours.eval()
    with paddle.no_grad():
        expected = theirs(x)
        got = ours(x)
    if name == "googlenet":
        expected = expected[0]  # paddle.vision returns (main, aux1, aux2) even in eval mode
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, shape",
    quick_or_slow([
        ("alexnet", [2, 256, 1, 1]),
        ("vgg16", [2, 512, 7, 7]),
        ("googlenet", [2, 1024, 1, 1]),
        ("resnet18", [2, 512, 1, 1]),
        ("resnet50", [2, 2048, 1, 1]),
    ]),
)
def test_no_classifier_returns_features(name, shape):
    assert _forward(build_model(name, num_classes=0), 64).shape == shape


@pytest.mark.parametrize(
    "name, size, shape",
    quick_or_slow([
        ("vgg16", 64, [2, 512, 2, 2]),
        ("resnet50", 64, [2, 2048, 2, 2]),
        ("googlenet", 128, [2, 1024, 3, 3]),
    ], {"resnet50"}),
)
def test_without_pool_keeps_the_feature_map(name, size, shape):
    assert _forward(build_model(name, num_classes=0, with_pool=False), size).shape == shape
    with pytest.raises(ValueError, match="with_pool=False"):
        build_model(name, num_classes=1, with_pool=False)


def test_googlenet_aux_heads_only_in_training():
    model = build_model("googlenet", num_classes=10, aux_logits=True)
    model.train()
    outputs = model(paddle.rand([2, 3, 64, 64]))
    assert isinstance(outputs, tuple) and [o.shape for o in outputs] == [[2, 10]] * 3
    assert _forward(model, 64).shape == [2, 10]
    plain = build_model("googlenet", num_classes=10)
    plain.train()
    assert plain(paddle.rand([2, 3, 64, 64])).shape == [2, 10]
    assert not any("_o1" in k or "_out1" in k for k in plain.state_dict())
    with pytest.raises(ValueError, match="aux_logits"):
        build_model("googlenet", num_classes=0, aux_logits=True)


class _Zero(nn.Layer):
    def forward(self, x):
        return x * 0


class _Gate(nn.Layer):
    """A tiny channel gate standing in for SE; records the channels it was built with."""

    built: list[int] = []

    def __init__(self, channels: int):
        super().__init__()
        _Gate.built.append(channels)
        self.scale = self.create_parameter(
            [1, channels, 1, 1], default_initializer=nn.initializer.Constant(0.5)
        )

    def forward(self, x):
        return x * self.scale


@pytest.mark.parametrize("block, in_channels", [(BasicBlock, 16), (Bottleneck, 64)])
def test_attn_layer_acts_on_the_residual_branch_before_the_addition(block, in_channels):
    # With an attention that zeroes the residual branch, an identity block outputs
    # relu(shortcut) = x for non-negative x: so the attention sits before the addition.
    layer = block(in_channels, in_channels // block.expansion, attn_layer=lambda c: _Zero())
    layer.eval()
    x = paddle.rand([2, in_channels, 8, 8])
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


@pytest.mark.parametrize(
    "block, depth, channels",
    [
        (BasicBlock, 18, [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2),
        (Bottleneck, 50, [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3),
    ],
)
def test_resnet_passes_attn_layer_to_every_block(block, depth, channels):
    _Gate.built = []
    model = _resnet(block, depth, num_classes=2, attn_layer=_Gate)
    assert _Gate.built == channels
    assert "layer1.0.attn.scale" in model.state_dict()
    assert _forward(model, 64).shape == [2, 2]


def _bce(outputs, labels):
    if isinstance(outputs, tuple):  # googlenet in training: main + 0.3 x each aux head
        return sum(w * _bce(o, labels) for w, o in zip((1.0, 0.3, 0.3), outputs))
    return nn.functional.binary_cross_entropy_with_logits(outputs, labels)


@pytest.mark.parametrize(
    "name, kw",
    quick_or_slow([("lenet5", {}), ("resnet18", {}), ("googlenet", {"aux_logits": True})], {"lenet5"}),
)
def test_a_few_training_steps_reduce_the_loss(name, kw):
    paddle.seed(0)
    model = build_model(name, num_classes=1, **kw)
    model.train()
    x = paddle.rand([4, 3, 64, 64]) * 2 - 1
    y = paddle.to_tensor([[0.0], [1.0], [1.0], [0.0]])

    def loss_now() -> float:
        paddle.seed(123)  # the same dropout masks before and after training
        with paddle.no_grad():
            return float(_bce(model(x), y))

    before = loss_now()
    opt = paddle.optimizer.Adam(learning_rate=1e-4, parameters=model.parameters())
    for _ in range(5):
        _bce(model(x), y).backward()
        opt.step()
        opt.clear_grad()
    assert loss_now() < before


def test_googlenet_starts_with_moderate_logits():
    # Guards the init in googlenet.ConvLayer: paddle's default gave logits near 20 here.
    paddle.seed(0)
    assert float(_forward(build_model("googlenet", num_classes=10), 64).abs().max()) < 5


@pytest.mark.parametrize(
    "name, kw",
    quick_or_slow([("lenet", {"image_size": 64}), ("alexnet", {}), ("googlenet", {"aux_logits": True})],
                  {"lenet"}),
)
def test_static_graph_with_unknown_sizes_matches_dygraph(name, kw):
    # The input-size checks must not break export (paddle.jit) with free batch/height/width.
    model = build_model(name, num_classes=2, **kw)
    model.eval()
    x = paddle.rand([2, 3, 64, 64])
    expected = model(x).numpy()
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32")]
    static = paddle.jit.to_static(model, input_spec=spec, full_graph=True)
    np.testing.assert_allclose(static(x).numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block, depth", [(BasicBlock, 18), (Bottleneck, 50)])
def test_narrow_resnet_keeps_the_names_with_every_width_divided(block, depth):
    """widths=(8, 16, 32, 64): resnet's names, each 64/128/256/512-wide dimension (times the
    expansion) an eighth of the full network's, kernels, input and classes as they were."""
    with paddle.LazyGuard():
        full = _resnet(block, depth, num_classes=5).state_dict()
        narrow = ResNet(block, RESNET_LAYERS[depth], num_classes=5,
                        widths=(8, 16, 32, 64)).state_dict()
    wide = {w * e for w in (64, 128, 256, 512) for e in (1, block.expansion)}
    assert list(narrow) == list(full)
    for name, value in full.items():
        assert narrow[name].shape == [d // 8 if d in wide else d for d in value.shape], name
    model = ResNet(block, [1, 1, 1, 1], num_classes=0, widths=(8, 16, 32, 64))
    assert _forward(model, 32).shape == [2, 64 * block.expansion, 1, 1]


def test_resnet_stem_width_apart_from_the_first_stage():
    """timm's narrow ResNets keep a 64-channel stem: layer1 then projects 64 -> 8."""
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3, widths=(8, 16, 32, 64), stem_width=64)
    state = model.state_dict()
    assert state["conv1.weight"].shape == [64, 3, 7, 7]
    assert state["layer1.0.conv1.weight"].shape == [8, 64, 3, 3]
    assert state["layer1.0.downsample.0.weight"].shape == [8, 64, 1, 1]
    assert "layer1.0.downsample.0.weight" not in ResNet(
        BasicBlock, [1, 1, 1, 1], widths=(8, 16, 32, 64)).state_dict()
    assert _forward(model, 32).shape == [2, 3]


@pytest.mark.parametrize("kw, words", [
    ({"widths": (8, 16, 32)}, r"widths \[8, 16, 32\] need 4 entries"),
    ({"widths": (8, 0, 32, 64)}, "must be at least 1"),
    ({"stem_width": 0}, "stem_width 0"),
])
def test_resnet_refuses_widths_it_cannot_build(kw, words):
    with pytest.raises(ValueError, match=words):
        ResNet(BasicBlock, [1, 1, 1, 1], **kw)
