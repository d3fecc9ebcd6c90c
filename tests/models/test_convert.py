"""torchvision (and timm) weights onto palm's networks without PyTorch: the converted network
gives torchvision's (timm's) logits (weights from a formula, logits from PyTorch in the
fixtures), and whatever does not fit is named."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest
from safetensors.numpy import save_file

from palm.cli.common import cli
from palm.engine.tasks import run_convert
from palm.errors import BadCheckpoint, BadConfig, OutputRefused
from palm.models import build_model, load_pretrained
from palm.models.convert import (TORCHVISION_CONVERTIBLE, convert_state_dict, head_size,
                                 read_pytorch_weights, state_dict_of)
from palm.models.densenet import DenseNet
from palm.models.resnet import BasicBlock, ResNet
from palm.models.vit import VisionTransformer
from palm.weights import UnsafeWeightsError, read_weights

from tests.fixtures.pytorch.formula import SCRAMBLED, fixed_input, formula_weights
from tests.marks import quick_or_slow

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pytorch"
KEYS = json.loads((FIXTURES / "torchvision_keys.json").read_text())
LOGITS = json.loads((FIXTURES / "torchvision_logits.json").read_text())


def _torchvision_state(name: str) -> dict[str, np.ndarray]:
    """The state dict torchvision's `name` had in make_fixtures.py, num_batches_tracked too."""
    return formula_weights(KEYS[name], scrambled=name in SCRAMBLED)


# fixture entries that are a palm network built with options: name -> (network, options)
BUILT_AS = {"vit_tiny_patch16_avg": ("vit_tiny_patch16", {"global_pool": "avg"}),
            "efficientnet_b0_timm": ("efficientnet_b0", {})}
VIT_INPUT = 224  # the fixtures' ViT logits are at the size the position embedding is for


def _palm_logits(model: paddle.nn.Layer, size: int = 64, sign: float = 1.0) -> np.ndarray:
    """The first logits of `model` on fixed_input (times `sign`: -1 negates it)."""
    model.eval()
    x = paddle.to_tensor((sign * fixed_input(size)).astype(np.float32))
    return model(x).numpy()[:, :len(LOGITS["resnet18"][0])]


# one network per block design whose logits are compared; the deeper or wider variants of the
# same code (vgg16/19, resnet34/101/152, densenet169) are checked tensor by tensor below
LOGITS_CHECKED = ("vgg11", "vgg16_bn", "resnet18", "resnet50", "densenet121", "mobilenet_v2",
                  "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_b0_timm", "se_resnet50",
                  "vit_tiny_patch16", "vit_tiny_patch16_avg")


QUICK_LOGITS = {"resnet18", "mobilenet_v2", "efficientnet_b0", "efficientnet_b0_timm",
                "vit_tiny_patch16"}
TOLERANCE = 1e-4  # relative, and of the largest logit


def _converted(entry: str) -> paddle.nn.Layer:
    """palm's network with `entry`'s formula weights converted onto it."""
    name, options = BUILT_AS.get(entry, (entry, {}))
    # sorted by name, as safetensors lists them: the match must not rely on the order
    source = {k: v for k, v in sorted(_torchvision_state(entry).items())
              if not k.endswith("num_batches_tracked")}
    model = build_model(name, num_classes=head_size(source, name), **options)
    conversion = convert_state_dict(source, model, name)
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in conversion.state.items()})
    assert set(conversion.state) == set(model.state_dict())
    assert set(conversion.cast.values()) == {"float64"}  # made float32
    assert len(conversion.transposed) == sum(isinstance(layer, paddle.nn.Linear)
                                             for layer in model.sublayers())
    return model


def _input_size(entry: str) -> int:
    return VIT_INPUT if entry.startswith("vit") else 64


@pytest.mark.parametrize("entry", quick_or_slow(LOGITS_CHECKED, quick=QUICK_LOGITS))
def test_converted_network_gives_torchvisions_logits_which_depend_on_the_input(entry):
    """The converted network gives PyTorch's logits, and the negated input moves them by 100
    times the tolerance: logits the input barely moves (smooth formula weights: EfficientNet-
    B0's by 4e-15 of the largest) passed the comparison with a block in another's place."""
    model, size = _converted(entry), _input_size(entry)
    expected, logits = np.asarray(LOGITS[entry]), _palm_logits(model, size)
    np.testing.assert_allclose(logits, expected, rtol=TOLERANCE,
                               atol=TOLERANCE * np.abs(expected).max())
    moved = np.abs(_palm_logits(model, size, sign=-1.0) - logits).max() / np.abs(logits).max()
    assert moved > 100 * TOLERANCE, f"the input moves {entry}'s logits by {moved:.2g} relative"


