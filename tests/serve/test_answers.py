"""palm.serve: what the service answers (threshold source, Grad-CAM overlays)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from palm.engine.evaluate import EvalResult, choose_threshold
from palm.serve.app import create_app
from palm.serve.config import ServiceConfig
from palm.viz.cam import FLAT_MAP_NOTE


SIZE = 64


@pytest.fixture(scope="module")
def train_photos(palm_root: Path) -> list[Path]:
    return sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))[:4]


@pytest.fixture(scope="module")
def client(resnet_checkpoint: Path):
    config = ServiceConfig(checkpoint=str(resnet_checkpoint), engine="dygraph")
    with TestClient(create_app(config), base_url="http://127.0.0.1:8000") as c:
        yield c


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


def test_service_and_eval_name_the_same_threshold_source(client):
    served = client.get("/v1/model").json()
    runner = client.app.state.runner
    binary = EvalResult(np.array([0.2, 0.7], "float32"), np.array([0, 1]))
    assert (served["threshold"], served["threshold_source"]) == \
        choose_threshold(binary, runner.meta, None, False) == (0.4, "checkpoint")
    original = runner.meta
    recorded = dict(original, threshold_source="operating point sens=0.9 on 40 val images")
    runner.meta = recorded
    try:
        described = runner.describe()["threshold_source"]
    finally:
        runner.meta = original
    assert described == choose_threshold(binary, recorded, None, False)[1] == \
        "checkpoint (operating point sens=0.9 on 40 val images)"


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
