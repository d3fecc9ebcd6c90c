"""The service's pipeline: the bounded decoding pool, batches that gather while the model runs,
and the same answers as the model run directly on the same photos."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from palm.serve.batcher import MicroBatcher
from palm.serve.model_runner import ModelRunner

from tests.serve.helpers import BlockedModel, make_client, upload, wait_until


class CountingPrepare:
    """Wraps `runner.prepare`: how many run at once at most, and on which threads."""

    def __init__(self, runner, seconds: float):
        self.prepare, self.seconds = runner.prepare, seconds
        self.active = self.most = 0
        self.threads: set[str] = set()
        self.lock = threading.Lock()
        runner.prepare = self

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        try:
            return self.prepare(*args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1


def test_decoding_runs_in_a_pool_of_max_decoding_threads(checkpoint, photos):
    data = photos[0].read_bytes()
    with make_client(checkpoint, max_decoding=2) as client, ThreadPoolExecutor(6) as clients:
        counting = CountingPrepare(client.app.state.runner, 0.3)
        answers = [clients.submit(client.post, "/v1/predict", files=upload((f"{i}.jpg", data)))
                   for i in range(6)]
        assert [a.result().status_code for a in answers] == [200] * 6
    assert counting.most == 2
    assert len(counting.threads) <= 2 and all(t.startswith("palm-decode") for t in counting.threads)


def test_the_decoding_pool_defaults_to_the_usable_cores(checkpoint):
    from palm.runtime import usable_cores
    from palm.serve.config import ServiceConfig
    assert ServiceConfig(checkpoint=str(checkpoint)).max_decoding == usable_cores()


def test_a_flood_of_uploads_gets_503_while_decoding_stays_bounded(checkpoint, photos):
    """With the model held and a queue of 2, a flood of 10 requests: 2 queued, the rest
    answered 503 busy at once, never more than max_decoding photos decoding, and the
    service answers again once the model is free."""
    data = photos[0].read_bytes()
    with make_client(checkpoint, max_decoding=2, max_queue=2, max_batch=1) as client, \
            ThreadPoolExecutor(10) as clients:
        batcher = client.app.state.batcher
        counting = CountingPrepare(client.app.state.runner, 0.05)
        held = BlockedModel(batcher)
        first = clients.submit(client.post, "/v1/predict", files=upload(("0.jpg", data)))
        held.entered.wait(30)  # the model holds one photo; the queue (2) is empty
        flood = [clients.submit(client.post, "/v1/predict", files=upload((f"{i}.jpg", data)))
                 for i in range(1, 10)]
        wait_until(lambda: sum(f.done() for f in flood) >= 7, timeout=60)
        assert batcher.pending == 2
        busy = [f.result() for f in flood if f.done()]
        assert all(r.status_code == 503 and "busy" in r.json()["error"] for r in busy)
        held.release.set()
        codes = [first.result().status_code] + [f.result().status_code for f in flood]
    assert codes.count(200) == 3 and codes.count(503) == 7
    assert counting.most <= 2


def test_answers_equal_the_model_run_directly_on_the_same_photos(checkpoint, photos):
    """Photos sent by concurrent clients (decoded in the pool, batched with others) get the
    probabilities the model gives each photo decoded and run alone."""
    runner = ModelRunner(checkpoint, engine="dygraph")
    direct = {}
    for path in photos:
        photo = runner.prepare(path.name, path.read_bytes(), cam=False)
        (probs, _), = runner.run_batch(photo.x[None], [False])
        direct[path.name] = float(probs)
    with make_client(checkpoint, max_batch=4) as client, ThreadPoolExecutor(len(photos)) as pool:
        answers = list(pool.map(lambda p: client.post(
            "/v1/predict", files=upload((p.name, p.read_bytes()))), photos))
        batches = client.app.state.batcher.batch_sizes
    served = {a.json()["results"][0]["filename"]: a.json()["results"][0]["probability"]
              for a in answers}
    assert served.keys() == direct.keys()
    for name, probability in served.items():
        assert probability == pytest.approx(direct[name], abs=1e-6), name
    assert sum(k * v for k, v in batches.items()) == len(photos)


def test_photos_that_arrive_while_the_model_runs_start_the_next_batch_at_once():
    """An idle model waits up to max_wait for a batch to fill; one that was busy runs what
    gathered meanwhile as soon as it is free, without waiting again."""
    started: list[tuple[float, int]] = []
    release = threading.Event()

    def run_batch(x: np.ndarray, cam: list[bool]) -> list:
        started.append((time.monotonic(), len(x)))
        if len(started) == 1:
            release.wait(30)
        return [None] * len(x)

    batcher = MicroBatcher(run_batch, max_batch=8, max_wait_s=1.0, max_queue=16)
    batcher.start()
    try:
        submitted = time.monotonic()
        first = batcher.submit([(np.zeros(1), False)])
        wait_until(lambda: started)
        assert started[0][0] - submitted >= 0.9  # idle: waited for the batch to fill
        later = batcher.submit([(np.zeros(1), False)] * 3)
        released = time.monotonic()
        release.set()
        for future in first + later:
            future.result(10)
        assert started[1][1] == 3 and started[1][0] - released < 0.5  # no second wait
    finally:
        batcher.stop()


def test_the_load_tests_prebuilt_upload_is_read_as_a_browsers(checkpoint, photos):
    from palm.bench.loadtest import BOUNDARY, multipart_body
    data = photos[0].read_bytes()
    with make_client(checkpoint) as client:
        built = client.post("/v1/predict", content=multipart_body('eye "1".jpg', data),
                            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        browser = client.post("/v1/predict", files=upload(("eye.jpg", data)))
    assert built.status_code == browser.status_code == 200, built.text
    (result,), (expected,) = built.json()["results"], browser.json()["results"]
    assert result["filename"] == 'eye _1_.jpg' and result["probability"] == expected["probability"]