@pytest.mark.parametrize("entry", sorted(set(LOGITS) - set(LOGITS_CHECKED)))
def test_every_tensor_of_the_other_variants_maps(entry):
    """Names and shapes only (zeros cost no memory, LazyGuard builds no weights)."""
    name, options = BUILT_AS.get(entry, (entry, {}))
    source = {k: np.zeros(shape, np.float32) for k, shape in KEYS[entry]
              if not k.endswith("num_batches_tracked")}
    with paddle.LazyGuard():
        model = build_model(name, num_classes=1000, **options)
    assert set(convert_state_dict(source, model, name).state) == set(model.state_dict())


def _zeros(entry: str) -> dict[str, np.ndarray]:
    """A state dict with `entry`'s names and shapes (zeros cost no memory)."""
    return {k: np.zeros(shape, np.float32) for k, shape in KEYS[entry]
            if not k.endswith("num_batches_tracked")}


def test_timm_and_torchvision_efficientnet_b0_land_on_the_same_parameters():
    """Both list the same layers in the same order (so the formula gives them equal tensors,
    and PyTorch equal logits), under other names: each source's rules must put every tensor
    where the other's put its twin."""
    assert LOGITS["efficientnet_b0"] == LOGITS["efficientnet_b0_timm"]
    with paddle.LazyGuard():
        model = build_model("efficientnet_b0", num_classes=1000)
    timm, torchvision = (
        convert_state_dict({k: v for k, v in _torchvision_state(entry).items()
                            if not k.endswith("num_batches_tracked")}, model, "efficientnet_b0").state
        for entry in ("efficientnet_b0_timm", "efficientnet_b0"))
    assert timm.keys() == torchvision.keys() == model.state_dict().keys()
    for name, value in timm.items():
        np.testing.assert_array_equal(value, torchvision[name], err_msg=name)


@pytest.mark.parametrize("entry, offered_as, named", [
    ("efficientnet_b0_timm", "se_resnet50", ("missing conv1.weight, layer1.0.conv1.weight",
                                             "extra conv_stem.weight, blocks.0.0.conv_dw.weight",
                                             "wrong shape bn1.weight [32] -> [64]")),
    # Cadene's SENet port: other names (and stride on the 1x1, a ceil-mode max pool)
    ("se_resnet50_legacy", "se_resnet50", ("missing conv1.weight, bn1.weight",
                                           "extra layer0.conv1.weight, layer0.bn1.weight")),
    ("se_resnet50", "efficientnet_b0", ("missing stem.0.weight, blocks.0.block.0.0.weight",
                                        "extra conv1.weight, layer1.0.conv1.weight")),
])
def test_another_networks_checkpoint_is_refused_naming_its_keys(entry, offered_as, named):
    with paddle.LazyGuard():
        model = build_model(offered_as, num_classes=1000)
    with pytest.raises(BadCheckpoint, match=f"does not fit {offered_as}") as error:
        convert_state_dict(_zeros(entry), model, offered_as)
    for words in named:
        assert words in str(error.value)


@pytest.mark.parametrize("key", [
    "blocks.0.1.conv_dw.weight",  # a second block in stage 0 (B1 and up): not B0's blocks.1
    "blocks.7.0.conv_pw.weight",  # a stage B0 has not
    "blocks.0.0.bn3.weight",      # a layer stage 0's depthwise-separable block has not
    "features.2.2.block.0.0.weight",  # torchvision: a third block in stage 2 (B0 has two)
])
def test_efficientnet_layers_b0_has_not_are_extra_not_moved(key):
    # each key among its own source's names (a file of both is refused as such)
    own = "efficientnet_b0" if key.startswith("features.") else "efficientnet_b0_timm"
    source = {**_zeros(own), key: np.zeros([16, 1, 3, 3], np.float32)}
    with paddle.LazyGuard():
        model = build_model("efficientnet_b0", num_classes=1000)
    with pytest.raises(BadCheckpoint, match=f"missing none; extra {key}; wrong shape none"):
        convert_state_dict(source, model, "efficientnet_b0")


def test_a_file_mixing_timm_and_torchvision_names_is_refused():
    """Both name the same tensors: one of each pair would be dropped without a word."""
    source = {**_zeros("efficientnet_b0"), **_zeros("efficientnet_b0_timm")}
    with paddle.LazyGuard():
        model = build_model("efficientnet_b0", num_classes=1000)
    with pytest.raises(BadCheckpoint, match=r"features\.0\.0\.weight and conv_stem\.weight are "
                                            r"both its stem\.0\.weight"):
        convert_state_dict(source, model, "efficientnet_b0")


