"""Grad-CAM of a chosen label, grade or class (`palm cam --target`), and the service's
overlay of a multi-label model, which explains the top label and says so."""
from __future__ import annotations

import cv2
import numpy as np
import paddle
import pytest
from scipy.special import expit

from palm.cli import cam as cam_tool
from palm.errors import BadConfig
from palm.viz.cam import GradCAM, class_activation_map, target_index
from tests.task_runs import LABELS
from tests.viz.test_cam import TinyNet

MULTILABEL = {"model": "lenet5", "num_classes": 3, "class_names": LABELS, "task": "multilabel"}
ORDINAL = {"model": "lenet5", "num_classes": 5, "class_names": list("01234"), "task": "ordinal"}
BINARY = {"model": "lenet5", "num_classes": 1, "class_names": ["non-PM", "PM"]}


@pytest.mark.parametrize("meta, target, index", [
    (MULTILABEL, "glaucoma", 1), (MULTILABEL, "2", 2), (ORDINAL, "3", 3),
    (BINARY, "PM", 1), (BINARY, "0", 0), (MULTILABEL, None, None),
])
def test_a_target_is_a_name_or_an_index(meta, target, index):
    assert target_index(target, meta) == index


@pytest.mark.parametrize("meta, target, problem", [
    (MULTILABEL, "cataract", "target 'cataract': not a label of this model; choose one of "
                             r"diabetes, glaucoma, myopia \(or an index 0..2\)"),
    (ORDINAL, "5", "target '5': not a grade of this model; choose one of 0, 1, 2, 3, 4 "
                   r"\(or an index 0..4\)"),
    (BINARY, "-1", "not a class of this model; choose one of non-PM, PM"),
])
def test_an_unknown_target_lists_the_valid_ones(meta, target, problem):
    with pytest.raises(BadConfig, match=problem):
        target_index(target, meta)


@pytest.mark.parametrize("meta, target", [(MULTILABEL, "glaucoma"), (MULTILABEL, "myopia"),
                                          (ORDINAL, "3"), (ORDINAL, "0")])
def test_the_cam_of_a_target_is_plain_cam_of_its_own_logit(meta, target):
    """GAP + linear head: Grad-CAM of a logit equals CAM from that logit's weights (Selvaraju
    et al., sec. 3.1), an independent computation; the target picks the logit's column."""
    paddle.seed(3)
    model = TinyNet(meta["num_classes"])
    x = paddle.rand([2, 3, 32, 32])
    column = meta["class_names"].index(target)
    expected = class_activation_map(model, x, class_index=column)
    np.testing.assert_allclose(GradCAM(model)(x, class_index=target_index(target, meta)),
                               expected, atol=1e-4)


def test_two_targets_give_two_maps_and_the_default_is_the_top_label():
    paddle.seed(4)
    model = TinyNet(3)
    x = paddle.rand([1, 3, 32, 32])
    maps = {name: GradCAM(model)(x, class_index=target_index(name, MULTILABEL)) for name in LABELS}
    assert not np.allclose(maps["glaucoma"], maps["myopia"], atol=1e-3)
    top = LABELS[int(np.argmax(expit(model(x).numpy()[0])))]  # highest sigmoid probability
    np.testing.assert_allclose(GradCAM(model)(x), maps[top], atol=1e-6)


def _cam(checkpoint, photos, out, *target: str) -> None:
    cam_tool.main(cam_tool.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--input", str(photos), "--output", str(out),
         *target]))


def test_palm_cam_explains_the_label_asked_for(multilabel_run, multilabel_root, tmp_path):
    photo = multilabel_root / "val" / "007.png"  # all three findings
    checkpoint = multilabel_run / "best.pdparams"
    for name in ("glaucoma", "myopia"):
        _cam(checkpoint, photo, tmp_path / name, "--target", name)
    _cam(checkpoint, photo, tmp_path / "index", "--class-index", "1")  # the old spelling
    glaucoma, myopia, index = (cv2.imread(str(tmp_path / d / "007.png_cam.png"))
                               for d in ("glaucoma", "myopia", "index"))
    assert glaucoma.shape == (32, 32, 3) and not np.array_equal(glaucoma, myopia)
    assert np.array_equal(glaucoma, index)  # label 1 is glaucoma
    with pytest.raises(BadConfig, match="target 'cataract': not a label of this model; "
                                        "choose one of diabetes, glaucoma, myopia"):
        _cam(checkpoint, photo, tmp_path / "bad", "--target", "cataract")


def test_the_service_overlay_of_a_multilabel_model_names_its_top_label(multilabel_run,
                                                                       multilabel_root):
    from tests.serve.helpers import make_client, upload
    photos = [multilabel_root / "val" / name for name in ("001.png", "002.png", "004.png")]
    with make_client(multilabel_run / "best.pdparams") as client:
        answer = client.post("/v1/predict?cam=1", files=upload(
            *[(p.name, p.read_bytes()) for p in photos])).json()
    for result in answer["results"]:
        probabilities = result["probabilities"]
        assert result["cam_png_base64"]
        assert result["cam_target"] == max(probabilities, key=probabilities.get)
