"""Issue 22, item 7: what a new user met on the Quickstart path, each checked in the product."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import paddle
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from palm import metrics as M
from palm.engine.checkpoint import load_checkpoint_model, save_checkpoint, update_sidecar
from palm.reports.compare import compare_models
from palm.engine.evaluate import (EvalResult, choose_threshold, eval_output_for,
                                  evaluate_checkpoint, write_evaluation)
from palm.engine.export import export_checkpoint
from palm.engine.inference import DygraphPredictor
from palm.engine.service import ServiceConfig, create_app
from palm.errors import BadData
from palm.models import build_model
from palm.predictions import probabilities
from palm.viz.cam import FLAT_MAP_NOTE
from palm.viz.plots import reliability_figure


# ------------------------------------------------------------ 7: intervals stay in [0, 1]

@pytest.mark.parametrize("n", [10, 13, 25, 27])  # sizes where the float sum missed 1 by an ulp
def test_wilson_bounds_are_exact_when_all_or_none_succeed(n):
    assert M.wilson_interval(n, n)[1] == 1.0
    assert M.wilson_interval(0, n)[0] == 0.0


def test_ppv_interval_of_a_perfect_classifier_ends_at_exactly_one():
    y = np.repeat([0, 1], [17, 10])  # 10 positives, all found, no false alarm: PPV 10/10
    p = np.where(y == 1, 0.9, 0.1)
    ci = M.binary_intervals(y, p, 0.5, resamples=50)
    assert ci["ppv"][1] == 1.0 and ci["sensitivity"][1] == 1.0
    for key in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "roc_auc", "f1"):
        assert 0.0 <= ci[key][0] <= ci[key][1] <= 1.0, key


def test_bootstrap_intervals_are_clipped_to_the_statistics_range():
    assert M.percentile_interval(np.array([1.0, 1.0 + 1e-15])) == [1.0, 1.0]
    assert M.percentile_interval(np.array([-0.5, 0.5]), limits=(-1.0, 1.0))[0] < 0


# ------------------------------------------------------------ shared: a tiny checkpoint

SIZE = 64
META = {"model": "resnet18", "num_classes": 1, "class_names": ["non-PM", "PM"],
        "image_size": SIZE, "normalize": "minus_one_one", "fundus_crop": False,
        "threshold": 0.4, "epoch": 1, "metrics": {"auc": 0.9}, "model_kwargs": {}}


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory) -> Path:
    """An untrained resnet18 at 64 px with a small random head."""
    paddle.seed(0)
    model = build_model("resnet18", num_classes=1)
    rng = np.random.default_rng(0)
    model.fc.weight.set_value(rng.normal(0, 0.05, model.fc.weight.shape).astype("float32"))
    path = tmp_path_factory.mktemp("ckpt") / "best.pdparams"
    save_checkpoint(path, model, META)
    return path


@pytest.fixture(scope="module")
def train_photos(palm_root: Path) -> list[Path]:
    return sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))[:4]


@pytest.fixture(scope="module")
def client(resnet_checkpoint: Path):
    config = ServiceConfig(checkpoint=str(resnet_checkpoint), engine="dygraph")
    with TestClient(create_app(config), base_url="http://127.0.0.1:8000") as c:
        yield c


# ------------------------------------------------------------ 4: a flat Grad-CAM has no legend

def _cam_result(client, photo: Path, heatmap_value: Callable[[int], np.ndarray]) -> dict:
    runner = client.app.state.runner
    real = runner.gradcam.cam
    runner.gradcam.cam = lambda x: heatmap_value(len(x))
    try:
        response = client.post("/v1/predict?cam=1",
                               files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))])
    finally:
        runner.gradcam.cam = real
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_flat_gradcam_says_no_attention_instead_of_a_legend(client, train_photos):
    flat = _cam_result(client, train_photos[0], lambda n: np.zeros((n, SIZE, SIZE), np.float32))
    assert flat["cam_png_base64"] and flat["cam_note"] == FLAT_MAP_NOTE
    ramp = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    ranged = _cam_result(client, train_photos[0], lambda n: np.stack([ramp] * n))
    assert "cam_note" not in ranged
    page = client.get("/").text  # the page draws the legend only without a note
    assert "r.cam_note ?" in page and "high attention" in page


# ------------------------------------------------------------ 1: compare after the Quickstart

def _quickstart_run(root: Path, name: str, labels, probs) -> Path:
    """RUN as the Quickstart leaves it: eval/predictions.csv (labelled, by tools/eval.py)
    and predictions.csv (tools/predict.py's, no labels) side by side."""
    files = [f"img/{i:03d}.jpg" for i in range(len(labels))]
    write_evaluation(EvalResult(np.asarray(probs, "float32"), np.asarray(labels)), files,
                     ["non-PM", "PM"], 0.5, root / name / "eval", ci_resamples=20)
    pd.DataFrame({"path": files, "probability": probs, "prediction": np.round(probs).astype(int),
                  "class_name": "PM", "error": ""}).to_csv(root / name / "predictions.csv",
                                                           index=False)
    return root / name


def test_compare_takes_a_run_folders_labelled_evaluation(tmp_path):
    y = np.repeat([0, 1], 20)
    rng = np.random.default_rng(0)
    runs = [_quickstart_run(tmp_path, name, y, np.clip(0.5 * y + rng.uniform(0, 0.5, 40), 0, 1))
            for name in ("demo", "other")]
    board, _ = compare_models(runs, tmp_path / "cmp", resamples=20)
    assert sorted(board["model"]) == ["demo", "other"] and len(board) == 2


def test_compare_names_what_it_looked_at_when_nothing_has_labels(tmp_path):
    y = np.repeat([0, 1], 5)
    run = _quickstart_run(tmp_path, "demo", y, y * 0.8 + 0.1)
    (run / "eval" / "predictions.csv").unlink()
    with pytest.raises(BadData) as err:
        compare_models([run, run], tmp_path / "cmp", resamples=20)
    message = str(err.value)
    assert str(run / "eval" / "predictions.csv") in message and "missing" in message
    assert f"{run / 'predictions.csv'} (no label column)" in message


# ------------------------------------------------------------ 3: one threshold source

def test_service_and_eval_name_the_same_threshold_source(client):
    served = client.get("/v1/model").json()
    runner = client.app.state.runner
    binary = EvalResult(np.array([0.2, 0.7], "float32"), np.array([0, 1]))
    assert (served["threshold"], served["threshold_source"]) == \
        choose_threshold(binary, runner.meta, None, False) == (0.4, "resnet_checkpoint")
    original = runner.meta
    recorded = dict(original, threshold_source="operating point sens=0.9 on 40 val images")
    runner.meta = recorded
    try:
        described = runner.describe()["threshold_source"]
    finally:
        runner.meta = original
    assert described == choose_threshold(binary, recorded, None, False)[1] == \
        "checkpoint (operating point sens=0.9 on 40 val images)"


# ------------------------------------------------------------ 2: evaluating an export

@pytest.fixture(scope="module")
def checkpoint_with_selection(resnet_checkpoint: Path, palm_root: Path, tmp_path_factory) -> Path:
    """The checkpoint as training leaves best.pdparams: the validation images chose it
    (select_on val), their logits in best_selection.csv."""
    run = tmp_path_factory.mktemp("run")
    for suffix in (".pdparams", ".json"):
        shutil.copy(resnet_checkpoint.with_suffix(suffix), run / f"best{suffix}")
    files = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))
    pd.DataFrame({"path": [str(f.resolve()) for f in files], "label": [i % 2 for i in
                  range(len(files))], "logit": np.linspace(-1, 1, len(files))}).to_csv(
        run / "best_selection.csv", index=False)
    update_sidecar(run / "best.pdparams", {"selection": {"select_on": "val",
                                                         "predictions": "best_selection.csv"}})
    return run / "best.pdparams"