def test_a_file_of_timms_stem_and_head_with_torchvisions_blocks_is_refused():
    """No name becomes another's here, yet the file splices two networks' tensors."""
    timm = {k: v for k, v in _zeros("efficientnet_b0_timm").items() if not k.startswith("blocks.")}
    torchvision = {k: v for k, v in _zeros("efficientnet_b0").items()
                   if k.startswith("features.") and not k.startswith(("features.0.", "features.8."))}
    with paddle.LazyGuard():
        model = build_model("efficientnet_b0", num_classes=1000)
    with pytest.raises(BadCheckpoint, match=r"mixes timm's names \(conv_stem\.weight\) and "
                                            r"torchvision's names \(features\.1\."):
        convert_state_dict({**timm, **torchvision}, model, "efficientnet_b0")


@pytest.mark.parametrize("entry", ["efficientnet_b0_timm", "efficientnet_b0"])
def test_timm_efficientnet_b0_names_carry_a_caution_about_tf_efficientnet_b0(entry):
    """timm's tf_efficientnet_b0 has the same names and shapes, other padding: the converted
    network would be wrong, and nothing in the file says which one it is."""
    with paddle.LazyGuard():
        model = build_model("efficientnet_b0", num_classes=1000)
    summary = convert_state_dict(_zeros(entry), model, "efficientnet_b0").summary()
    assert ("CAUTION: timm's tf_efficientnet_b0" in summary) == (entry == "efficientnet_b0_timm")


@pytest.mark.parametrize("entry", ["efficientnet_b0", "efficientnet_b0_timm", "se_resnet50"])
@pytest.mark.parametrize("classes", [1000, 5])
def test_head_size_reads_the_classifier_of_timm_and_torchvision_names(entry, classes):
    """timm's `classifier`, torchvision's `classifier.1` (after its Dropout), timm's ResNet `fc`."""
    name = BUILT_AS.get(entry, (entry,))[0]
    source = _zeros(entry)
    *_, weight, bias = source  # the classifier is the last layer of all three
    assert weight.endswith(".weight") and bias.endswith(".bias") and source[bias].shape == (1000,)
    source[weight] = np.zeros([classes, source[weight].shape[1]], np.float32)
    source[bias] = np.zeros([classes], np.float32)
    assert head_size(source, name) == classes


@pytest.mark.parametrize("name", quick_or_slow(
    ["alexnet", "squeezenet1_1", "inception_v3", "googlenet"], quick={"squeezenet1_1"}))
def test_networks_whose_layers_differ_from_torchvisions_are_refused(name, tmp_path):
    """Their tensors have the shapes palm's would take (googlenet aside) but the layers around
    them differ, so the outputs would be wrong without an error."""
    save_file({k: v.astype(np.float32) for k, v in _torchvision_state(name).items()},
              str(tmp_path / "w.safetensors"))
    with pytest.raises(BadConfig, match=f"PyTorch weights are not converted for '{name}'"):
        run_convert(name, str(tmp_path / "w.safetensors"), str(tmp_path / "out.pdparams"))
    with pytest.raises(BadConfig, match="not converted"):
        load_pretrained(build_model(name), tmp_path / "w.safetensors", name)
    assert not (tmp_path / "out.pdparams").exists()


def test_every_convertible_network_has_its_torchvision_names_in_the_fixtures():
    assert set(TORCHVISION_CONVERTIBLE) - set(KEYS) <= {
        "vgg13", "vgg11_bn", "vgg13_bn", "vgg19_bn",  # the same code as the VGGs tested
        "vit_small_patch16", "vit_base_patch16", "vit_large_patch16", "retfound"}  # as ViT-Tiny
    assert {BUILT_AS.get(e, (e,))[0] for e in LOGITS} <= set(TORCHVISION_CONVERTIBLE)


