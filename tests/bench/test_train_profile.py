"""The profile section: its phases, operator types and convolution kernels are measured on
palm's network (and PyTorch's twin when torch is installed) and printed per framework."""
from __future__ import annotations

import pytest

from palm.bench.report import profile_lines
from palm.bench.train import NO_TORCH
from palm.bench.train_profile import bench_train_profile, conv_flops, conv_shapes, op_type
from palm.flops import count_flops
from palm.models import build_model


@pytest.mark.parametrize("event, kind", [
    ("conv2d dygraph", "conv"), ("Global_Conv2dGradNodeFinal", "conv"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "conv"),
    ("aten::batch_norm", "batch_norm"), ("Global_BatchNormGradNode", "batch_norm"),
    ("autograd::engine::evaluate_function: ThresholdBackward0", "relu"),
    ("aten::max_pool2d", "pool"), ("Global_GradNodeAccumulation", "grad_accumulation"),
    ("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad",
     "grad_accumulation"), ("aten::add_", "add"), ("Global_AddGradNode", "add"),
    ("momentum_ dygraph", "optimizer"), ("Optimizer.step#SGD.step", "optimizer"),
    ("aten::linear", "other"), ("reshape dygraph", "other"),
])
def test_profiler_events_are_grouped_by_operator_type(event, kind):
    assert op_type(event) == kind


def test_convolution_flops_add_up_to_the_networks_count():
    """palm.flops counts every Conv2D and Linear by forward hooks: without ResNet18's one
    512 -> 1 linear layer it must equal the convolutions' shapes counted here."""
    shapes = conv_shapes("resnet18", 2, 64)
    assert sum(n for n in shapes.values()) == 20  # ResNet18: 17 convs + 3 downsampling
    per_image = sum(conv_flops(s) * n for s, n in shapes.items()) / 2
    assert per_image == count_flops(build_model("resnet18", 1), (1, 3, 64, 64)) - 2 * 512


def test_profile_section_measures_each_phase_kind_and_framework(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    profile = bench_train_profile("resnet18", 2, 32, steps=1, repeats=1)
    assert list(tmp_path.iterdir()) == []  # no profiler trace left behind
    frameworks = ["paddle"] + ([] if profile["torch"] == NO_TORCH else ["torch"])
    for framework in frameworks:
        result = profile[framework]
        assert set(result["phases"]) == {"forward", "backward", "optimizer"}
        assert all(s > 0 for s in result["phases"].values())
        conv = result["op_types"]["conv"]
        assert conv["forward"] > 0 and conv["backward"] > 0
        assert result["op_types"]["optimizer"]["optimizer"] > 0
        assert set(result["conv"]) == {"forward", "data_grad", "filter_grad"}
        assert all(r["gflop_per_s"] > 0 for r in result["conv"].values())
    assert set(profile["paddle"]["conv_onednn"]) == {"forward", "data_grad", "filter_grad"}
    lines = profile_lines(profile)
    assert sum(line.startswith("profile paddle") for line in lines) == 4
    if profile["torch"] == NO_TORCH:
        assert f"profile torch: {NO_TORCH}" in lines
