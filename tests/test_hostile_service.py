"""Attacks on the screening service that once got through (hostile review of issue 22)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from tests.test_serve import checkpoint, make_client  # noqa: F401 - checkpoint is a fixture


def jpeg() -> bytes:
    return cv2.imencode(".jpg", np.full((48, 48, 3), 120, np.uint8))[1].tobytes()


def test_save_dir_replaced_by_a_file_while_running_is_a_clear_json_error(checkpoint, tmp_path):
    saved = tmp_path / "saved"
    with make_client(checkpoint, save_dir=str(saved)) as client:
        shutil.rmtree(saved)
        saved.write_text("not a folder")  # replaced after the start-up check
        r = client.post("/v1/predict", files=[("files", ("a.jpg", jpeg(), "image/jpeg"))])
        assert r.status_code == 500
        assert "save_dir" in r.json()["error"] and "internal error" not in r.json()["error"]
        assert str(tmp_path) not in r.text  # the server's paths stay in its log
        saved.unlink()  # the folder back (deleted): photos are kept again
        r = client.post("/v1/predict", files=[("files", ("a.jpg", jpeg(), "image/jpeg"))])
        assert r.status_code == 200 and len(list(saved.iterdir())) == 1