def test_convert_keeps_the_head_and_loads_strictly(tmp_path, capsys):
    """`palm convert` on a float16 safetensors file: float32 .pdparams that a 1000-class
    resnet18 loads with every key, giving the logits of the float16 weights."""
    state = _torchvision_state("resnet18")
    half = {k: v.astype(np.float16) if v.dtype == np.float64 else v for k, v in state.items()}
    save_file(half, str(tmp_path / "resnet18.safetensors"))
    out = tmp_path / "resnet18.pdparams"
    with pytest.raises(SystemExit) as stop:
        cli("convert", ["--model", "resnet18", "--input", str(tmp_path / "resnet18.safetensors"),
                        "--output", str(out)])
    assert stop.value.code == 0
    printed = capsys.readouterr().out
    assert "resnet18 with 1000 classes, 102 tensors matched by name; 1 Linear weights " \
           "transposed; float16 made float32" in printed
    weights = read_weights(out)
    assert {str(v.dtype) for v in weights.values()} == {"paddle.float32"}
    model = build_model("resnet18", num_classes=1000)
    missing, unexpected = model.set_state_dict(weights)
    assert not missing and not unexpected
    np.testing.assert_allclose(_palm_logits(model), LOGITS["resnet18"], rtol=0.02, atol=0.02)
    with pytest.raises(OutputRefused, match="exists"):
        run_convert("resnet18", str(tmp_path / "resnet18.safetensors"), str(out))


def test_wrappers_prefixes_and_counters_are_taken_off(tmp_path):
    weight, count = np.ones((2, 2), np.float32), np.zeros((), np.int64)
    checkpoint = {"epoch": 5, "model": {"module.conv1.weight": weight,
                                        "module.bn1.num_batches_tracked": count}}
    assert state_dict_of(checkpoint, tmp_path / "x.pth") == {"conv1.weight": weight}
    with pytest.raises(BadCheckpoint, match="x.pth: epoch is not a named tensor"):
        state_dict_of({"epoch": 5, "conv1.weight": weight}, tmp_path / "x.pth")
    with pytest.raises(BadCheckpoint, match="no state dict found"):
        state_dict_of([weight], tmp_path / "x.pth")


def test_what_does_not_fit_is_named():
    source = {k: v for k, v in _torchvision_state("resnet18").items()
              if k != "layer4.1.bn2.running_var" and not k.endswith("num_batches_tracked")}
    source["layer1.0.conv1.weight"] = source["layer1.0.conv1.weight"][:, :32]
    with pytest.raises(BadCheckpoint) as error:
        convert_state_dict(source, build_model("resnet18", num_classes=1000), "resnet18")
    message = str(error.value)
    assert "does not fit resnet18 (101 tensors for 102 parameters)" in message
    assert "missing layer4.1.bn2._variance; extra none" in message
    assert "wrong shape layer1.0.conv1.weight [64, 32, 3, 3] -> [64, 64, 3, 3]" in message


@pytest.mark.slow
def test_train_from_a_pytorch_file_skips_the_head(palm_root, tmp_path, capsys):
    save_file({k: v.astype(np.float32) for k, v in _torchvision_state("resnet18").items()},
              str(tmp_path / "resnet18.safetensors"))
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        cli("train", ["--model", "resnet18", "--pretrained", str(tmp_path / "resnet18.safetensors"),
                      "--data-root", str(palm_root), "--image-size", "32", "--epochs", "1",
                      "--lr", "1e-9", "--num-workers", "0", "--cache-dir", "none", "--device",
                      "cpu", "--no-progress", "--output", str(run)])
    assert stop.value.code == 0
    assert "skipped (shape differs): fc.weight [512, 1000]->[512, 1]" in capsys.readouterr().err
    # lr 1e-9 moves weights that BatchNorm follows by up to ~1e-3 on these formula weights;
    # a network not started from the file differs by ~0.1
    trained = read_weights(run / "last.pdparams")["conv1.weight"].numpy()
    np.testing.assert_allclose(trained, _torchvision_state("resnet18")["conv1.weight"], atol=2e-3)


def test_integer_tensors_where_floats_belong_are_refused(tmp_path):
    state = {k: v.astype(np.float32) for k, v in _torchvision_state("resnet18").items()}
    state["conv1.weight"] = state["conv1.weight"].astype(np.int32)
    save_file(state, str(tmp_path / "ints.safetensors"))
    with pytest.raises(BadCheckpoint, match=r"not floating point conv1.weight \(int32\)"):
        run_convert("resnet18", str(tmp_path / "ints.safetensors"), str(tmp_path / "o.pdparams"))
    assert not (tmp_path / "o.pdparams").exists()


