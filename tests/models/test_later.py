"""The later architectures: parameter counts, paddle.vision weights, attention and particulars."""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from paddle.vision import models as pv

from palm.models import build_model, list_models
from palm.models.layers import CBAM, SpatialAttention, SqueezeExcite
from palm.models.densenet import DENSENET_CFG, DenseNet
from palm.models.efficientnet import EfficientNet, StochasticDepth
from palm.models.shufflenet import ShuffleNetV2
from tests.marks import quick_or_slow

# Shapes, features-only, training-step and config checks of every network: test_zoo.py.

# Networks paddle.vision also has: their parameter names, shapes and counts must match.
PADDLE_VISION = {
    "densenet121": pv.densenet121,
    "densenet169": pv.densenet169,
    "mobilenet_v1": pv.mobilenet_v1,
    "mobilenet_v2": pv.mobilenet_v2,
    "shufflenet_v2_x1_0": pv.shufflenet_v2_x1_0,
    "squeezenet1_1": pv.squeezenet1_1,
    "inception_v3": pv.inception_v3,
}


def _forward(model: nn.Layer, size: int) -> paddle.Tensor:
    model.eval()
    with paddle.no_grad():
        return model(paddle.rand([2, 3, size, size]))


def _trainable(model: nn.Layer) -> int:
    return sum(math.prod(p.shape) for p in model.parameters() if not p.stop_gradient)


@pytest.mark.parametrize("name", quick_or_slow(sorted(PADDLE_VISION)))
def test_parameters_match_paddle_vision(name):
    """Same state-dict keys, shapes and trainable count as paddle.vision at 1000 classes."""
    ours, ref = build_model(name, num_classes=1000), PADDLE_VISION[name](num_classes=1000)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    assert [v.shape for v in ours_sd.values()] == [v.shape for v in ref_sd.values()]
    assert _trainable(ours) == _trainable(ref)


# Networks paddle.vision lacks: trainable parameters at 1000 classes against a published figure
# (name -> (figure, tolerance)); the source of each figure is on its line.
PUBLISHED: dict[str, tuple[float, float]] = {
    # exact: the layer shapes of the authors' ImageNet model (Caffe Model Zoo "NIN-Imagenet"):
    # 11x11x3x96, 1x1x96x96 x2, 5x5x96x256, 1x1x256x256 x2, 3x3x256x384, 1x1x384x384 x2,
    # 3x3x384x1024, 1x1x1024x1024, 1x1x1024x1000, plus biases
    "nin": (7_595_176, 0),
    # 28.09M (two decimals) for both: Woo et al. 2018 (CBAM), ImageNet-1K table, "ResNet50 + SE"
    # and "ResNet50 + CBAM"; Hu et al. 2018 give ~2.5M on top of ResNet-50's ~25.6M
    "se_resnet50": (28.09e6, 0.005e6),
    "cbam_resnet50": (28.09e6, 0.005e6),
    # exact: Chollet 2017, Table 3 (Xception 22,855,952 parameters)
    "xception": (22_855_952, 0),
    # exact: the count of the reference implementations (torchvision's efficientnet_b0 metadata);
    # Tan & Le 2019, Table 2: 5.3M
    "efficientnet_b0": (5_288_548, 0),
}


def test_parameter_tables_name_registered_networks():
    # A count is checked where a network has a reference figure; a new network needs none.
    assert not set(PUBLISHED) & set(PADDLE_VISION)
    assert set(PUBLISHED) | set(PADDLE_VISION) <= set(list_models())


@pytest.mark.parametrize("name", quick_or_slow(sorted(PUBLISHED), {"nin"}))
def test_parameters_match_published_figure(name):
    figure, tolerance = PUBLISHED[name]
    assert abs(_trainable(build_model(name, num_classes=1000)) - figure) <= tolerance


@pytest.mark.parametrize("name", quick_or_slow(sorted(PADDLE_VISION)))
def test_paddle_vision_state_dict_gives_same_outputs(name):
    paddle.seed(0)
    ref = PADDLE_VISION[name](num_classes=1000)
    ours = build_model(name, num_classes=1000)
    size = 96 if name == "inception_v3" else 64  # paddle.vision's Inception-v3 needs >= 75 px
    x = paddle.rand([2, 3, size, size])
    with paddle.no_grad():
        ref.train()
        ref(x)  # move the BN running statistics away from (0, 1), so they must load too
    ours.set_state_dict(ref.state_dict())
    ref.eval()
    ours.eval()
    with paddle.no_grad():
        np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale, ref", [(0.5, pv.shufflenet_v2_x0_5), (1.5, pv.shufflenet_v2_x1_5)])
def test_shufflenet_width_rows_match_paddle_vision(scale, ref):
    ours_sd = ShuffleNetV2(scale, num_classes=1000).state_dict()
    ref_sd = ref(num_classes=1000).state_dict()
    assert [(k, v.shape) for k, v in ours_sd.items()] == [(k, v.shape) for k, v in ref_sd.items()]


def test_squeezenet_single_logit_can_be_negative():
    # paddle.vision ReLUs the class maps; a one-logit model must be able to say "below 0.5"
    model = build_model("squeezenet1_1", num_classes=1)
    model._conv9.weight.set_value(paddle.zeros_like(model._conv9.weight))
    model._conv9.bias.set_value(paddle.full([1], -3.0))
    np.testing.assert_allclose(_forward(model, 64).numpy(), -3.0)


