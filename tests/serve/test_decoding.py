"""The service's deadline covers decoding, and a request abandoned (deadline passed, client
gone) stops its work: photos not decoded yet are skipped, queued photos leave the queue."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from palm.bench.loadtest import free_port

from tests.serve.helpers import BlockedModel, Events, make_client, upload, wait_until


class SlowDecoder:
    """Replaces runner.prepare with one that takes `seconds` a photo and counts its calls."""

    def __init__(self, runner, seconds: float):
        self.prepare, self.seconds, self.calls = runner.prepare, seconds, 0
        runner.prepare = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        time.sleep(self.seconds)
        return self.prepare(*args, **kwargs)


class Server:
    """The app under uvicorn in a thread: a real socket, so a client can disconnect."""

    def __init__(self, app):
        self.app = app
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_config=None, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        wait_until(lambda: self.server.started)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def post_and_leave(self, files, after: float) -> None:
        """Send a request and disconnect after `after` seconds without an answer."""
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(self.url + "/v1/predict", files=files, timeout=after)


def _statuses(events: Events) -> list[int]:
    return [fields["status"] for fields in events.named("request")
            if fields.get("path") == "/v1/predict"]


def test_decoding_past_the_deadline_answers_504_and_stops(checkpoint, photos, events):
    """The deadline used to cover only the wait for the model: four slow photos from a
    client that had long given up were decoded to the end and answered 200."""
    data = photos[0].read_bytes()
    with make_client(checkpoint, timeout=0.5) as client:
        slow = SlowDecoder(client.app.state.runner, 0.3)
        start = time.perf_counter()
        response = client.post("/v1/predict", files=upload(*[(f"{i}.jpg", data) for i in range(6)]))
        assert response.status_code == 504, response.text
        assert "not decoded within 0.5 s" in response.json()["error"]
        assert time.perf_counter() - start < 0.5 + 0.3 + 0.5  # at the deadline, not after 6 photos
        time.sleep(0.8)  # the photo being decoded at the deadline finishes, no other starts
        assert slow.calls <= 3, slow.calls
    (cancelled,) = events.named("cancelled")
    assert cancelled["reason"] == "timeout" and cancelled["stage"] == "decoding"
    assert events.named("decoding_stopped")[0]["skipped"] >= 3


def test_client_that_disconnects_while_decoding_is_cancelled(checkpoint, photos, events):
    data = photos[0].read_bytes()
    client = make_client(checkpoint, timeout=30)
    with Server(client.app) as server:
        slow = SlowDecoder(client.app.state.runner, 0.3)
        server.post_and_leave(upload(*[(f"{i}.jpg", data) for i in range(8)]), after=0.5)
        wait_until(lambda: events.named("cancelled"), timeout=5)
        time.sleep(0.5)
        assert slow.calls <= 4, slow.calls  # not the 8 photos
    (cancelled,) = events.named("cancelled")
    assert cancelled["reason"] == "disconnected" and cancelled["stage"] == "decoding"
    assert _statuses(events) == [499]  # not 200


def test_client_that_disconnects_while_queued_leaves_the_queue(checkpoint, photos, events):
    """A disconnected client's photos stayed queued (counting against --max-queue, so others
    got 503) and then ran through the model for nobody."""
    data = photos[0].read_bytes()
    client = make_client(checkpoint, timeout=30, max_batch=1, max_wait_ms=0)
    batcher = client.app.state.batcher
    with Server(client.app) as server:
        blocked = BlockedModel(batcher)
        first = threading.Thread(target=httpx.post, args=(server.url + "/v1/predict",),
                                 kwargs={"files": upload(("a.jpg", data)), "timeout": 30})
        first.start()
        assert blocked.entered.wait(10)  # the first photo is in the model
        server.post_and_leave(upload(*[(f"{i}.jpg", data) for i in range(3)]), after=1.0)
        wait_until(lambda: batcher.pending == 0, timeout=5)  # the model is still blocked
        assert batcher.cancelled == 3
        blocked.release.set()
        first.join(30)
        assert httpx.post(server.url + "/v1/predict", files=upload(("b.jpg", data)),
                          timeout=30).status_code == 200
    assert sum(batcher.batch_sizes.values()) == 2  # "a" and "b"; the cancelled ones never ran
    assert sorted(_statuses(events)) == [200, 200, 499]
    assert events.named("cancelled")[0]["stage"] == "waiting for the model"


_ARENAS = """
import sys, threading
import numpy as np
from palm.serve.model_runner import return_large_blocks_to_the_system
if sys.argv[1] == "tuned":
    return_large_blocks_to_the_system()
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))
x = np.ones(20_000_000, np.uint8)
del x  # a freed 20 MB block raises glibc's mmap threshold past a photo's size
base = rss_mb()
def request(barrier):
    barrier.wait()
    photo = np.ones(13_000_000, np.uint8)  # a decoded PALM photo
    barrier.wait()
    del photo
for _ in range(3):
    barrier = threading.Barrier(12)
    threads = [threading.Thread(target=request, args=(barrier,)) for _ in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
print(rss_mb() - base)
"""


@pytest.mark.slow  # a child process measuring resident memory (8 s)
def test_freed_photos_go_back_to_the_system(tmp_path):
    """Photos decoded in the service's threads were freed into glibc's per-thread arenas,
    which kept them: the service's memory grew by ~175 MB from one load-test round to a
    later one. Twelve threads each freeing a 13 MB array keep ~150 MB by default."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    kept = {mode: float(subprocess.run([sys.executable, "-c", _ARENAS, mode], env=env,
                                       check=True, capture_output=True, text=True,
                                       timeout=120).stdout.split()[-1])
            for mode in ("default", "tuned")}
    assert kept["default"] > 100, kept  # the effect is real on this C library
    assert kept["tuned"] < 20, kept


def test_every_batch_size_warms_up_in_the_model_thread(checkpoint, monkeypatch):
    """oneDNN caches kernels per shape and per thread: warmed up in the main thread, the
    model thread built each batch size's kernels again under load (memory rose 100-175 MB
    rounds into a load test, at the first batch of 4)."""
    from palm.engine.inference import DygraphPredictor

    threads: list[tuple[str, int]] = []
    predict = DygraphPredictor.predict

    def recording(self, x):
        threads.append((threading.current_thread().name, len(x)))
        return predict(self, x)

    monkeypatch.setattr(DygraphPredictor, "predict", recording)
    with make_client(checkpoint, max_batch=4) as client:
        assert threads == [("palm-batcher", n) for n in (1, 2, 3, 4)]
        assert client.get("/healthz").json()["batches"] == 0  # requests' batches only