def test_a_pth_that_would_run_code_is_refused_by_convert_and_pretrained(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hostile = tmp_path / "resnet18.pth"
    with zipfile.ZipFile(FIXTURES / "tensors.pth") as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps({"conv1.weight": Payload()}, protocol=2)
            dst.writestr(info.filename, data)
    with pytest.raises(UnsafeWeightsError):
        run_convert("resnet18", str(hostile), str(tmp_path / "o.pdparams"))
    with pytest.raises(UnsafeWeightsError):
        load_pretrained(build_model("resnet18"), hostile, "resnet18")
    with pytest.raises(SystemExit) as stop:
        cli("convert", ["--model", "resnet18", "--input", str(hostile), "--output",
                        str(tmp_path / "o.pdparams")])
    assert str(stop.value.code).startswith(f"error: refusing {hostile}: it contains ")
    assert not marker.exists() and not (tmp_path / "o.pdparams").exists()


def test_convert_arguments_that_were_misread(tmp_path, capsys):
    """--num-classes 0 was taken as 'read it from the file', -1 failed as extra fc tensors; a
    .pdparams input was 'not a zip-format PyTorch checkpoint'; an upper-case .SAFETENSORS
    was read as a .pth and refused the same way."""
    state = {k: v.astype(np.float32) for k, v in _torchvision_state("resnet18").items()}
    save_file(state, str(tmp_path / "R18.SAFETENSORS"))
    for classes in (0, -1):
        with pytest.raises(BadConfig, match=f"num_classes must be at least 1, got {classes}"):
            run_convert("resnet18", str(tmp_path / "R18.SAFETENSORS"), str(tmp_path / "o.pdparams"),
                        num_classes=classes)
    (tmp_path / "w.pdparams").write_bytes(b"\x80\x02}.")
    with pytest.raises(BadConfig, match="not a PyTorch checkpoint or safetensors file"):
        run_convert("resnet18", str(tmp_path / "w.pdparams"), str(tmp_path / "o.pdparams"))
    assert not (tmp_path / "o.pdparams").exists()
    run_convert("resnet18", str(tmp_path / "R18.SAFETENSORS"), str(tmp_path / "o.pdparams"))
    assert "resnet18 with 1000 classes" in capsys.readouterr().out


# make_fixtures.tiny_checkpoints' networks as palm builds them: (registry name whose
# conversion rules apply, the network, the dtype of its safetensors file)
TINY = {
    "vit": ("vit_tiny_patch16",
            lambda: VisionTransformer(32, 2, 2, num_classes=3, image_size=32), "float16"),
    # timm's single-conv stem has 64 channels whatever its stage widths
    "resnet": ("resnet18", lambda: ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3,
                                          widths=(8, 16, 32, 64), stem_width=64), "float16"),
    "densenet": ("densenet121",
                 lambda: DenseNet(config=(8, 4, [2, 1, 1, 1]), bn_size=2, num_classes=3),
                 "bfloat16"),
}


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("network", sorted(TINY))
def test_real_checkpoints_torch_wrote_give_its_logits(network, fmt, tmp_path):
    """Files timm's or torchvision's network was saved to (make_fixtures.tiny_checkpoints: a
    ViT, 32-d, 2 blocks; a ResNet of BasicBlocks 8/16/32/64 wide; a DenseNet of growth 4;
    {'model': ...} in float32, and float16 or bfloat16 safetensors) give the logits PyTorch
    computed, by convert and by --pretrained, and the format is read from the bytes (the same
    file renamed .bin). The input moves those logits by 100 times the tolerance, so a tensor
    put in another's place of the same shape would show."""
    name, build, half = TINY[network]
    expected = np.asarray(json.loads((FIXTURES / f"tiny_{network}_logits.json").read_text())[fmt])
    source = FIXTURES / f"tiny_{network}.{fmt}"
    renamed = tmp_path / "pytorch_model.bin"
    renamed.write_bytes(source.read_bytes())
    x = fixed_input(32).astype(np.float32)
    for path in (source, renamed):
        model = build()
        conversion = convert_state_dict(read_pytorch_weights(path), model, name)
        assert set(conversion.cast.values()) == ({half} if fmt == "safetensors" else set())
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in conversion.state.items()})
        model.eval()
        logits = model(paddle.to_tensor(x)).numpy()
        np.testing.assert_allclose(logits, expected, rtol=TOLERANCE,
                                   atol=TOLERANCE * np.abs(expected).max())
    moved = np.abs(model(paddle.to_tensor(-x)).numpy() - logits).max() / np.abs(logits).max()
    assert moved > 100 * TOLERANCE, f"the input moves {network}'s logits by {moved:.2g} relative"
    model = build()
    report = load_pretrained(model, renamed, model_name=name)
    assert report["missing"] == [] and report["unexpected"] == [] and report["skipped"] == []
    model.eval()
    np.testing.assert_allclose(model(paddle.to_tensor(x)).numpy(), expected, rtol=TOLERANCE,
                               atol=TOLERANCE * np.abs(expected).max())
