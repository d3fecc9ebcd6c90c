"""Hostile review of the decoding pool and the batcher (issue 26): what a request abandoned
while it waited for a decoding slot keeps, decoding that raises, and a model that fails."""
from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

from tests.serve.helpers import make_client, upload, wait_until


class HeldPrepare:
    """Holds `runner.prepare` (the decoding slot of its request with it) until released."""

    def __init__(self, runner):
        self.prepare, self.entered, self.release = runner.prepare, threading.Event(), threading.Event()
        runner.prepare = self

    def __call__(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(30)
        return self.prepare(*args, **kwargs)


def _uploads_named(name: str) -> int:
    """How many lists of (file name, content) uploads hold a file called `name`."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, list) and o
               and isinstance(o[0], tuple) and len(o[0]) == 2 and isinstance(o[0][0], str)
               and o[0][0] == name)


def test_a_request_that_timed_out_waiting_for_a_slot_lets_its_upload_go(checkpoint, photos):
    """Its 503 answered, its bytes given back to the upload budget: the upload must not stay
    in memory, waiting for a slot it will never use (many such requests would hold many
    uploads the budget no longer counts)."""
    data = photos[0].read_bytes()
    with make_client(checkpoint, max_decoding=1, timeout=1.0) as client, \
            ThreadPoolExecutor(1) as clients:
        held = HeldPrepare(client.app.state.runner)
        first = clients.submit(client.post, "/v1/predict", files=upload(("first.jpg", data)))
        held.entered.wait(30)  # the one slot is taken
        waiting = client.post("/v1/predict", files=upload(("abandoned-b.jpg", data)))
        assert waiting.status_code == 503 and "decoding slots" in waiting.json()["error"]
        try:
            assert _uploads_named("abandoned-b.jpg") == 0
        finally:
            held.release.set()
        assert first.result().status_code in (200, 504)
        # the slot is free again for a new request
        assert client.post("/v1/predict", files=upload(("c.jpg", data))).status_code == 200


def test_more_photos_than_the_queue_holds_are_refused_before_any_is_decoded(checkpoint, photos):
    """max_files above max_queue: the request can never be queued whole, so its photos
    must not take a decoding slot first (a client could make the service decode max_files
    photos per request for nothing)."""
    data = photos[0].read_bytes()
    with make_client(checkpoint, max_queue=2, max_files=8) as client:
        runner = client.app.state.runner
        decoded = []
        prepare = runner.prepare
        runner.prepare = lambda *a, **k: decoded.append(a[0]) or prepare(*a, **k)
        answer = client.post("/v1/predict",
                             files=upload(*[(f"{i}.jpg", data) for i in range(5)]))
        assert answer.status_code == 413 and "send at most 2" in answer.json()["error"]
        assert decoded == []
        assert client.post("/v1/predict",
                           files=upload(("a.jpg", data), ("b.jpg", data))).status_code == 200
        assert len(decoded) == 2


def test_an_upload_slower_than_the_timeout_is_decoded_on_an_idle_service(checkpoint, photos):
    """`timeout` bounds decoding and the model, `upload_timeout` the upload: a client whose
    upload took longer than `timeout` (a slow link) got "busy: waited for a decoding slot"
    (503, retry in 1 s) from an idle service, on every retry."""
    import time

    from tests.serve.test_inflight import connect, head, multipart, response_of, serving
    body = multipart(photos[0].read_bytes())
    with serving(checkpoint, timeout=1.0, upload_timeout=20.0) as (port, _, _), \
            connect(port) as sock:
        sock.sendall(head(len(body)) + body[:100])
        time.sleep(1.5)  # the rest comes after `timeout`, well within `upload_timeout`
        sock.sendall(body[100:])
        status, answer = response_of(sock)
    assert status == 200, answer
