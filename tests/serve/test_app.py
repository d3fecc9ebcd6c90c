"""The screening service: API limits and errors, micro-batching, the token rule, the web page."""
from __future__ import annotations

import base64
import csv
import http.client
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from palm.engine.checkpoint import save_checkpoint
from palm.engine.export import export_model
from palm.serve.guard import SECURITY_HEADERS, server_config
from palm.serve.config import ServiceConfig, is_loopback
from palm.serve.app import create_app
from palm.errors import BadConfig
from palm.models import build_model
from palm.cli import serve as serve_tool
from palm.bench.loadtest import free_port
from palm.cli.common import cli

from tests.serve.helpers import META, SIZE, BlockedModel, make_client, upload, wait_until

TOKEN = "a-long-enough-test-token"


@pytest.fixture(scope="module")
def client(checkpoint: Path):
    with make_client(checkpoint, max_pixels=200_000) as c:
        yield c


@contextmanager
def live_server(checkpoint: Path, **options) -> Iterator[str]:
    """The service on a free loopback port, served by uvicorn in a thread; yields its URL."""
    import uvicorn
    config = ServiceConfig(checkpoint=str(checkpoint), engine="dygraph", **options)
    server = uvicorn.Server(server_config(create_app(config), config, free_port()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def served_url(checkpoint: Path) -> Iterator[str]:
    """The URL of the service on a loopback port (for the browser tests)."""
    with live_server(checkpoint) as url:
        yield url


@contextmanager
def chromium_page():
    """A page of Debian's Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium),
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


def assert_healthy(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_good_photo_gives_probability_prediction_and_cam(client, photos, checkpoint):
    response = client.post("/v1/predict?cam=1", files=upload((photos[0].name, photos[0].read_bytes())))
    assert response.status_code == 200, response.text
    body = response.json()
    (result,) = body["results"]
    assert result["filename"] == photos[0].name and result["error"] is None
    assert 0 <= result["probability"] <= 1 and result["threshold"] == 0.4
    # named as in predictions.csv; `decision`, its earlier name, stays for one release
    assert result["prediction"] == int(result["probability"] >= 0.4) == result["decision"]
    assert result["class_name"] == META["class_names"][result["prediction"]]
    assert body["model"]["name"] == "resnet18" and len(body["model"]["sha256"]) == 64
    assert response.headers["x-request-id"] == body["request_id"]
    overlay = cv2.imdecode(np.frombuffer(base64.b64decode(result["cam_png_base64"]), np.uint8),
                           cv2.IMREAD_COLOR)
    assert overlay is not None and overlay.shape[2] == 3
    # the model's answer is the dygraph model's answer for the same preprocessing
    from palm.data import build_transform, read_image
    from palm.engine.inference import DygraphPredictor
    x = build_transform(SIZE, False)(read_image(photos[0], target_size=SIZE))[None]
    logit = DygraphPredictor.from_checkpoint(checkpoint).predict(x)[0, 0]
    assert result["probability"] == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-5)


def test_several_photos_and_a_bad_one_in_one_request(client, photos):
    files = [(p.name, p.read_bytes()) for p in photos[:3]] + [("notes.jpg", b"not a photo\n")]
    response = client.post("/v1/predict", files=upload(*files))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [f for f, _ in files]
    assert all(r["error"] is None for r in results[:3])
    assert len({r["probability"] for r in results[:3]}) > 1  # not one constant answer
    assert results[3]["status"] == 415 and "not an image" in results[3]["error"]
    assert "cam_png_base64" not in results[0]


@pytest.mark.parametrize("name, data, status, words", [
    ("empty.jpg", b"", 422, "empty file"),
    ("text.jpg", b"hello, I am a text file\n" * 20, 415, "not an image"),
    ("tiny.jpg", b"hi\n", 415, "not an image"),
    ("cut.jpg", None, 422, "truncated"),
])
def test_unusable_photo_is_a_json_error(client, photos, name, data, status, words):
    if data is None:
        data = photos[0].read_bytes()[:-200]
    response = client.post("/v1/predict", files=upload((name, data)))
    assert response.status_code == status
    body = response.json()
    assert words in body["error"] and name in body["error"] and body["request_id"]
    assert "Traceback" not in response.text
    assert_healthy(client)


def test_content_decides_not_the_extension(client, photos):
    png = cv2.imencode(".png", cv2.imread(str(photos[0])))[1].tobytes()
    response = client.post("/v1/predict", files=upload(("photo.txt", png)))
    assert response.status_code == 200 and response.json()["results"][0]["error"] is None


def test_too_many_pixels_refused_before_decoding(client):
    big = cv2.imencode(".png", np.zeros((600, 600, 3), np.uint8))[1].tobytes()  # 0.36 MP > 0.2
    response = client.post("/v1/predict", files=upload(("big.png", big)))
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    assert_healthy(client)


def test_oversized_upload_refused(checkpoint, photos):
    with make_client(checkpoint, max_upload_mb=0.05) as client:
        response = client.post("/v1/predict", files=upload(("large.jpg", b"\xff" * 80_000)))
        assert response.status_code == 413
        assert "over the limit of 0.05 MB" in response.json()["error"]

        def chunks():  # no Content-Length: cut off while it is read
            yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.jpg"\r\n\r\n'
            for _ in range(20):
                yield b"\xff" * 10_000
        streamed = client.post("/v1/predict", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413 and "at least" in streamed.json()["error"]
        ok = client.post("/v1/predict", files=upload((photos[0].name, photos[0].read_bytes())))
        assert ok.status_code == 200
        assert_healthy(client)


def test_no_file_and_unknown_route_are_json(client):
    response = client.post("/v1/predict", data={"x": "1"})
    assert response.status_code == 422 and "no photo" in response.json()["error"]
    assert client.get("/nowhere").json()["error"] == "Not Found"


def test_model_metadata(client):
    info = client.get("/v1/model").json()
    assert info["name"] == "resnet18" and info["threshold"] == 0.4
    assert info["calibration"] == {"temperature": 1.0, "source": "none"}
    assert info["cam_available"] is True and info["limits"]["max_pixels"] == 200_000


def test_full_queue_answers_503_then_recovers(checkpoint, photos):
    data = photos[0].read_bytes()
    with make_client(checkpoint, max_queue=1, max_batch=1, max_wait_ms=0) as client, \
            ThreadPoolExecutor(2) as pool:
        blocked = BlockedModel(client.app.state.batcher)
        first = pool.submit(client.post, "/v1/predict", files=upload(("a.jpg", data)))
        assert blocked.entered.wait(10)  # the first photo is in the model
        second = pool.submit(client.post, "/v1/predict", files=upload(("b.jpg", data)))
        wait_until(lambda: client.app.state.batcher.pending == 1)  # and the second waits
        response = client.post("/v1/predict", files=upload(("c.jpg", data)))
        assert response.status_code == 503 and "busy" in response.json()["error"]
        assert response.headers["retry-after"] == "1"
        blocked.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert client.post("/v1/predict", files=upload(("d.jpg", data))).status_code == 200
        assert_healthy(client)


@pytest.mark.slow  # test_decoding keeps a 504 in the quick loop
def test_timeout_answers_504_and_the_service_goes_on(checkpoint, photos):
    data = photos[0].read_bytes()
    # the deadline covers decoding too: time enough for it on a loaded machine
    with make_client(checkpoint, timeout=2, max_wait_ms=0) as client:
        blocked = BlockedModel(client.app.state.batcher)
        response = client.post("/v1/predict", files=upload(("slow.jpg", data)))
        assert response.status_code == 504 and "no result within 2 s" in response.json()["error"]
        blocked.release.set()
        wait_until(lambda: client.app.state.batcher.pending == 0)
        assert client.post("/v1/predict", files=upload(("next.jpg", data))).status_code == 200


def test_concurrent_requests_are_batched(checkpoint, photos):
    n = 6
    with make_client(checkpoint, max_batch=8, max_wait_ms=400) as client, \
            ThreadPoolExecutor(n) as pool:
        requests = [pool.submit(client.post, "/v1/predict",
                                files=upload((p.name, p.read_bytes()))) for p in photos[:n]]
        assert all(r.result().status_code == 200 for r in requests)
        sizes = {int(k): v for k, v in client.get("/healthz").json()["batch_sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) == n
    assert max(sizes) >= 3, sizes  # one-photo requests ran together, not one by one


@pytest.fixture(scope="module")
def exposed_client(checkpoint: Path):
    """The service as bound to every interface, with a token."""
    with make_client(checkpoint, host="0.0.0.0", token=TOKEN) as c:
        yield c


def test_token_required_off_loopback_and_checked(checkpoint, photos, monkeypatch, exposed_client):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    with pytest.raises(BadConfig, match="^host 0.0.0.0 .*set token"):
        create_app(ServiceConfig(checkpoint=str(checkpoint), host="0.0.0.0"))
    monkeypatch.delenv("PALM_SERVE_TOKEN", raising=False)
    args = serve_tool.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--host", "0.0.0.0"])
    with pytest.raises(BadConfig):
        serve_tool.main(args)  # refused before anything loads or listens
    monkeypatch.setenv("PALM_SERVE_TOKEN", TOKEN)
    assert serve_tool.build_config(args).token == TOKEN
    client = exposed_client
    files = upload((photos[0].name, photos[0].read_bytes()))
    assert client.post("/v1/predict", files=files).status_code == 401
    wrong = client.post("/v1/predict", files=files, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "token" in wrong.json()["error"]
    good = client.post("/v1/predict", files=files, headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status_code == 200
    assert client.get("/v1/model").status_code == 401
    assert_healthy(client)


@pytest.mark.parametrize("token", ["x", " " * 20, "\t\n", "fifteen-chars-x", "sixteen chars ok"])
def test_short_or_blank_token_refused_in_one_line(checkpoint, monkeypatch, token):
    """A token of one character, or of spaces, protects a service on 0.0.0.0 from nobody."""
    with pytest.raises(BadConfig, match="at least 16 characters without spaces"):
        ServiceConfig(checkpoint=str(checkpoint), host="0.0.0.0", token=token).check()
    monkeypatch.setenv("PALM_SERVE_TOKEN", token)  # the same rule for the environment's token
    with pytest.raises(SystemExit) as stop:
        cli("serve", ["--checkpoint", str(checkpoint), "--host", "0.0.0.0"])
    message = str(stop.value.code)
    assert message.startswith("error: --token") and "\n" not in message


def test_exposed_healthz_tells_only_whether_it_is_up(exposed_client, client):
    """Queue length and traffic are the operator's: on 0.0.0.0 only with the token."""
    anonymous = exposed_client.get("/healthz")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
    wrong = exposed_client.get("/healthz", headers={"Authorization": "Bearer nope"})
    assert wrong.json() == {"status": "ok"}
    operator = exposed_client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert operator["status"] == "ok" and {"queue", "max_queue", "batch_sizes"} <= set(operator)
    assert {"queue", "images", "batch_sizes"} <= set(client.get("/healthz").json())  # loopback


def test_photos_kept_only_with_save_dir(checkpoint, photos, tmp_path):
    data = photos[0].read_bytes()
    with make_client(checkpoint, save_dir=str(tmp_path / "kept")) as client:
        rid = client.post("/v1/predict", files=upload(("../eye 1.jpg", data))).json()["request_id"]
    (kept,) = (tmp_path / "kept").iterdir()
    assert kept.name == f"{rid}-1-eye_1.jpg" and kept.read_bytes() == data


def test_saved_name_fits_the_file_system_whatever_the_upload_calls_it(checkpoint, photos, tmp_path):
    data = photos[0].read_bytes()
    long_name = "眼" * 120 + ".jpg"  # 364 bytes in UTF-8: over the 255 a file name may have
    with make_client(checkpoint, save_dir=str(tmp_path / "kept")) as client:
        response = client.post("/v1/predict", files=upload((long_name, data)))
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["filename"] == long_name
    (kept,) = (tmp_path / "kept").iterdir()
    assert len(kept.name.encode("utf-8")) <= 200 and kept.name.endswith("眼.jpg")
    assert kept.read_bytes() == data


def test_unwritable_save_dir_refused_at_start_before_the_model_loads(tmp_path, monkeypatch):
    """Refused at start, rather than every request failing with 500 after its prediction."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n")
    missing_checkpoint = tmp_path / "not-loaded.pdparams"  # loading it would be another error
    for save_dir in (a_file, a_file / "kept"):
        with pytest.raises(BadConfig, match=f"^save_dir {re.escape(str(a_file))}"):
            ServiceConfig(checkpoint=str(missing_checkpoint), save_dir=str(save_dir)).check()
        with pytest.raises(SystemExit) as stop:
            cli("serve", ["--checkpoint", str(missing_checkpoint), "--save-dir", str(save_dir)])
        message = str(stop.value.code)
        assert message.startswith("error: --save-dir") and "\n" not in message
    ServiceConfig(checkpoint="x", save_dir=str(tmp_path / "new" / "kept")).check()
    assert (tmp_path / "new" / "kept").is_dir()  # a folder that can be made is made


def test_more_photos_than_max_files_is_413_as_documented(client):
    """Starlette answers 400 past its max_files; the README promises 413."""
    response = client.post("/v1/predict", files=upload(*[(f"{i}.jpg", b"x") for i in range(65)]))
    assert response.status_code == 413, response.text
    assert "more than 64 photos" in response.json()["error"]


def test_malformed_upload_is_400(client):
    response = client.post("/v1/predict", content=b"--b\r\nnonsense",
                           headers={"content-type": "multipart/form-data"})  # no boundary
    assert response.status_code == 400 and "malformed upload" in response.json()["error"]


def test_every_response_forbids_framing_and_sniffing(client, photos):
    """Clickjacking: another site's page must not show the service's page in a frame."""
    responses = [client.get("/"), client.get("/healthz"), client.get("/v1/model"),
                 client.get("/nowhere"),
                 client.post("/v1/predict", files=upload(("a.jpg", photos[0].read_bytes()))),
                 client.post("/v1/predict", files=upload(("a.jpg", b"x")),
                             headers={"Origin": "https://evil.example"})]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 200, 403]
    for response in responses:
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
    assert SECURITY_HEADERS.keys() == {"X-Frame-Options", "Content-Security-Policy",
                                       "X-Content-Type-Options"}


def test_page_brings_its_own_icon(client):
    """With an inline icon the browser never asks for /favicon.ico (a 404 on every load)."""
    page = client.get("/").text
    assert re.search(r'<link rel="icon" href="data:image/svg\+xml,[^"]+">', page)


def read_http_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.slow  # waits out a head timeout (seconds)
def test_request_head_arriving_too_slowly_is_cut_off(checkpoint, photos):
    """Slowloris: connections sending their headers a few bytes at a time were held for ever.
    Loopback only, a few connections, a 0.5 s limit."""
    half_head = b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"
    with live_server(checkpoint, header_timeout=0.5) as url:
        port = int(url.rsplit(":", 1)[1])

        def connect() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.settimeout(5)  # on failure the test stops here, not the service's way
            return sock

        start = time.monotonic()
        stalled = [connect() for _ in range(3)]
        for sock in stalled:
            sock.sendall(half_head)
        # a keep-alive connection: the limit applies again to its next request's head
        keep_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        keep_alive.request("GET", "/healthz")
        assert keep_alive.getresponse().read().startswith(b'{"status":"ok"')
        reused = keep_alive.sock
        reused.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        silent = connect()  # sends nothing at all: closed, with nothing to answer
        for sock in [*stalled, reused]:
            with sock:
                answer = read_http_response(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"not received within 0.5 s" in answer and b"X-Frame-Options: DENY" in answer
        with silent:
            assert read_http_response(silent) == b""
        assert time.monotonic() - start < 3
        # a head sent in time is served however long its body then takes (it has its own limit)
        body = (b"--XX\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
                b"\r\n" + photos[0].read_bytes() + b"\r\n--XX--\r\n")
        with connect() as slow_body:
            slow_body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: multipart/form-data; boundary=XX\r\n"
                              b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
            time.sleep(1.0)
            slow_body.sendall(body)
            answer = read_http_response(slow_body)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]


def test_more_photos_than_the_queue_holds_is_413_not_busy(checkpoint, photos):
    data = photos[0].read_bytes()
    with make_client(checkpoint, max_queue=2) as client:
        response = client.post("/v1/predict", files=upload(*[(f"{i}.jpg", data) for i in range(3)]))
        # 503 tells the client to retry, which could never succeed
        assert response.status_code == 413, response.text
        assert "3 photos" in response.json()["error"] and "at most 2" in response.json()["error"]
        assert client.post("/v1/predict", files=upload(("a.jpg", data))).status_code == 200


def test_a_slow_upload_is_cut_off_with_408(checkpoint, photos):
    """A client trickling its body (slowloris) must not hold a connection forever."""
    import asyncio

    import httpx

    head = (b"--XX\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
            b"\r\n" + photos[0].read_bytes()[:100])

    async def trickle():
        yield head
        for _ in range(50):
            await asyncio.sleep(0.1)
            yield b"x"

    async def post(app) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as ac:
            return await ac.post("/v1/predict", content=trickle(), headers={
                "content-type": "multipart/form-data; boundary=XX"})

    with make_client(checkpoint, upload_timeout=0.5) as client:
        start = time.monotonic()
        response = asyncio.run(post(client.app))
        assert time.monotonic() - start < 3
        assert response.status_code == 408, response.text
        assert "0.5 s" in response.json()["error"]
        assert response.headers["connection"] == "close"  # the rest of the body is not read
        good = client.post("/v1/predict", files=upload(("a.jpg", photos[0].read_bytes())))
        assert good.status_code == 200
        assert_healthy(client)


def test_other_web_sites_cannot_use_a_loopback_service(client, photos):
    """A page from another site may make the browser post to 127.0.0.1 (CSRF), or get its
    own name resolved to 127.0.0.1 and read the answers (DNS rebinding); neither needs the
    token a loopback service does without."""
    files = upload(("a.jpg", photos[0].read_bytes()))
    csrf = client.post("/v1/predict", files=files, headers={"Origin": "https://evil.example"})
    assert csrf.status_code == 403 and "evil.example" in csrf.json()["error"]
    rebound = client.post("/v1/predict", files=files, headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 403 and "evil.example" in rebound.json()["error"]
    assert client.get("/v1/model", headers={"Host": "evil.example:8000"}).status_code == 403
    # the service's own page, curl and scripts (no Origin) are served
    own = client.post("/v1/predict", files=files, headers={"Origin": "http://127.0.0.1:8000"})
    assert own.status_code == 200, own.text
    for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert client.get("/v1/model", headers={"Host": host}).status_code == 200, host


def test_photos_are_decoded_a_few_at_a_time(checkpoint, photos):
    """A 100 MP PNG of one colour is a few hundred KB but decodes to 300 MB: concurrent
    requests of such photos must not all decode at once (memory), nor wait without end."""
    data = photos[0].read_bytes()
    # the deadline covers decoding and the model: the first request decodes for 1 s and
    # has 1.5 s left for the model (a loaded machine needs them); the slot is free again at
    # 1, 2 and 3 s, so the last request, queued behind three decodes, meets its deadline
    # (2.5 s) waiting, half a second from either edge
    with make_client(checkpoint, max_decoding=1, timeout=2.5) as client, \
            ThreadPoolExecutor(4) as pool:
        runner = client.app.state.runner
        prepare, active, most = runner.prepare, [0], [0]
        lock = threading.Lock()

        def slow_prepare(*args, **kwargs):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(1.0)
            try:
                return prepare(*args, **kwargs)
            finally:
                with lock:
                    active[0] -= 1

        runner.prepare = slow_prepare
        requests = [pool.submit(client.post, "/v1/predict", files=upload((f"{i}.jpg", data)))
                    for i in range(4)]
        codes = sorted(r.result().status_code for r in requests)
        assert most[0] == 1
        assert codes[0] == 200 and 503 in codes, codes  # the last ones waited too long
        busy = [r.result().json() for r in requests if r.result().status_code == 503][0]
        assert "decod" in busy["error"]
        runner.prepare = prepare
        assert client.post("/v1/predict", files=upload(("a.jpg", data))).status_code == 200


@pytest.mark.slow  # builds an export; the other serving tests use the checkpoint
def test_exported_model_serves_without_cam(checkpoint, photos, tmp_path):
    from palm.engine.inference import DygraphPredictor
    dygraph = DygraphPredictor.from_checkpoint(checkpoint)
    export_model(dygraph.model, tmp_path / "export", dict(dygraph.meta))
    config = ServiceConfig(checkpoint=str(tmp_path / "export"))
    with TestClient(create_app(config), base_url="http://127.0.0.1:8000") as client:
        assert client.get("/v1/model").json()["cam_available"] is False
        response = client.post("/v1/predict?cam=1",
                               files=upload((photos[0].name, photos[0].read_bytes())))
    (result,) = response.json()["results"]
    assert response.status_code == 200 and 0 <= result["probability"] <= 1
    assert "cam_png_base64" not in result and "exported" in result["cam_error"]


def test_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    assert 'id="file-input"' in response.text and "<script src" not in response.text  # no CDN


@pytest.mark.slow
def test_browser_upload_shows_probability_and_heatmap(served_url, photos):
    """A real Chromium uploads a photo on the page and sees its probability and heatmap."""
    from playwright.sync_api import expect

    with chromium_page() as page:
        page.goto(served_url + "/")
        expect(page.locator("#model")).to_contain_text("resnet18")
        page.set_input_files("#file-input", [str(photos[0]), str(photos[1])])
        rows = page.locator("#results tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator(".prob")).to_have_text(
            re.compile(r"^[01]\.\d{3}$"), timeout=30_000)
        expect(rows.nth(1).locator(".prediction")).to_have_text(
            re.compile("^(non-PM|PM)$"), timeout=30_000)
        heatmap = page.locator("#viewer img.cam")
        expect(heatmap).to_be_visible()
        assert heatmap.evaluate("img => img.naturalWidth") > 0
        with page.expect_download() as download:
            page.click("#download-csv")
        csv_text = Path(download.value.path()).read_text()
        assert csv_text.splitlines()[0].startswith("filename,probability,prediction")
        assert photos[0].name in csv_text and photos[1].name in csv_text


FORMULA_NAMES = ["=1+2.jpg", "+SUM(1).jpg", "-2+3.jpg", "@cmd.jpg"]


@pytest.mark.slow
def test_browser_failed_upload_counts_and_csv_formulas(served_url, photos, tmp_path):
    """On the page: a failed upload shows its error (not a broken image in the viewer), the
    counts are grammatical, the inline icon is an image, and the CSV's cells that a
    spreadsheet would run as formulas are text."""
    from playwright.sync_api import expect

    (tmp_path / "notes.jpg").write_text("not a photo\n")
    for name in FORMULA_NAMES:
        (tmp_path / name).write_bytes(photos[0].read_bytes())
    with chromium_page() as page:
        page.goto(served_url + "/")
        expect(page.locator("#model")).to_contain_text("resnet18")
        icon_width = page.evaluate("""async () => {
            const img = new Image();
            img.src = document.querySelector('link[rel=icon]').href;
            await img.decode();
            return img.naturalWidth; }""")
        assert icon_width > 0
        page.uncheck("#cam")  # no Grad-CAM: faster
        page.set_input_files("#file-input", [str(tmp_path / "notes.jpg")])
        rows = page.locator("#results tbody tr")
        expect(rows.nth(0).locator(".error")).to_contain_text("not an image")
        expect(page.locator("#status")).to_have_text("1 of 1 done, 0 positive, 1 error")
        expect(page.locator("#viewer img")).to_have_count(0)  # nothing selected
        page.set_input_files("#file-input", [str(tmp_path / n) for n in FORMULA_NAMES])
        expect(page.locator("#status")).to_have_text(
            re.compile(r"^5 of 5 done, \d positive, 1 error$"), timeout=30_000)
        # the viewer opened on the first photo that got an answer, and shows it
        expect(page.locator("#viewer h3")).to_have_text(re.compile("|".join(
            re.escape(n) for n in FORMULA_NAMES)))
        expect(page.locator("#viewer img.photo")).to_be_visible()
        assert page.locator("#viewer img.photo").evaluate("img => img.naturalWidth") > 0
        rows.nth(0).click()  # the failed one: its error, no image
        expect(page.locator("#viewer .error")).to_contain_text("notes.jpg: not an image")
        expect(page.locator("#viewer img")).to_have_count(0)
        with page.expect_download() as download:
            page.click("#download-csv")
        table = list(csv.DictReader(Path(download.value.path()).open(newline="")))
    by_name = {row["filename"]: row for row in table}
    assert set(by_name) == {"notes.jpg", *("'" + n for n in FORMULA_NAMES)}
    for name in FORMULA_NAMES:
        row = by_name["'" + name]
        assert 0 <= float(row["probability"]) <= 1 and float(row["ms"]) >= 0  # numbers stay numbers
        assert row["class_name"] in META["class_names"] and row["error"] == ""
    assert by_name["notes.jpg"]["error"].startswith("notes.jpg: not an image")


def test_files_shorter_than_a_header_are_refused_not_crashing(tmp_path):
    from palm.data import ImageReadError, read_image
    tiny = tmp_path / "tiny.jpg"
    tiny.write_bytes(b"hi\n")
    with pytest.raises(ImageReadError, match="tiny.jpg: not a JPEG, PNG, BMP or TIFF image"):
        read_image(tiny)


@pytest.mark.longest(68)
@pytest.mark.slow
def test_loadtest_runs_the_service_under_load(checkpoint, palm_root, tmp_path, capsys):
    from palm.cli import loadtest
    photos = palm_root / "PALM-Validation400"
    args = loadtest.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--engine", "dygraph", "--photos", str(photos),
         "--requests", "24", "--concurrency", "4", "--warmup", "4", "--work-dir", str(tmp_path),
         "--output", str(tmp_path / "load.json")])
    result = loadtest.main(args)
    assert result["errors"] == 0 and len(result["rounds"]) == 2
    assert all(r["throughput_req_s"] > 0 and r["p95_ms"] >= r["p50_ms"] for r in result["rounds"])
    sizes = {int(k): v for k, v in result["batch_sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) == 4 + 2 * 24  # every request reached the model
    assert result["rss_before_mb"] > 0 and result["model_batch1_img_s"] > 0
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    rates = result["model_batch8_img_s_between_rounds"]
    assert len(rates) == 3  # before the first round and after each
    ratios = [r["throughput_req_s"] / ((a + b) / 2) for r, a, b in
              zip(result["rounds"], rates, rates[1:])]
    assert result["ratio_to_batch_rate"] == pytest.approx(np.median(ratios), abs=2e-3)
    assert len(result["rss_after_rounds_mb"]) == 2 and len(result["loadavg_end"]) == 3
    assert set(result["server_stage_ms_median"]) == {"upload", "decode", "queue_and_model",
                                                     "answer"}
    assert capsys.readouterr().out.splitlines()[-1].startswith("verdict: ")


def test_multiclass_result_names_the_argmax_class(tmp_path):
    from palm.serve.model_runner import ModelRunner
    path = tmp_path / "three.pdparams"
    meta = dict(META, num_classes=3, class_names=["normal", "high myopia", "PM"])
    save_checkpoint(path, build_model("resnet18", num_classes=3), meta)
    runner = ModelRunner(path, engine="dygraph")
    result = runner.result(np.array([0.2, 0.5, 0.3], np.float32))
    assert result["prediction"] == result["decision"] == 1
    assert result["class_name"] == "high myopia"
    assert result["probability"] == pytest.approx(0.5)
    assert result["probabilities"] == pytest.approx({"normal": 0.2, "high myopia": 0.5, "PM": 0.3})
    probs, heatmap = runner.run_batch(np.zeros((2, 3, SIZE, SIZE), np.float32), [True, False])[0]
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1, abs=1e-5)
    assert heatmap.shape == (SIZE, SIZE)


@pytest.mark.slow
def test_browser_shows_each_label_and_downloads_them_as_predict_names_them(multilabel_run,
                                                                           multilabel_root):
    """A multi-label model on the page: every label's probability, threshold and finding in the
    viewer, and the CSV download with probability_<label> and prediction_<label> columns."""
    from playwright.sync_api import expect

    photo = sorted((multilabel_root / "val").glob("*.png"))[5]
    with live_server(multilabel_run / "best.pdparams") as url, chromium_page() as page:
        page.goto(url + "/")
        page.set_input_files("#file-input", [str(photo)])
        expect(page.locator("#results tbody tr .prob")).to_have_text(
            re.compile(r"^[01]\.\d{3}$"), timeout=30_000)
        page.locator("#results tbody tr").click()
        rows = page.locator("#viewer table.answer tbody tr")
        expect(rows).to_have_count(3)
        with make_client(multilabel_run / "best.pdparams") as client:
            (truth,) = client.post("/v1/predict", files=upload(
                (photo.name, photo.read_bytes()))).json()["results"]
        for i, (label, p) in enumerate(truth["probabilities"].items()):
            cells = rows.nth(i).locator("td")
            expect(cells.nth(0)).to_have_text(label)
            expect(cells.nth(1)).to_have_text(f"{p:.3f}")
            expect(cells.nth(3)).to_have_text("yes" if truth["predictions"][label] else "no")
        with page.expect_download() as download:
            page.click("#download-csv")
        (row,) = csv.DictReader(Path(download.value.path()).read_text().splitlines())
    for label, p in truth["probabilities"].items():
        assert float(row[f"probability_{label}"]) == pytest.approx(p)
        assert int(row[f"prediction_{label}"]) == truth["predictions"][label]
