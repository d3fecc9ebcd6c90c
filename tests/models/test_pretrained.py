"""load_pretrained: ImageNet-style state dicts into 1-logit models, and bad files."""
from __future__ import annotations

import logging

import numpy as np
import paddle
import pytest
from paddle.vision import models as pv

from palm.models import build_model, load_pretrained
from palm.models.resnet import _resnet, Bottleneck


@pytest.fixture(scope="module")
def resnet18_imagenet(tmp_path_factory):
    """A paddle.vision resnet18 (1000 classes, random init) saved as a .pdparams file."""
    paddle.seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pdparams"
    paddle.save(pv.resnet18().state_dict(), str(path))
    return path


def test_one_logit_model_skips_exactly_the_classifier(resnet18_imagenet, caplog):
    model = build_model("resnet18", num_classes=1)
    fc_before = model.fc.weight.numpy().copy()
    with caplog.at_level(logging.INFO, logger="palm.models.pretrained"):
        report = load_pretrained(model, resnet18_imagenet)
    assert report["skipped"] == ["fc.weight", "fc.bias"]
    assert report["missing"] == [] and report["unexpected"] == []
    state = paddle.load(str(resnet18_imagenet))
    assert sorted(report["loaded"]) == sorted(k for k in state if not k.startswith("fc."))
    np.testing.assert_array_equal(model.conv1.weight.numpy(), state["conv1.weight"].numpy())
    np.testing.assert_array_equal(model.fc.weight.numpy(), fc_before)  # kept its own init
    [record] = caplog.records
    assert record.levelno == logging.INFO
    skipped = "skipped (shape differs): fc.weight [512, 1000]->[512, 1], fc.bias [1000]->[1]"
    assert skipped in record.message
    assert str(resnet18_imagenet) in record.message


def test_paddle_weights_named_bin_load_as_paddle_weights(resnet18_imagenet, tmp_path):
    """The file's bytes say which reader: a Paddle pickle named `.bin` is no PyTorch file."""
    renamed = tmp_path / "resnet18.bin"
    renamed.write_bytes(resnet18_imagenet.read_bytes())
    model = build_model("resnet18", num_classes=1)
    report = load_pretrained(model, renamed)
    assert report["skipped"] == ["fc.weight", "fc.bias"] and report["missing"] == []
    np.testing.assert_array_equal(model.conv1.weight.numpy(),
                                  paddle.load(str(resnet18_imagenet))["conv1.weight"].numpy())


def test_same_shape_model_loads_everything(resnet18_imagenet):
    model = build_model("resnet18", num_classes=1000)
    report = load_pretrained(model, resnet18_imagenet)
    assert report["skipped"] == [] and report["missing"] == [] and report["unexpected"] == []


def test_missing_and_unexpected_keys_are_reported(tmp_path, caplog):
    # resnet weights into a resnet whose blocks carry extra attention parameters (missing
    # from the file), from a file with paddle.vision googlenet's aux heads (unexpected).
    path = tmp_path / "mixed.pdparams"
    paddle.seed(0)
    state = pv.resnet50().state_dict()
    state["_fc_o1.weight"] = paddle.zeros([1152, 1024])
    paddle.save(state, str(path))
    model = _resnet(Bottleneck, 50, num_classes=1, attn_layer=lambda c: paddle.nn.Conv2D(c, c, 1))
    with caplog.at_level(logging.INFO, logger="palm.models.pretrained"):
        report = load_pretrained(model, path)
    assert report["skipped"] == ["fc.weight", "fc.bias"]
    assert len(report["missing"]) == 2 * 16  # weight + bias of one attention conv per block
    assert all(".attn." in k for k in report["missing"])
    assert report["unexpected"] == ["_fc_o1.weight"]
    assert caplog.records[-1].levelno == logging.WARNING  # missing weights deserve attention


def test_googlenet_without_aux_reports_aux_keys_as_unexpected(tmp_path):
    path = tmp_path / "googlenet.pdparams"
    paddle.save(pv.googlenet().state_dict(), str(path))
    report = load_pretrained(build_model("googlenet", num_classes=1), path)
    assert report["skipped"] == ["_fc_out.weight", "_fc_out.bias"]
    assert report["missing"] == []
    assert sorted({k.split(".")[0] for k in report["unexpected"]}) == [
        "_conv_o1", "_conv_o2", "_fc_o1", "_fc_o2", "_out1", "_out2"
    ]


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.pdparams"
    with pytest.raises(FileNotFoundError, match="nope.pdparams: pretrained weights file not found"):
        load_pretrained(build_model("lenet5"), path)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "broken.pdparams"
    path.write_bytes(b"this is not a paddle file")
    with pytest.raises(ValueError, match="broken.pdparams: not a weights file palm reads"):
        load_pretrained(build_model("lenet5"), path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pdparams"
    paddle.save(paddle.zeros([3]), str(path))
    with pytest.raises(ValueError, match="tensor.pdparams: expected a state dict"):
        load_pretrained(build_model("lenet5"), path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "lenet5.pdparams"
    paddle.save(build_model("lenet5").state_dict(), str(path))
    with pytest.raises(ValueError, match="lenet5.pdparams: no tensor matches ResNet"):
        load_pretrained(build_model("resnet18"), path)