@pytest.mark.parametrize("block", [SqueezeExcite(32), CBAM(32)])
def test_attention_blocks_keep_shape_and_only_reweight(block):
    x = paddle.rand([2, 32, 8, 8]) + 0.1
    block.eval()
    with paddle.no_grad():
        y = block(x)
    assert y.shape == x.shape
    ratio = (y / x).numpy()  # gates are sigmoids: each element scaled by a factor in (0, 1)
    assert (ratio > 0).all() and (ratio < 1).all()


def test_squeeze_excite_gates_whole_channels():
    block = SqueezeExcite(32)
    x = paddle.rand([2, 32, 8, 8]) + 0.1
    with paddle.no_grad():
        ratio = (block(x) / x).numpy()
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :, :1, :1], ratio.shape), rtol=1e-5)


@pytest.mark.parametrize("name", quick_or_slow(["se_resnet50", "cbam_resnet50"], {"se_resnet50"}))
def test_attention_resnet_holds_resnet50_weights(name):
    """Every ResNet-50 tensor (paddle.vision names and shapes) is there; the rest is attention."""
    ours = {k: v.shape for k, v in build_model(name, num_classes=1000).state_dict().items()}
    ref = {k: v.shape for k, v in pv.resnet50(num_classes=1000).state_dict().items()}
    assert all(ours.get(k) == shape for k, shape in ref.items())
    assert all(".attn." in k for k in set(ours) - set(ref))


def test_spatial_attention_pools_mean_and_max_over_channels():
    block = SpatialAttention(7)
    block.eval()
    x = paddle.randn([2, 16, 9, 9])
    with paddle.no_grad():
        pooled = paddle.concat([x.mean(axis=1, keepdim=True), x.max(axis=1, keepdim=True)], axis=1)
        expected = x * nn.functional.sigmoid(block.bn(block.conv(pooled)))
        np.testing.assert_allclose(block(x).numpy(), expected.numpy(), atol=1e-6)


# B1..B3 are rows of EFFICIENTNET_PARAMS: their counts equal the reference implementations'
# (torchvision metadata); Tan & Le 2019, Table 2, lists 7.8M, 9.2M and 12M.
@pytest.mark.parametrize(
    "variant, count",
    quick_or_slow([("b1", 7_794_184), ("b2", 9_109_994), ("b3", 12_233_232)], {"b1"}),
)
def test_efficientnet_rows_scale_like_the_reference(variant, count):
    assert _trainable(EfficientNet(variant, num_classes=1000)) == count


def test_stochastic_depth_drops_whole_samples_in_training_only():
    layer = StochasticDepth(0.25)
    x = paddle.ones([2000, 3, 2, 2])
    paddle.seed(0)
    out = layer(x).numpy()
    per_sample = out.reshape(2000, -1)
    assert (per_sample == per_sample[:, :1]).all()  # a sample is kept or dropped as a whole
    dropped = per_sample[:, 0] == 0
    np.testing.assert_allclose(per_sample[~dropped], 1 / 0.75)  # rescaled: the expectation is kept
    assert abs(dropped.mean() - 0.25) < 0.04
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy())


def test_efficientnet_drop_path_rises_towards_the_last_block():
    model = build_model("efficientnet_b0", num_classes=1)
    rates = [b.drop_path.p for b in model.blocks if b.drop_path is not None]
    assert rates == sorted(rates) and 0 < rates[-1] < 0.2


@pytest.mark.slow
def test_inception_v3_aux_head_in_training_only():
    model = build_model("inception_v3", num_classes=3, aux_logits=True)
    model.train()
    main, aux = model(paddle.rand([2, 3, 64, 64]))
    assert main.shape == [2, 3] and aux.shape == [2, 3]
    assert _forward(model, 64).shape == [2, 3]  # eval: the main output alone
    assert build_model("inception_v3", num_classes=3).aux_logits is False  # off by default
    with pytest.raises(ValueError, match="aux_logits"):
        build_model("inception_v3", num_classes=0, aux_logits=True)


def test_densenet_config_builds_the_depths_network_or_a_narrow_one():
    with paddle.LazyGuard():
        by_depth = DenseNet(121, num_classes=5).state_dict()
        by_config = DenseNet(config=DENSENET_CFG[121], num_classes=5).state_dict()
    assert {k: v.shape for k, v in by_config.items()} == {k: v.shape for k, v in by_depth.items()}
    # stem 8, blocks of 2/1/1/1 layers adding 4 channels each, transitions halving:
    # 8 + 2*4 = 16 -> 8, 8 + 4 = 12 -> 6, 6 + 4 = 10 -> 5, 5 + 4 = 9 features
    model = DenseNet(config=(8, 4, [2, 1, 1, 1]), bn_size=2, num_classes=0)
    assert _forward(model, 32).shape == [2, 9, 1, 1]
    assert model.state_dict()["db_conv_2.conv2_2.bn_ac_func1._conv.weight"].shape == [8, 12, 1, 1]
    assert "db_conv_3.conv3_2.bn_ac_func1._conv.weight" not in model.state_dict()


@pytest.mark.parametrize("kw, words", [
    ({"depth": 121, "config": (8, 4, [1])}, r"give depth \(121\) or config"),
    ({"depth": 50}, r"depth 50 not in \[121, 169\]"),
    ({"config": (8, 4, [])}, "is not"),
    ({"config": (8, 0, [1, 1])}, "is not"),
    ({"config": (8, 4, 6)}, "is not"),
    ({"config": (8, 4)}, "is not"),
    ({"config": (8.0, 4, [1])}, "is not"),
])
def test_densenet_refuses_a_config_it_cannot_build(kw, words):
    with pytest.raises(ValueError, match=f"densenet: .*{words}"):
        DenseNet(**kw)
