"""The upload bytes held by all requests at once are bounded (max_inflight_mb): every request
kept its whole upload in memory while it waited for a decoding slot, so memory grew with the
number of clients (hostile review: 60 clients x 13.5 MB, +720 MB). Loopback only."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from palm.bench.loadtest import free_port
from palm.errors import BadConfig
from palm.serve.app import create_app
from palm.serve.config import ServiceConfig
from palm.serve import guard
from palm.serve.guard import UploadBudget, server_config

from tests.serve.helpers import BlockedModel, wait_until

BOUNDARY = b"XX"


@contextmanager
def serving(checkpoint: Path, **options) -> Iterator[tuple[int, UploadBudget, object]]:
    """The service in uvicorn on a free loopback port: (port, its upload budget, its app)."""
    config = ServiceConfig(checkpoint=str(checkpoint), engine="dygraph", **options)
    app = create_app(config)
    server = uvicorn.Server(server_config(app, config, free_port()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30)
        yield server.config.port, app.state.upload_budget, app
    finally:
        server.should_exit = True
        thread.join(10)


def multipart(photo: bytes, size: int | None = None) -> bytes:
    """A body with `photo` as a file part, padded by a text field to `size` bytes if given."""
    part = (b'--XX\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n")
    end = b"--XX--\r\n"
    if size is None:
        return part + end
    pad_head = b'--XX\r\nContent-Disposition: form-data; name="files"; filename="pad.bin"\r\n\r\n'
    pad = size - len(part) - len(pad_head) - 2 - len(end)
    return part + pad_head + b"\0" * pad + b"\r\n" + end


def head(length: int | None, expect: bool = False) -> bytes:
    lines = [b"POST /v1/predict HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Type: multipart/form-data; boundary=XX"]
    lines.append(b"Content-Length: %d" % length if length is not None
                 else b"Transfer-Encoding: chunked")
    if expect:
        lines.append(b"Expect: 100-continue")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.settimeout(20)  # on failure the test stops here
    return sock


def response_of(sock: socket.socket, data: bytes = b"") -> tuple[int, dict]:
    """Status and JSON body of the (Connection: close) response on `sock` (`data` of it
    already read)."""
    while chunk := sock.recv(65536):
        data += chunk
    head_, _, body = data.partition(b"\r\n\r\n")
    return int(head_.split()[1]), json.loads(body) if body else {}


def post(port: int, body: bytes) -> tuple[int, dict]:
    """POST `body` as curl does a large one: its head with 'Expect: 100-continue', the body
    only once the server asks for it (a refusal comes before; sent anyway, the body would meet
    a closed connection)."""
    with connect(port) as sock:
        sock.sendall(head(len(body), expect=True))
        first = sock.recv(65536)
        if not first.startswith(b"HTTP/1.1 100 "):
            return response_of(sock, first)
        sock.sendall(body)
        return response_of(sock)


def test_uploads_over_the_budget_get_503_while_the_service_answers_within_it(checkpoint, photos):
    photo = photos[0].read_bytes()
    with serving(checkpoint, max_upload_mb=1, max_inflight_mb=1.5) as (port, budget, _):
        held = multipart(photo, 1_000_000)
        with connect(port) as first:  # a 1 MB upload still arriving
            first.sendall(head(len(held)) + held[:500_000])
            wait_until(lambda: budget.held == 1_000_000)
            status, body = post(port, multipart(photo, 800_000))  # 1.8 MB > 1.5: refused at once
            assert status == 503 and "busy receiving other uploads" in body["error"]
            assert "1.5 MB" in body["error"] and body["request_id"]
            status, body = post(port, multipart(photo))  # a small one still fits
            assert status == 200 and body["results"][0]["error"] is None
            first.sendall(held[500_000:])
            status, body = response_of(first)
            assert status == 200, body
        wait_until(lambda: budget.held == 0)
        assert budget.high_water <= 1_500_000


def test_a_client_still_sending_a_refused_upload_reads_the_answer(checkpoint, photos):
    """413 (too large by its length) and 503 (over the budget) answer before the body is
    read. http.client, like requests and curl, sends the whole body before it reads: the
    connection was closed under it and it saw a reset; now the rest of the body is read and
    dropped (memory stays flat), the answer arrives and the connection serves the next
    request. A client that stops sending the rest is cut off after the head deadline."""
    photo = photos[0].read_bytes()
    form = {"Content-Type": "multipart/form-data; boundary=XX"}
    with serving(checkpoint, max_upload_mb=1, max_inflight_mb=1.5, header_timeout=1) as \
            (port, budget, _):
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        client.request("POST", "/v1/predict", body=multipart(photo, 8_000_000), headers=form)
        answer = client.getresponse()
        assert answer.status == 413 and "MB" in json.loads(answer.read())["error"]
        with connect(port) as first:  # a 1 MB upload still arriving holds the budget
            held = multipart(photo, 1_000_000)
            first.sendall(head(len(held)) + held[:500_000])
            wait_until(lambda: budget.held == 1_000_000)
            client.request("POST", "/v1/predict", body=multipart(photo, 900_000), headers=form)
            answer = client.getresponse()
            assert answer.status == 503 and "busy" in json.loads(answer.read())["error"]
            first.sendall(held[500_000:])
            assert response_of(first)[0] == 200
        client.request("POST", "/v1/predict", body=multipart(photo), headers=form)
        assert client.getresponse().status == 200  # the same connection, kept alive
        client.close()
        with connect(port) as quitter:  # sends part of a refused body, then nothing
            quitter.sendall(head(8_000_000).replace(b"Connection: close\r\n", b"")
                            + b"\0" * 100_000)
            start = time.monotonic()
            data = b""
            while chunk := quitter.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 413 ") and time.monotonic() - start < 10


def test_a_refused_body_is_read_only_up_to_a_bound(checkpoint, monkeypatch):
    """Dropping a refused body costs bandwidth: a client pushing gigabytes after its 413 is
    cut off once DROPPED_BODY_BYTES were read, long before the head deadline."""
    monkeypatch.setattr(guard, "DROPPED_BODY_BYTES", 2_000_000)
    with serving(checkpoint, max_upload_mb=1, header_timeout=60) as (port, _, _):
        with connect(port) as pusher:
            pusher.sendall(head(10**12).replace(b"Connection: close\r\n", b""))
            sent, start, piece = 0, time.monotonic(), b"\0" * 65536
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                while sent < 500_000_000:
                    pusher.sendall(piece)
                    sent += len(piece)
            assert sent < 100_000_000 and time.monotonic() - start < 30


def test_a_refusal_to_a_client_waiting_for_100_continue_closes_the_connection(checkpoint):
    """It sent no body byte: kept alive, its next request was read as the refused body and
    the connection dropped unanswered at the head deadline."""
    with serving(checkpoint, max_upload_mb=1, header_timeout=5) as (port, _, _):
        with connect(port) as sock:
            sock.sendall(head(8_000_000, expect=True).replace(b"Connection: close\r\n", b""))
            data = sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 413 ")
            assert b"connection: close" in data.partition(b"\r\n\r\n")[0].lower()
            start = time.monotonic()
            while sock.recv(65536):
                pass
            assert time.monotonic() - start < 2  # closed at once, not at the deadline


def chunked(data: bytes, piece: int = 100_000) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + piece]), data[i:i + piece])
                    for i in range(0, len(data), piece))


def test_the_bytes_held_go_back_whatever_way_the_request_ends(checkpoint, photos, events):
    photo = photos[0].read_bytes()
    body = multipart(photo)
    with serving(checkpoint, max_upload_mb=1, max_inflight_mb=1.5, upload_timeout=1) as \
            (port, budget, _):

        def ends_with(status: int, send) -> None:
            budget.high_water = 0
            with connect(port) as sock:
                send(sock)
                if status:
                    assert response_of(sock)[0] == status
            wait_until(lambda: budget.held == 0)
            assert budget.high_water > 0  # its bytes were counted

        ends_with(200, lambda s: s.sendall(head(len(body)) + body))
        ends_with(200, lambda s: s.sendall(head(None) + chunked(body) + b"0\r\n\r\n"))
        not_image = multipart(b"not an image" * 100)
        ends_with(415, lambda s: s.sendall(head(len(not_image)) + not_image))
        no_photo = b'--XX\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--XX--\r\n'
        ends_with(422, lambda s: s.sendall(head(len(no_photo)) + no_photo))
        malformed = b"--XX\r\nnot multipart"
        ends_with(400, lambda s: s.sendall(head(len(malformed)) + malformed))
        big = multipart(photo, 1_200_000)  # no length: cut off at 1 MB
        ends_with(413, lambda s: s.sendall(head(None) + chunked(big)))
        ends_with(408, lambda s: s.sendall(head(len(body)) + body[:200]))  # never finished

        def leaves_mid_upload(sock: socket.socket) -> None:
            sock.sendall(head(len(body)) + body[:200])
            wait_until(lambda: budget.held > 0)  # let in, then the connection closes

        ends_with(0, leaves_mid_upload)

        def refused_at_once(sock: socket.socket) -> None:  # its length does not fit
            with connect(port) as other:
                other.sendall(head(900_000))  # let in, body to come
                wait_until(lambda: budget.held == 900_000)
                sock.sendall(head(700_000, expect=True))
                status, answer = response_of(sock)
                assert status == 503 and "busy receiving other uploads" in answer["error"]

        ends_with(0, refused_at_once)

        def two_over_the_budget(sock: socket.socket) -> None:  # chunked: cut off at 1.5 MB
            events.events.clear()
            with connect(port) as other:
                other.sendall(head(None) + chunked(multipart(photo, 900_000)))
                wait_until(lambda: budget.held >= 900_000)
                sock.sendall(head(None) + chunked(multipart(photo, 900_000)))
                assert response_of(sock)[0] == 503
                wait_until(lambda: any(e["status"] == 503 for e in events.named("request")))

        ends_with(0, two_over_the_budget)


def test_config_refuses_a_budget_smaller_than_one_upload(checkpoint):
    with pytest.raises(BadConfig, match=r"max_inflight_mb must be >= max_upload_mb \(20\)") as e:
        ServiceConfig(checkpoint=str(checkpoint), max_inflight_mb=10).check()
    assert "\n" not in str(e.value) and e.value.param == "max_inflight_mb"
    ServiceConfig(checkpoint=str(checkpoint), max_upload_mb=5, max_inflight_mb=5).check()


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_thirty_clients_of_5_mb_hold_at_most_the_budget(checkpoint, photos):
    """30 clients x 5 MB against a 30 MB budget, the model held so that every upload let in
    stays in memory: 6 are let in, 24 refused before their bodies are sent (Expect:
    100-continue), and the server's memory grows by about the budget, not 150 MB."""
    body = multipart(photos[0].read_bytes(), 5_000_000)
    with serving(checkpoint, max_upload_mb=6, max_inflight_mb=30, max_batch=1,
                 max_wait_ms=0) as (port, budget, app):
        blocked = BlockedModel(app.state.batcher)
        peak, sampling = [vm_rss()], threading.Event()
        baseline = peak[0]

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], vm_rss())
                time.sleep(0.01)

        def client(_: int) -> int:
            return post(port, body)[0]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(30) as pool:
            answers = [pool.submit(client, i) for i in range(30)]
            wait_until(lambda: sum(a.done() for a in answers) == 24, 60)
            # every upload let in is in memory: one photo in the model, five queued
            wait_until(lambda: blocked.entered.is_set() and app.state.batcher.pending == 5, 60)
            blocked.release.set()
            statuses = sorted(a.result() for a in answers)
        sampling.set()
        sampler.join(5)
        assert statuses == [200] * 6 + [503] * 24
        assert budget.high_water == 30_000_000 and budget.held == 0
        assert peak[0] - baseline < 100e6, f"RSS grew by {(peak[0] - baseline) / 1e6:.0f} MB"