@pytest.mark.slow  # exports and evaluates twice (~30 s)
def test_eval_of_an_export_writes_its_own_folder_and_keeps_the_selection(
        checkpoint_with_selection, palm_root, tmp_path):
    exported = export_checkpoint(checkpoint_with_selection, tmp_path / "exported" / "demo")
    assert eval_output_for(exported, None, exist_ok=False) == tmp_path / "exported" / "demo-eval"
    from_checkpoint = evaluate_checkpoint(checkpoint_with_selection, tmp_path / "ckpt-eval",
                                          data_root=palm_root, engine="dygraph",
                                          ci_resamples=0, log=lambda _: None)
    from_export = evaluate_checkpoint(exported, eval_output_for(exported, None, False),
                                      data_root=palm_root, ci_resamples=0, log=lambda _: None)
    assert from_checkpoint["selection"] == "optimistic"
    assert from_export["selection"] == from_checkpoint["selection"]
    assert from_export["selection_detail"] == from_checkpoint["selection_detail"]
    assert (tmp_path / "exported" / "demo-eval" / "metrics.json").is_file()
    assert sorted(p.name for p in exported.iterdir()) == \
        ["model.json", "model.pdiparams", "palm_meta.json"]  # nothing written inside it


# ------------------------------------------------------------ 5: the reliability legend

def test_reliability_legend_covers_no_point_of_the_curves():
    y = np.ones(60, int)
    y[::10] = 0  # an under-confident model: low probabilities, mostly positive
    p = np.linspace(0.05, 0.35, 60)
    fig = reliability_figure(y, p, uncalibrated=np.clip(p * 0.5, 0, 1))
    fig.canvas.draw()  # Agg canvas: lay the legend out
    top = fig.axes[0]
    box = top.get_legend().get_window_extent()
    points = np.concatenate([top.transData.transform(line.get_xydata())
                             for line in top.get_lines()])
    assert len(points) > 4
    inside = [pt for pt in points if box.contains(*pt)]
    assert not inside, f"legend {box} covers {inside}"


# ------------------------------------------------------------ 6: one photo, one probability

@pytest.fixture(scope="module")
def large_photo(train_photos, tmp_path_factory) -> Path:
    """A 768 px JPEG: big enough that decoding for 64 px and for the overlay differ."""
    rgb = cv2.resize(cv2.imread(str(train_photos[0])), (768, 768), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(0).integers(-12, 13, rgb.shape)
    path = tmp_path_factory.mktemp("large") / "large.jpg"
    cv2.imwrite(str(path), np.clip(rgb + noise, 0, 255).astype(np.uint8))
    return path


def test_grad_cam_does_not_change_the_probability(client, large_photo, train_photos):
    def probability(query: str, files: list[Path]) -> float:
        response = client.post("/v1/predict" + query, files=[
            ("files", (p.name, p.read_bytes(), "image/jpeg")) for p in files])
        return response.json()["results"][0]["probability"]

    alone = probability("", [large_photo])
    assert probability("?cam=1", [large_photo]) == pytest.approx(alone, abs=1e-5)
    assert probability("", [large_photo, *train_photos]) == pytest.approx(alone, abs=1e-5)


def test_batched_and_single_predictions_agree(resnet_checkpoint):
    model, meta = load_checkpoint_model(resnet_checkpoint)
    predictor = DygraphPredictor(model, meta)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 3, SIZE, SIZE)).astype("float32")
    single = np.concatenate([predictor.predict(x[i:i + 1]) for i in range(len(x))])
    batched = predictor.predict(x)
    np.testing.assert_allclose(probabilities(batched), probabilities(single), atol=1e-5)
