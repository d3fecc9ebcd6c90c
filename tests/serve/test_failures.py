"""Attacks on the screening service that once got through (hostile review of issue 22)."""
from __future__ import annotations

import asyncio
import shutil

import cv2
import numpy as np

from tests.serve.helpers import make_client


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


def test_client_leaving_mid_upload_is_499_not_an_internal_error(checkpoint):  # noqa: F811
    """A client that closes its connection halfway through its upload (a browser tab closed,
    a slow-body attacker) got a 500 and a traceback logged as internal_error."""
    app = make_client(checkpoint).app
    head = (b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + jpeg()[:100])
    messages = [{"type": "http.request", "body": head, "more_body": True},
                {"type": "http.disconnect"}]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/predict", "raw_path": b"/v1/predict",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"100000"),
                         (b"content-type", b"multipart/form-data; boundary=zz")]}
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
