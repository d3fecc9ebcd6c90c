"""Grad-CAM / CAM: shapes and ranges, class selection, localisation after training, the tool."""
from __future__ import annotations

import warnings
import shutil

import cv2
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from palm.models import build_model, list_models
from tests.marks import quick_or_slow
from palm.viz.cam import GradCAM, class_activation_map, overlay_heatmap
from palm.engine.checkpoint import load_checkpoint_model
from palm.data import list_images
from palm.viz.cam import write_cam_overlays


# Inputs large enough that the default layer keeps a spatial map bigger than 1 x 1 (a 1 x 1
# map has no "where"): GoogLeNet's five stride-2 stages and NiN's unpadded 11x11/4 conv plus
# three 3x3/2 pools take 64 px down to 1 x 1; Inception-v3's unpadded stages need 128 px.
CAM_INPUT_SIZE = {"googlenet": 96, "nin": 96, "inception_v3": 128}
# Constructor arguments some families need for a small input.
BUILD_KW = {"lenet": lambda size: {"image_size": size}}


def small_model(name: str, num_classes: int = 1, size: int = 64) -> nn.Layer:
    kw = BUILD_KW[name](size) if name in BUILD_KW else {}
    return build_model(name, num_classes, **kw)


class TinyNet(nn.Layer):
    """Conv-ReLU-Conv-ReLU-GAP-Linear: the smallest network CAM and Grad-CAM both apply to."""

    def __init__(self, num_classes: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2D(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2),
            nn.Conv2D(8, 16, 3, padding=1), nn.ReLU(),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(axis=[2, 3]))


