"""A model whose output is NaN or inf is an error, never a probability.

NaN weights used to give a silent all-negative screening (predict wrote `nan,0,non-PM` on
every row and exited 0), eval stopped with a traceback and the service answered 500 to
every photo; an infinite logit read as a certain 1.0. Now such a checkpoint or export is
refused as it loads (one forward on a probe image), and an image whose output alone is not
finite is an error row (predict), a one-line error or a --skip-bad entry (eval), or a JSON
error (serve). LeNet-5 at 32 px on the session's synthetic PALM set.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest
from fastapi.testclient import TestClient

from palm.cli import eval as eval_tool
from palm.cli import predict as predict_tool
from palm.cli.common import run_tool
from palm.data import list_images
from palm.engine import evaluate as evaluate_module
from palm.engine.checkpoint import CheckpointError, load_checkpoint_model, save_checkpoint
from palm.engine.evaluate import evaluate_checkpoint
from palm.engine.export import export_model
from palm.engine.inference import DygraphPredictor, load_predictor
from palm.engine.predict import predict_to_csv
from palm.serve.model_runner import ModelRunner
from palm.serve.config import ServiceConfig
from palm.serve.app import create_app
from palm.errors import BadData
from palm.models import build_model

SIZE = 32
META = {"model": "lenet5", "num_classes": 1, "class_names": ["non-PM", "PM"],
        "image_size": SIZE, "normalize": "minus_one_one", "fundus_crop": False,
        "threshold": 0.5}
NOT_FINITE = "not finite (NaN or inf)"
# how each damaged checkpoint was damaged: NaN output weights (as training that diverged
# leaves them), or an infinite output bias (an infinite logit, whose sigmoid is a finite 1.0)
DAMAGE = {"nan": ("classifier.4.weight", math.nan), "inf": ("classifier.4.bias", math.inf)}


def _model(damage: str | None = None) -> paddle.nn.Layer:
    paddle.seed(0)
    model = build_model("lenet5", 1)
    if damage:
        name, value = DAMAGE[damage]
        param = model.state_dict()[name]
        param.set_value(np.full(param.shape, value, np.float32))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """"good", "nan" and "inf" checkpoints saved by palm (with their sidecars)."""
    folder = tmp_path_factory.mktemp("non_finite")
    paths = {}
    for kind in ("good", "nan", "inf"):
        paths[kind] = folder / kind / "best.pdparams"
        save_checkpoint(paths[kind], _model(None if kind == "good" else kind), META)
    return paths


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_checkpoint_with_non_finite_output_is_refused_at_load(damage, checkpoints):
    path = checkpoints[damage]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: the model gives NaN or inf logits on a probe image")
    assert DAMAGE[damage][0] in message and "\n" not in message
    load_checkpoint_model(checkpoints["good"])  # the check refuses only what it should


def _predict_argv(checkpoint: Path, palm_root: Path, output: Path) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--input", str(palm_root / "PALM-Validation400"),
            "--output", str(output), "--engine", "dygraph", "--num-workers", "0",
            "--no-progress"]


def _eval_argv(checkpoint: Path, palm_root: Path, output: Path) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--data-root", str(palm_root), "--output",
            str(output), "--engine", "dygraph", "--num-workers", "0", "--no-ci"]


@pytest.mark.parametrize("tool, argv", [(predict_tool, _predict_argv), (eval_tool, _eval_argv)])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_predict_and_eval_refuse_it_with_one_line_and_write_nothing(
        tool, argv, damage, checkpoints, palm_root, tmp_path):
    output = tmp_path / ("preds.csv" if tool is predict_tool else "ev")
    args = tool.get_args_parser().parse_args(argv(checkpoints[damage], palm_root, output))
    with pytest.raises(SystemExit) as info:
        run_tool(tool.main, args)
    message = str(info.value.code)  # run_tool prints a string code and exits 1
    assert message.startswith(f"error: {checkpoints[damage]}: the model gives NaN or inf "
                              "logits"), message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_exported_model_with_nan_output_is_refused(tmp_path):
    export_model(_model("nan"), tmp_path / "exported", dict(META))
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'exported'}: the exported model "
                                              "gives NaN or inf logits on a probe image"):
        load_predictor(tmp_path / "exported", engine="inference")


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_service_refuses_it_at_start(damage, checkpoints):
    with pytest.raises(CheckpointError, match="the model gives NaN or inf logits"):
        ModelRunner(checkpoints[damage], engine="dygraph")
    with pytest.raises(CheckpointError, match="the model gives NaN or inf logits"):
        create_app(ServiceConfig(checkpoint=str(checkpoints[damage]), engine="dygraph"))


class SometimesNonFinite(paddle.nn.Layer):
    """A working model that answers NaN for every third image of a batch, +inf for the next."""

    def __init__(self, model: paddle.nn.Layer):
        super().__init__()
        self.model = model

    def forward(self, images: paddle.Tensor) -> paddle.Tensor:
        logits = self.model(images).numpy()
        logits[1::3] = np.nan
        logits[2::3] = np.inf
        return paddle.to_tensor(logits)


def test_predict_gives_error_rows_for_images_whose_output_is_not_finite(checkpoints, palm_root,
                                                                        tmp_path):
    model, meta = load_checkpoint_model(checkpoints["good"])
    paths = list_images(palm_root / "PALM-Validation400")
    output = tmp_path / "preds.csv"
    summary = predict_to_csv(SometimesNonFinite(model), meta, paths, output, batch_size=6,
                             num_workers=0, progress=False, checkpoint_sha256="0" * 64)
    with open(output, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # 16 images in batches of 6, 6 and 4: positions 1, 2, 4 and 5 of each are NaN or inf
    bad = [i % 6 % 3 != 0 for i in range(len(rows))]
    assert len(rows) == 16 and sum(bad) == summary.errors == 10
    for row, is_bad in zip(rows, bad):
        if is_bad:
            assert NOT_FINITE in row["error"] and row["probability"] == ""
            assert row["prediction"] == "" and row["class_name"] == ""
        else:
            assert row["error"] == "" and 0 <= float(row["probability"]) <= 1


@pytest.fixture
def sometimes_non_finite_eval(checkpoints, monkeypatch):
    """evaluate_checkpoint runs the good checkpoint through SometimesNonFinite."""
    def load(checkpoint, **_):
        predictor = DygraphPredictor.from_checkpoint(checkpoint)
        predictor.model = SometimesNonFinite(predictor.model)
        return predictor

    monkeypatch.setattr(evaluate_module, "load_predictor", load)
    return checkpoints["good"]


def test_eval_stops_with_one_line_naming_the_image(sometimes_non_finite_eval, palm_root, tmp_path):
    with pytest.raises(BadData) as info:
        evaluate_checkpoint(sometimes_non_finite_eval, tmp_path / "ev", data_root=palm_root,
                            batch_size=6, ci_resamples=0, log=lambda _: None)
    message = str(info.value)
    assert "\n" not in message and NOT_FINITE in message and "--skip-bad" in message
    first = message.split(": ")[0]
    assert Path(first).is_file() and Path(first).parent.name == "PALM-Validation400"
    assert not (tmp_path / "ev").exists()


def test_eval_skip_bad_lists_them_and_scores_the_rest(sometimes_non_finite_eval, palm_root,
                                                      tmp_path):
    metrics = evaluate_checkpoint(sometimes_non_finite_eval, tmp_path / "ev", data_root=palm_root,
                                  batch_size=6, ci_resamples=0, skip_bad=True,
                                  log=lambda _: None)
    skipped = [entry for entry in metrics["skipped"] if NOT_FINITE in entry]
    assert len(skipped) == 10 and metrics["n"] == 6  # as in the predict test above
    assert math.isfinite(metrics["loss"])
    with open(tmp_path / "ev" / "predictions.csv", newline="", encoding="utf-8") as f:
        probabilities = [float(row["probability"]) for row in csv.DictReader(f)]
    assert len(probabilities) == 6 and all(0 <= p <= 1 for p in probabilities)
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["skipped"] == metrics["skipped"]


@pytest.fixture
def client_nan_on_blank_photos(checkpoints):
    """A service whose model answers NaN for a photo of one colour (and works otherwise)."""
    runner = ModelRunner(checkpoints["good"], engine="dygraph")
    predict = runner.predictor.predict

    def nan_for_blank(x: np.ndarray) -> np.ndarray:
        logits = predict(x)
        logits[x.reshape(len(x), -1).std(axis=1) == 0] = np.nan
        return logits

    runner.predictor.predict = nan_for_blank
    app = create_app(ServiceConfig(checkpoint=str(checkpoints["good"]), engine="dygraph"), runner)
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
        yield c


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_service_answers_a_json_error_for_a_photo_whose_output_is_not_finite(
        client_nan_on_blank_photos, palm_root):
    blank = ("blank.png", _png(np.zeros((64, 64, 3), np.uint8)), "image/png")
    response = client_nan_on_blank_photos.post("/v1/predict", files=[("files", blank)])
    assert response.status_code == 422
    body = response.json()
    assert body["error"].startswith("blank.png: ") and NOT_FINITE in body["error"]
    assert body["request_id"] and "nan" not in response.text.replace("NaN", "")
    photo = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))[0]
    both = [("files", (photo.name, photo.read_bytes(), "image/jpeg")), ("files", blank)]
    response = client_nan_on_blank_photos.post("/v1/predict", files=both)
    assert response.status_code == 200
    good, bad = response.json()["results"]
    assert good["error"] is None and 0 <= good["probability"] <= 1
    assert bad["status"] == 422 and NOT_FINITE in bad["error"] and "probability" not in bad
    assert client_nan_on_blank_photos.get("/healthz").json()["status"] == "ok"