def synthetic_batch(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noise images; every other one (label 1) has a bright blob in the upper-left quadrant."""
    x = rng.normal(0.0, 0.15, (n, 3, size, size)).astype("float32")
    y = (np.arange(n) % 2).astype("float32")
    yy, xx = np.mgrid[0:size, 0:size]
    for i in np.flatnonzero(y):
        cy, cx = rng.uniform(6, size / 2 - 6, 2)
        x[i] += 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))
    return x, y


def test_gradcam_tiny_model_shape_range_and_model_untouched():
    paddle.seed(0)
    model = TinyNet()
    model.train()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(2, 3, 48, 40)).astype("float32")
    cam = GradCAM(model)
    assert cam.target_layer == "features.4"  # the ReLU after the last conv
    maps = cam(x)
    assert maps.shape == (2, 48, 40)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() - m.min() > 0.1 for m in maps)  # not constant
    # the model is not modified: mode restored, weights and gradients untouched
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])


def test_class_selection_one_logit_and_multiclass():
    paddle.seed(1)
    x = paddle.rand([3, 3, 32, 32])
    one = GradCAM(TinyNet(1))
    pos, neg = one(x), one(x, class_index=0)
    assert np.array_equal(one(x, class_index=1), pos)  # default = positive class
    assert not np.allclose(pos, neg)

    model = TinyNet(4)
    multi = GradCAM(model)
    argmax = model(x).argmax(axis=1).numpy()
    np.testing.assert_allclose(multi(x), multi(x, class_index=argmax), atol=1e-6)
    per_class = [multi(x, class_index=c) for c in range(4)]
    assert not all(np.allclose(per_class[0], m) for m in per_class[1:])
    with pytest.raises(ValueError, match="out of range"):
        multi(x, class_index=4)
    with pytest.raises(ValueError, match="entries"):
        multi(x, class_index=[0, 1])


def test_target_layer_by_name_and_unknown_name():
    model = small_model("resnet18")
    x = paddle.rand([1, 3, 64, 64])
    assert GradCAM(model).target_layer == "layer4"
    assert GradCAM(model, "layer3")(x).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="no sublayer 'layer9'.*layer4"):
        GradCAM(model, "layer9")


def test_plain_cam_equals_gradcam_for_gap_linear_heads():
    # With GAP + linear the gradient of a logit w.r.t. the last feature map is the class's
    # weight / (h*w) everywhere, so Grad-CAM reduces to CAM (Selvaraju et al., sec. 3.1).
    paddle.seed(2)
    for model, x in [(TinyNet(3), paddle.rand([2, 3, 32, 32])),
                     (small_model("resnet18"), paddle.rand([2, 3, 96, 96]))]:
        for c in (None, 0):
            np.testing.assert_allclose(
                class_activation_map(model, x, class_index=c), GradCAM(model)(x, class_index=c),
                atol=1e-4,
            )


def test_plain_cam_refuses_heads_that_are_not_gap_linear():
    # VGG-style head: flattened features through two linear layers
    model = nn.Sequential(
        nn.Conv2D(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 8), nn.Linear(8, 1)
    )
    with pytest.raises(ValueError, match="global average pooling"):
        class_activation_map(model, paddle.rand([1, 3, 16, 16]))


def test_overlay_keeps_original_size_and_colours_hot_regions():
    photo = np.full((90, 120, 3), 128, np.uint8)
    heat = np.zeros((16, 16), np.float32)
    heat[:8, :8] = 1.0  # upper-left hot
    out = overlay_heatmap(photo, heat, alpha=0.5)
    assert out.shape == photo.shape and out.dtype == np.uint8
    r, _, b = out[10, 10].astype(int)
    assert r > b + 40  # JET: hot is red
    r, _, b = out[80, 110].astype(int)
    assert b > r + 40  # cold is blue
    np.testing.assert_array_equal(overlay_heatmap(photo, heat, alpha=0.0), photo)
    with pytest.raises(ValueError, match="uint8 RGB"):
        overlay_heatmap(photo.astype(np.float32), heat)


@pytest.mark.parametrize("name", quick_or_slow(list_models()))
def test_gradcam_every_registered_model(name):
    paddle.seed(0)
    size = CAM_INPUT_SIZE.get(name, 64)
    model = small_model(name, size=size)
    x = paddle.rand([2, 3, size, size])
    cam = GradCAM(model)
    maps = [cam(x, class_index=c) for c in (1, 0)]
    for m in maps:
        assert m.shape == (2, size, size)
        assert m.min() >= 0.0 and m.max() <= 1.0 and np.isfinite(m).all()
    # an untrained net may have no positive evidence for one class, never for both
    assert max(float(m.max() - m.min()) for m in maps) > 0.1, name


def test_gradcam_finds_the_region_a_trained_model_uses():
    """LeNet trained a few steps on blob-in-upper-left positives looks at the upper left."""
    size = 64
    paddle.seed(0)
    rng = np.random.default_rng(0)
    model = small_model("lenet", size=size)
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    model.train()
    for _ in range(30):
        x, y = synthetic_batch(16, size, rng)
        loss = F.binary_cross_entropy_with_logits(
            model(paddle.to_tensor(x))[:, 0], paddle.to_tensor(y)
        )
        loss.backward()
        opt.step()
        opt.clear_grad()
    x, y = synthetic_batch(16, size, np.random.default_rng(1))
    maps = GradCAM(model)(x[y == 1])
    quadrant = maps[:, : size // 2, : size // 2]
    inside = quadrant.mean()
    outside = (maps.sum() - quadrant.sum()) / (maps.size - quadrant.size)
    assert inside > 3 * outside, (inside, outside)


@pytest.fixture
def checkpoint_and_photos(tmp_path):
    """A lenet checkpoint and a folder: a.jpg, sub/b.png (odd sizes) and a broken .jpg."""
    from palm.engine.checkpoint import save_checkpoint

    paddle.seed(0)
    ckpt = tmp_path / "run" / "best.pdparams"
    save_checkpoint(ckpt, small_model("lenet", size=64), {
        "model": "lenet", "num_classes": 1, "image_size": 64, "normalize": "minus_one_one",
        "fundus_crop": False, "threshold": 0.5, "model_kwargs": {"image_size": 64},
    })
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(photos / "a.jpg"), rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    cv2.imwrite(str(photos / "sub" / "b.png"), rng.integers(0, 255, (80, 60, 3), dtype=np.uint8))
    (photos / "broken.jpg").write_bytes(b"not an image")
    return ckpt, photos


def test_cam_tool_writes_overlays_and_skips_bad_files(checkpoint_and_photos, tmp_path, capsys):
    from palm.cli import cam as cam_tool

    ckpt, photos = checkpoint_and_photos
    out = tmp_path / "cams"
    args = cam_tool.get_args_parser().parse_args(
        ["--checkpoint", str(ckpt), "--input", str(photos), "--output", str(out)]
    )
    assert cam_tool.main(args) == 0
    a = cv2.imread(str(out / "a.jpg_cam.png"))
    b = cv2.imread(str(out / "sub" / "b.png_cam.png"))
    assert a.shape == (50, 70, 3) and b.shape == (80, 60, 3)  # the photos' own sizes
    assert sorted(p.name for p in out.rglob("*.png")) == ["a.jpg_cam.png", "b.png_cam.png"]
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err
    assert "2 overlays written" in captured.out and "1 errors" in captured.out


def test_predict_cam_option_writes_an_overlay_per_good_image(checkpoint_and_photos, tmp_path):
    from palm.cli import predict as predict_tool

    ckpt, photos = checkpoint_and_photos
    out = tmp_path / "cams"
    args = predict_tool.get_args_parser().parse_args([
        "--checkpoint", str(ckpt), "--input", str(photos), "--output", str(tmp_path / "p.csv"),
        "--num-workers", "0", "--no-progress", "--cam", str(out),
    ])
    predict_tool.main(args)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a.jpg_cam.png", "sub/b.png_cam.png"
    ]
    assert cv2.imread(str(out / "sub" / "b.png_cam.png")).shape == (80, 60, 3)


def test_explain_files_overlays_the_field_the_model_saw(tmp_path):
    """With fundus_crop the overlay covers the cropped fundus (padded square), not the border."""
    from palm.data import crop_fundus
    from palm.viz.cam import explain_files

    photo = np.zeros((60, 100, 3), np.uint8)
    cv2.circle(photo, (50, 30), 28, (40, 90, 200), -1)  # a 57 px fundus on a wide black frame
    cv2.imwrite(str(tmp_path / "f.png"), photo)
    meta = {"image_size": 64, "normalize": "minus_one_one", "fundus_crop": True}
    model = small_model("lenet", size=64)
    (item,) = explain_files(model, meta, [tmp_path / "f.png"])
    assert item.error is None
    side = crop_fundus(photo).shape[0]
    assert 50 < side < 60
    assert item.overlay.shape == item.photo.shape == (side, side, 3)
    assert item.probabilities.shape == (1,) and 0 <= item.probabilities[0] <= 1
    (small,) = explain_files(model, {**meta, "fundus_crop": False}, [tmp_path / "f.png"],
                             max_side=50)
    assert small.overlay.shape == (30, 50, 3)  # aspect kept when shrinking


def test_gradcam_warns_when_the_target_map_is_one_by_one():
    paddle.seed(0)
    model = small_model("resnet18")
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype("float32")  # layer4: 1 x 1
    with pytest.warns(UserWarning, match=r"'layer4' is 1 x 1 for 32x32 input.*blank"):
        maps = GradCAM(model)(x)
    assert not maps.any()  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 64 px keeps a 2 x 2 map: no warning
        assert GradCAM(model)(np.resize(x, (1, 3, 64, 64))).max() == pytest.approx(1.0)


def test_cam_overlays_of_same_stem_get_two_files(lenet_checkpoint, palm_root, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    src = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))[0]
    shutil.copy(src, photos / "eye.jpg")
    import cv2

    cv2.imwrite(str(photos / "eye.png"), cv2.imread(str(src)))
    model, meta = load_checkpoint_model(lenet_checkpoint)
    written, errors = write_cam_overlays(model, meta, list_images(photos), tmp_path / "cams",
                                         root=photos)
    assert (written, errors) == (2, [])
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == ["eye.jpg_cam.png",
                                                                    "eye.png_cam.png"]
