"""Screening service: a JSON API and a web page over one model (FastAPI + uvicorn).

    app = create_app(ServiceConfig(checkpoint="runs/resnet50/best.pdparams"))

Endpoints:
    GET  /             the web page (palm/engine/static/index.html)
    GET  /healthz      liveness, queue length, batch sizes run so far
    GET  /v1/model     name, SHA-256, classes, threshold (operating point), calibration, limits
    POST /v1/predict   multipart upload of one or more photos -> one JSON result per photo;
                       `?cam=1` adds a Grad-CAM overlay (PNG, base64)

Concurrent requests are micro-batched: photos wait in a bounded queue, and one worker thread
runs up to `max_batch` of them together after waiting at most `max_wait_ms` for the batch to
fill, so many clients share the batch throughput of the predictor instead of each running a
batch of one. The model only ever runs in that thread. A full queue answers 503 at once, a
request not answered within `timeout` (decoding included) answers 504. A request whose
client disconnects, or whose time is up, stops: its photos not yet decoded are skipped and
its photos still queued leave the queue (logged as `cancelled`, status 499 for a client that
left).

Every error is JSON `{"error": message, "request_id": ...}` with a status saying what went
wrong: 401 no or wrong token, 403 another web site's page, 408 request head or upload too
slow, 413 upload, image or photo count too large, 415 not an image (the content is decoded,
the extension is ignored), 422 empty or damaged image, no photo, or a photo for which the
model's output is not finite (NaN or inf), 503 busy, 504 timeout, 500 a bug (its traceback
goes to the log, never to the client). Every request
is logged as one JSON line with its id, which the response repeats in `X-Request-ID`.
Every response forbids framing by other pages and MIME sniffing (SECURITY_HEADERS).

Uploaded photos live in memory (parts over 1 MB in a temporary file deleted with the
request) and are kept only when `save_dir` is set.
"""
from __future__ import annotations

import asyncio
import base64
import ctypes
import http
import ipaddress
import json
import logging
import secrets
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence, TextIO, TypeVar

import cv2
import h11
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from palm import predictions as P
from palm.data import (ImageReadError, TooManyPixels, crop_fundus, decode_image, eval_transform,
                       resize_short_side)
from palm.data.image_io import header_size, max_pixels_setting
from palm.engine.checkpoint import decision_threshold, load_checkpoint_model
from palm.engine.evaluate import NON_FINITE_OUTPUT, finite_probabilities, finite_rows
from palm.engine.inference import DygraphPredictor, is_exported, load_predictor, weights_sha256
from palm.errors import BadConfig, describe_os_error
from palm.io_utils import atomic_path
from palm.viz.cam import GradCAM, attention_note, overlay_heatmap

TOKEN_ENV = "PALM_SERVE_TOKEN"
LOG = logging.getLogger("palm.serve")
# short side of the photo under a Grad-CAM overlay: enough to see the disc and the macula,
# small enough to send as base64 JSON
CAM_SIDE = 384
FORMATS = "JPEG, PNG, BMP or TIFF"
# a token guessable in a few tries protects nothing; whitespace cannot survive an HTTP header
MIN_TOKEN_CHARS = 16
# on every response: no other site's page may show ours in a frame (clickjacking), and
# browsers take the Content-Type as given instead of guessing (an upload echoed as HTML)
SECURITY_HEADERS = {"X-Frame-Options": "DENY",
                    "Content-Security-Policy": "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}


@dataclass
class ServiceConfig:
    """What `create_app` serves and its limits (tools/serve.py's options)."""

    checkpoint: str
    engine: str = "auto"  # see palm.engine.inference.load_predictor
    host: str = "127.0.0.1"
    token: str | None = None
    save_dir: str | None = None
    max_upload_mb: float = 20.0  # per request
    max_pixels: int | None = None  # per photo; None: palm.data's default ($PALM_MAX_PIXELS)
    max_files: int = 64  # photos per request
    max_queue: int = 64  # photos waiting for the model
    timeout: float = 30.0  # seconds a request may take, decoding and model
    upload_timeout: float = 60.0  # seconds the whole upload may take to arrive
    header_timeout: float = 10.0  # seconds a request's line and headers may take to arrive
    max_batch: int = 8
    max_wait_ms: float = 10.0
    # requests decoding photos at once: a photo of max_pixels takes 3 bytes a pixel, and OpenCV
    # holds about 6 while decoding, however small its file (a PNG of one colour); this bounds
    # the memory
    max_decoding: int = 2

    def check(self) -> None:
        """Refuse options that make no sense, an exposed service without a token, a short
        token and a --save-dir that cannot be written (creating it)."""
        for name in ("max_upload_mb", "max_files", "max_queue", "timeout", "upload_timeout",
                     "header_timeout", "max_batch", "max_decoding"):
            if not getattr(self, name) > 0:
                raise BadConfig(f"{name} must be positive, got {getattr(self, name)}",
                                param=name)
        if self.max_wait_ms < 0:
            raise BadConfig(f"max_wait_ms must be >= 0, got {self.max_wait_ms}",
                            param="max_wait_ms")
        max_pixels_setting(self.max_pixels)  # raises on a bad value
        if not is_loopback(self.host) and not self.token:
            raise BadConfig(f"host {self.host} makes the service reachable from other "
                            f"machines; set token or ${TOKEN_ENV} (clients then send "
                            "'Authorization: Bearer TOKEN'), or bind to 127.0.0.1",
                            param=("host", "token"))
        if self.token is not None and (len(self.token) < MIN_TOKEN_CHARS
                                       or any(c.isspace() for c in self.token)):
            raise BadConfig(f"token (or ${TOKEN_ENV}) must be at least {MIN_TOKEN_CHARS} "
                            f"characters without spaces, got {len(self.token)}; make one with "
                            "python -c 'import secrets; print(secrets.token_urlsafe(24))'",
                            param="token")
        if self.save_dir is not None:
            check_writable_folder(Path(self.save_dir), "save_dir")


def check_writable_folder(folder: Path, param: str) -> None:
    """Create `folder` if needed and write a file in it, so that a folder that refuses files
    (read-only, not a folder, no permission) is refused now, not after every prediction."""
    if folder.exists() and not folder.is_dir():
        raise BadConfig(f"{param} {folder}: is a file, not a folder; give a folder", param=param)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise BadConfig(f"{param} {describe_os_error(e) or f'{folder}: {e}'}",
                        param=param) from None


# glibc's mallopt parameter, and the size from which blocks are mapped (and unmapped when freed)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def _glibc() -> Any:
    """The C library if it is glibc (it has mallopt), else None (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:
        return None


def return_large_blocks_to_the_system() -> None:
    """Make glibc map every block over 1 MB on its own and give it back when freed.

    By default glibc raises its mmap threshold to the largest block freed so far (up to
    32 MB), after which the decoded photos (13 MB for a PALM photo) and batches come from the
    arenas of the threads that allocated them, which keep their peak: the service's memory
    rose by 175 MB in the third of five load-test rounds. Setting the threshold stops that
    (tests/test_serve_decoding.py shows it), though not every step of the service's memory
    (README, Screening service). Nothing happens on another C library.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


# ---------------------------------------------------------------- logging

class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                 "level": record.levelname.lower(), "event": record.getMessage(),
                 **getattr(record, "fields", {})}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_json_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send palm.serve's and uvicorn's records of `level` and above to `stream` (stderr) as
    JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for logger in (LOG, logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")):
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    LOG.log(level, event, extra={"fields": fields})


# ---------------------------------------------------------------- the model

@dataclass
class Photo:
    """An uploaded photo after decoding: the model input, or why there is none."""

    filename: str
    data: bytes
    x: np.ndarray | None = None  # CHW float32 model input
    shown: np.ndarray | None = None  # RGB photo the Grad-CAM overlay is drawn on
    error: str | None = None
    status: int = 200  # what this photo alone would answer
    ms: float = 0.0  # decoding time


class ModelRunner:
    """The model behind the service: decodes photos and predicts batches (with Grad-CAM).

    Grad-CAM needs gradients, so it runs on a dygraph copy of a `.pdparams` checkpoint; an
    exported inference folder has none, and its results say so.
    """

    def __init__(self, checkpoint: str | Path, engine: str = "auto",
                 max_pixels: int | None = None):
        self.checkpoint = Path(checkpoint)
        self.predictor = load_predictor(self.checkpoint, engine=engine)
        self.meta = self.predictor.meta
        self.sha256 = weights_sha256(self.checkpoint)
        self.max_pixels = max_pixels
        self.threshold = float(self.meta.get("threshold", 0.5))
        self.temperature = float(self.meta.get("temperature", 1.0))  # temperature scaling
        self.class_names = list(self.meta.get("class_names") or [])
        self.image_size = int(self.meta["image_size"])
        # the crop is done before the transform, so the overlay shows the field the model saw
        self.transform = eval_transform(self.meta, fundus_crop=False)
        self.gradcam: GradCAM | None = None
        self.cam_unavailable = ""
        if isinstance(self.predictor, DygraphPredictor):
            self.gradcam = GradCAM(self.predictor.model)
        elif is_exported(self.checkpoint):
            self.cam_unavailable = ("Grad-CAM needs the .pdparams checkpoint; this service "
                                    "runs an exported inference model, which has no gradients")
        else:
            self.gradcam = GradCAM(load_checkpoint_model(self.checkpoint)[0])

    def warm_up(self, batcher: "MicroBatcher") -> None:
        """Run every batch size the batcher can form once through it, in its model thread: oneDNN builds
        (and caches) its kernels per input shape and per thread, which would otherwise slow
        the first requests and grow memory under load. Warmed up in another thread, the
        service's memory still rose by 100-175 MB at the first batch of 4, rounds into a load
        test."""
        shape = (3, self.image_size, self.image_size)
        # a batch never holds more photos than the queue
        for size in range(1, min(batcher.max_batch, batcher.max_queue) + 1):
            for future in batcher.submit([(np.zeros(shape, np.float32), False)] * size):
                future.result()
        batcher.batch_sizes.clear()  # /healthz counts the requests' batches only

    def describe(self) -> dict[str, Any]:
        """Model metadata for /v1/model and every prediction response."""
        meta = self.meta
        threshold_source = decision_threshold(meta)[1]  # as eval and predict report it
        return {
            "name": meta["model"], "sha256": self.sha256, "epoch": meta.get("epoch"),
            "engine": self.predictor.engine, "precision": getattr(self.predictor, "precision", "fp32"),
            "num_classes": meta["num_classes"], "class_names": self.class_names,
            "image_size": self.image_size, "normalize": meta.get("normalize", "minus_one_one"),
            "fundus_crop": bool(meta.get("fundus_crop", False)), "threshold": self.threshold,
            "threshold_source": threshold_source,
            "calibration": {"temperature": self.temperature,
                            "source": meta.get("temperature_source", "none")},
            "metrics": meta.get("metrics"),
            "cam_available": self.gradcam is not None,
            **({"cam_unavailable": self.cam_unavailable} if self.cam_unavailable else {}),
        }

    def prepare(self, filename: str, data: bytes, cam: bool) -> Photo:
        """Decode one upload (by content, not extension) into a model input or an error."""
        start = time.perf_counter()
        photo = Photo(filename, data)
        try:
            photo.x = self.transform(self._decode(data, filename, self.transform.decode_size))
            if cam and self.gradcam is not None:
                # decoded again, larger, for the overlay only: a JPEG decoded at another size
                # has other pixels, and the model input must stay the one predict and eval
                # make from this file (the probability moved by ~1 % with ?cam=1 otherwise)
                photo.shown = resize_short_side(self._decode(data, filename, CAM_SIDE), CAM_SIDE)
        except TooManyPixels as e:
            photo.error, photo.status = str(e), 413
        except ImageReadError as e:
            if data and header_size(data) is None:
                photo.error = (f"{filename}: not an image ({FORMATS} expected; the content is "
                               "checked, not the file name)")
                photo.status = 415
            else:
                photo.error, photo.status = str(e), 422
        except (cv2.error, ValueError) as e:  # odd geometry the transform cannot handle
            photo.error, photo.status = f"{filename}: {' '.join(str(e).split())}", 422
        photo.ms = (time.perf_counter() - start) * 1000
        return photo

    def _decode(self, data: bytes, filename: str, target_size: int) -> np.ndarray:
        rgb = decode_image(data, filename, target_size=target_size, max_pixels=self.max_pixels)
        return crop_fundus(rgb) if self.meta.get("fundus_crop") else rgb

    def run_batch(self, x: np.ndarray, cam: Sequence[bool]) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(probabilities, heatmap or None) per image of the batch `x` [N, 3, S, S]."""
        logits = self.predictor.predict(x)
        probs = finite_probabilities(logits, self.temperature)
        maps: list[np.ndarray | None] = [None] * len(x)
        wanted = [i for i, c in enumerate(cam) if c]
        if wanted and self.gradcam is not None:
            for i, heat in zip(wanted, self.gradcam.cam(x[wanted])):
                maps[i] = heat
        return list(zip(probs, maps))

    def result(self, y_prob: np.ndarray) -> dict[str, Any]:
        """Probability, prediction at the checkpoint's threshold and class name of one photo,
        named as in a predictions CSV (palm.predictions)."""
        if np.ndim(y_prob) == 0:
            probability = float(y_prob)
            prediction = int(probability >= self.threshold)
            extra: dict[str, Any] = {}
        else:
            prediction = int(np.argmax(y_prob))
            probability = float(y_prob[prediction])
            extra = {"probabilities": {name: float(p) for name, p in zip(self.class_names, y_prob)}}
        name = (self.class_names[prediction] if prediction < len(self.class_names)
                else str(prediction))
        # `decision`: the key's name before it became `prediction`; sent for one more release
        # so that clients reading it keep working (README, service)
        return {P.PROBABILITY: round(probability, 6), P.PREDICTION: prediction,
                "decision": prediction, P.CLASS_NAME: name, "threshold": self.threshold, **extra}


def overlay_png_base64(photo: np.ndarray, heatmap: np.ndarray) -> str:
    """The Grad-CAM overlay on `photo` as base64 PNG."""
    rgb = overlay_heatmap(photo, heatmap)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding of the Grad-CAM overlay failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


# ---------------------------------------------------------------- micro-batching

class QueueFull(Exception):
    """More photos would wait for the model than the queue holds."""


@dataclass
class _Job:
    x: np.ndarray
    cam: bool
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Runs queued images through `run_batch` in one thread, several at a time.

    A batch starts when `max_batch` images wait or `max_wait_s` after its first image
    arrived, whichever comes first. The queue holds at most `max_queue` images; `submit`
    raises QueueFull beyond that rather than letting latency grow without bound.

    Attributes:
        batch_sizes: how many batches of each size ran.
        cancelled: how many queued images were dropped by `cancel` before they ran.
    """

    def __init__(self, run_batch: Callable[[np.ndarray, list[bool]], list[Any]], *,
                 max_batch: int, max_wait_s: float, max_queue: int):
        self.run_batch = run_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.batch_sizes: Counter[int] = Counter()
        self.cancelled = 0
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="palm-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def submit(self, items: Sequence[tuple[np.ndarray, bool]]) -> list[Future]:
        """Queue (model input, wants Grad-CAM) pairs, all or none; a Future per item."""
        jobs = [_Job(x, cam) for x, cam in items]
        with self._cond:
            if self._stopping:
                raise QueueFull("the service is shutting down")
            if len(self._jobs) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._jobs)} photos are waiting for the model (the queue "
                                f"holds {self.max_queue}); try again shortly")
            self._jobs.extend(jobs)
            self._cond.notify_all()
        return [job.future for job in jobs]

    def cancel(self, futures: Sequence[Future]) -> None:
        """Drop the jobs of `futures` that have not run yet (their request is over): they
        leave the queue now, so they neither run nor count against `max_queue`."""
        dropped = {id(f) for f in futures if f.cancel()}
        with self._cond:
            kept = [job for job in self._jobs if id(job.future) not in dropped]
            self.cancelled += len(self._jobs) - len(kept)
            self._jobs = deque(kept)

    def _next_batch(self) -> list[_Job]:
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while len(self._jobs) < self.max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopping:
                return []
            taken = [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]
        # a job whose request timed out was cancelled: skip it
        return [job for job in taken if job.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while not self._stopping:
            batch = self._next_batch()
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            try:
                outputs = self.run_batch(np.stack([job.x for job in batch]),
                                         [job.cam for job in batch])
            except Exception as e:  # noqa: BLE001 - the requests get a 500, the thread lives on
                log_event("batch_failed", logging.ERROR, size=len(batch),
                          error=traceback.format_exc())
                for job in batch:
                    job.future.set_exception(e)
                continue
            for job, out in zip(batch, outputs):
                job.future.set_result(out)
        with self._cond:
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()


# ---------------------------------------------------------------- HTTP

T = TypeVar("T")


class Abandoned(Exception):
    """A request's work stopped before its answer: its time is up or its client left."""

    def __init__(self, reason: str, stage: str = ""):
        super().__init__(reason)
        self.reason, self.stage = reason, stage  # reason: "timeout" or "disconnected"


class RequestWatch:
    """Ends a request's waits at its deadline or as soon as its client disconnects.

    The work awaited goes on in the background when a wait ends (a decoding thread cannot be
    interrupted inside OpenCV), so `stop` is set for it to check between steps.
    """

    def __init__(self, request: Request, deadline: float):
        self.deadline = deadline  # a time.perf_counter time
        self.stop = threading.Event()
        self._gone = asyncio.ensure_future(_disconnected(request))

    async def wait(self, work: Awaitable[T]) -> T:
        """The result of `work`; Abandoned when the deadline or the client's disconnect
        comes first."""
        task = asyncio.ensure_future(work)
        left = max(self.deadline - time.perf_counter(), 0)
        done, _ = await asyncio.wait({task, self._gone}, timeout=left,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        self.stop.set()
        task.add_done_callback(_log_failure)  # nobody awaits it any more
        raise Abandoned("disconnected" if self._gone in done else "timeout")

    def close(self) -> None:
        self._gone.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (called once the body has been read, so every
    later message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log_event("abandoned_work_failed", logging.ERROR, error=repr(task.exception()))


class UploadTooLarge(Exception):
    pass


class UploadTooSlow(Exception):
    pass


def _error(status: int, message: str, request_id: str | None, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else {}
    if status in (408, 413):  # the body was not read to its end: the connection cannot be reused
        headers["Connection"] = "close"
    return JSONResponse({"error": message, "status": status, "request_id": request_id, **extra},
                        status_code=status, headers=headers)


class RequestGuard:
    """ASGI middleware: request id, security headers, upload size limit, one JSON log line
    per request.

    A body over the limit is refused from its Content-Length before it is read; one sent
    without a length is cut off when it passes the limit (the endpoint turns UploadTooLarge
    into 413). A body still arriving `upload_timeout` seconds after the request started is
    cut off too (UploadTooSlow, 408): a client trickling bytes would otherwise hold its
    connection, and what it sent so far, for ever.

    Web pages of other sites are refused (403): a POST with an Origin other than the service's
    own (a page making the browser post to it), and, when the service listens on loopback
    only, a Host header naming another machine (a page of a name its site made resolve to
    127.0.0.1 could otherwise read the answers). Scripts and curl send no Origin.
    """

    def __init__(self, app: Any, max_bytes: int, upload_timeout: float, loopback: bool):
        self.app = app
        self.max_bytes = max_bytes
        self.upload_timeout = upload_timeout
        self.loopback = loopback

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = [500]

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = MutableHeaders(scope=message)
                headers.append("X-Request-ID", request_id)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        received = 0
        body_done = False

        async def limited_receive() -> dict:
            nonlocal received, body_done
            if body_done:  # later reads only wait for the client to disconnect
                return await receive()
            left = start + self.upload_timeout - time.perf_counter()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0))
            except asyncio.TimeoutError:
                raise UploadTooSlow(
                    f"upload of {received / 1e6:.1f} MB so far not finished within "
                    f"{self.upload_timeout:g} s; send it again on a faster connection") from None
            body_done = not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise UploadTooLarge(self._too_large(received, "at least "))
            return message

        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        foreign = self._foreign_site(scope["method"], headers)
        try:
            if foreign:
                await _error(403, foreign, request_id)(scope, receive, send_with_id)
            elif length.isdigit() and int(length) > self.max_bytes:
                await _error(413, self._too_large(int(length)), request_id)(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            log_event("request", request_id=request_id, method=scope["method"],
                      path=scope["path"], status=status[0], bytes=max(received, int(length or 0)),
                      ms=round((time.perf_counter() - start) * 1000, 1))

    def _foreign_site(self, method: str, headers: Headers) -> str:
        """Why a request comes from another web site's page, or "" if it does not."""
        host = headers.get("host", "")
        hostname = urllib.parse.urlsplit("//" + host).hostname or ""
        if self.loopback and host and not is_loopback(hostname):
            return (f"Host {host!r} refused: this service listens on this machine only; "
                    "open it as http://127.0.0.1:PORT/")
        origin = headers.get("origin")
        if method not in ("GET", "HEAD") and origin is not None and \
                urllib.parse.urlsplit(origin).netloc != host:
            return f"request from the web page of {origin!r} refused: another site's page"
        return ""

    def _too_large(self, size: int, qualifier: str = "") -> str:
        return (f"upload of {qualifier}{size / 1e6:.1f} MB is over the limit of "
                f"{self.max_bytes / 1e6:g} MB per request; send fewer or smaller photos")


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request's line and headers.

    uvicorn bounds the idle time between requests (`timeout_keep_alive`) but neither a new
    connection's wait for its first request nor the time a request's head takes once its
    first byte came: clients sending a few bytes of headers now and then (slowloris) hold
    their connections for ever. Here a connection whose next request head is not complete
    `header_timeout` seconds after it opened, or after its previous response, is closed:
    with 408 if part of the head came, silently if nothing did (an idle connection, as
    uvicorn closes them). The body has its own limit (RequestGuard).
    """

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._time_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._time_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _time_head(self) -> None:
        """Start the deadline when the connection begins waiting for a request head (h11's
        IDLE: their_state leaves it once a whole head is parsed), stop it when one came."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)
        elif not waiting and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a head, unparsed
            self.transport.write(_raw_response(408, f"request line and headers not received "
                                                    f"within {self.header_timeout:g} s"))
        self.transport.close()


def _raw_response(status: int, message: str) -> bytes:
    """A complete JSON error response, written outside any request (no request id)."""
    body = json.dumps({"error": message, "status": status, "request_id": None}).encode()
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
            "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{k}: {v}" for k, v in SECURITY_HEADERS.items())]
    return "\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body


def server_config(app: FastAPI, config: ServiceConfig, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for serving `app` on `config.host`:`port`, with the head timeout of
    HeaderTimeoutProtocol; `options` are more uvicorn.Config arguments."""
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                    {"header_timeout": config.header_timeout})
    settings = {"log_config": None, "access_log": False, "timeout_graceful_shutdown": 5, **options}
    return uvicorn.Config(app, host=config.host, port=port, http=protocol, **settings)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def create_app(config: ServiceConfig, runner: ModelRunner | None = None) -> FastAPI:
    """The service's ASGI app; the model is loaded now, the batcher runs while the app does.

    Args:
        runner: a loaded model (default: load `config.checkpoint`).

    Raises:
        BadConfig: a bad limit, or a non-loopback host without a token.
    """
    config.check()
    return_large_blocks_to_the_system()
    runner = runner or ModelRunner(config.checkpoint, config.engine, config.max_pixels)
    batcher = MicroBatcher(runner.run_batch, max_batch=config.max_batch,
                           max_wait_s=config.max_wait_ms / 1000, max_queue=config.max_queue)
    decoding = asyncio.Semaphore(config.max_decoding)
    page = resources.files("palm.engine").joinpath("static", "index.html").read_text("utf-8")
    model_info = runner.describe()

    async def lifespan(app: FastAPI):
        batcher.start()
        await run_in_threadpool(runner.warm_up, batcher)
        settings = {k: v for k, v in asdict(config).items() if k not in ("token", "engine")}
        log_event("started", model=model_info["name"], sha256=runner.sha256,
                  engine=model_info["engine"], token=bool(config.token), **settings)
        yield
        batcher.stop()
        log_event("stopped")

    app = FastAPI(title="palm screening service", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.runner, app.state.batcher = runner, batcher
    app.add_middleware(RequestGuard, max_bytes=int(config.max_upload_mb * 1e6),
                       upload_timeout=config.upload_timeout, loopback=is_loopback(config.host))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), _request_id(request))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(422, f"invalid request: {problems}", _request_id(request))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log_event("internal_error", logging.ERROR, request_id=_request_id(request),
                  error=traceback.format_exc())
        return _error(500, "internal error; the service log has the details under this "
                      "request id", _request_id(request))

    def has_token(request: Request) -> bool:
        """True if the request may use the service: no token is set, or it sends it."""
        if not config.token:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and secrets.compare_digest(given.encode(),
                                                                     config.token.encode())

    def check_token(request: Request) -> None:
        if not has_token(request):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        alive = batcher.alive
        health: dict[str, Any] = {"status": "ok" if alive else "down"}
        # the load and the traffic are the operator's business: anyone who can reach an
        # exposed service (which has a token, see ServiceConfig.check) learns only whether
        # it is up, unless they send the token
        if is_loopback(config.host) or has_token(request):
            health.update(
                queue=batcher.pending, max_queue=config.max_queue,
                batches=sum(batcher.batch_sizes.values()),
                images=sum(k * v for k, v in batcher.batch_sizes.items()),
                batch_sizes={str(k): v for k, v in sorted(batcher.batch_sizes.items())})
        return JSONResponse(health, status_code=200 if alive else 503)

    @app.get("/v1/model")
    async def model(request: Request) -> dict[str, Any]:
        check_token(request)
        limits = {k: getattr(config, k) for k in ("max_upload_mb", "max_files", "max_queue",
                                                   "timeout", "upload_timeout", "header_timeout",
                                                   "max_batch", "max_wait_ms", "max_decoding")}
        return {**model_info, "limits": {**limits,
                                         "max_pixels": max_pixels_setting(config.max_pixels)}}

    @app.post("/v1/predict")
    async def predict(request: Request, cam: bool = False) -> JSONResponse:
        check_token(request)
        start = time.perf_counter()
        request_id = _request_id(request)
        uploads = await _read_uploads(request, config.max_files)
        watch = RequestWatch(request, start + config.timeout)
        try:
            photos = await _decode(runner, uploads, cam, decoding, watch, request_id)
            good = [p for p in photos if p.x is not None]
            outputs: list[tuple[np.ndarray, np.ndarray | None]] = []
            if len(good) > config.max_queue:
                return _error(413, f"{len(good)} photos in one request, but the queue holds "
                                   f"{config.max_queue}; send at most {config.max_queue} per "
                                   "request", request_id)
            if good:
                outputs = await _predict_queued(batcher, good, cam and runner.gradcam is not None,
                                                watch)
        except QueueFull as e:
            return _error(503, f"busy: {e}", request_id)
        except Abandoned as e:
            log_event("cancelled", request_id=request_id, reason=e.reason, stage=e.stage,
                      photos=len(uploads))
            return _abandoned_error(e, config, request_id)
        finally:
            watch.close()
        for photo, (probs, _) in zip(good, outputs):
            if not finite_rows(probs[None])[0]:  # a faulty model: a JSON error, never NaN in JSON
                photo.error, photo.status = f"{photo.filename}: {NON_FINITE_OUTPUT}", 422
                log_event("non_finite_output", logging.ERROR, request_id=request_id)
        model_ms = (time.perf_counter() - start) * 1000 - sum(p.ms for p in photos)
        results = await run_in_threadpool(
            _results, runner, photos, dict(zip(map(id, good), outputs)), cam, model_ms)
        if config.save_dir:
            try:
                await run_in_threadpool(_save_photos, Path(config.save_dir), request_id, photos)
            except OSError as e:  # the folder was removed, replaced by a file, made read-only
                # the operator asked for every photo to be kept: no result goes out unsaved,
                # and the folder's path stays in the log, not in the answer
                log_event("save_failed", logging.ERROR, request_id=request_id,
                          error=describe_os_error(e) or repr(e))
                return _error(500, "the service could not keep the photos as it is set to "
                                   "(save_dir); its operator must fix the folder, the log has "
                                   "the details under this request id", request_id)
        # counts only: file names may identify patients
        log_event("predicted", request_id=request_id, photos=len(photos),
                  errors=sum(p.error is not None for p in photos), cam=cam,
                  classes=dict(Counter(r["class_name"] for r in results if r.get("error") is None)))
        body = {"request_id": request_id,
                "model": {"name": model_info["name"], "sha256": runner.sha256},
                "results": results, "ms": round((time.perf_counter() - start) * 1000, 1)}
        if any(p.error is None for p in photos):
            return JSONResponse(body)
        return _error(photos[0].status, photos[0].error or "no usable photo", request_id,
                      **{k: v for k, v in body.items() if k != "request_id"})

    return app


async def _read_uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """(file name, content) of every file in a multipart upload; HTTP errors for bad ones."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except UploadTooLarge as e:
        raise HTTPException(413, str(e)) from None
    except UploadTooSlow as e:
        raise HTTPException(408, str(e)) from None
    except ClientDisconnect:  # the client left mid-upload: an abandoned request, not a bug
        raise HTTPException(499, "the client closed the request during its upload") from None
    except HTTPException as e:  # starlette's 400 for any MultiPartException, its message as detail
        if str(e.detail).startswith("Too many"):  # files or fields: over max_files
            raise HTTPException(413, f"more than {max_files} photos in one request; send at "
                                     f"most {max_files} per request") from None
        raise HTTPException(400, f"malformed upload: {e.detail}") from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(422, "no photo in the upload; send one or more files as "
                                     "multipart/form-data fields named 'files'")
        return [(f.filename or f"photo{i + 1}", await f.read()) for i, f in enumerate(files)]
    finally:
        await form.close()  # the temporary files of large parts go now


def _abandoned_error(e: Abandoned, config: ServiceConfig, request_id: str | None) -> JSONResponse:
    if e.reason == "disconnected":  # nobody reads it; the log line shows 499 (nginx's code)
        return _error(499, "the client closed the request", request_id)
    if e.stage == "waiting for a decoding slot":
        return _error(503, f"busy: waited {config.timeout:g} s for one of the "
                           f"{config.max_decoding} decoding slots; try again shortly", request_id)
    if e.stage == "decoding":
        return _error(504, f"photos not decoded within {config.timeout:g} s; send fewer or "
                           "smaller photos", request_id)
    return _error(504, f"no result within {config.timeout:g} s (the service is overloaded); "
                       "try again later", request_id)


async def _decode(runner: ModelRunner, uploads: Sequence[tuple[str, bytes]], cam: bool,
                  slots: asyncio.Semaphore, watch: RequestWatch,
                  request_id: str | None) -> list[Photo]:
    """Decode the uploads one after the other in one of the `slots`.

    A request keeps its slot for all its photos, so under overload the requests that started
    finish instead of all sharing the slots and all running out of time. When the request is
    abandoned (Abandoned, its `stage` set), its thread stops before the next photo and only
    then gives the slot back: the slots bound the photos being decoded, answered or not.
    """
    stage = "waiting for a decoding slot"

    async def decode_in_slot() -> list[Photo]:
        nonlocal stage
        async with slots:
            if watch.stop.is_set():  # abandoned while it waited
                return []
            stage = "decoding"
            return await run_in_threadpool(_prepare_all, runner, uploads, cam, watch.stop,
                                           request_id)

    try:
        return await watch.wait(decode_in_slot())
    except Abandoned as e:
        e.stage = stage
        raise


def _prepare_all(runner: ModelRunner, uploads: Sequence[tuple[str, bytes]], cam: bool,
                 stop: threading.Event, request_id: str | None) -> list[Photo]:
    """`runner.prepare` every upload, until `stop` is set (the request was abandoned)."""
    photos: list[Photo] = []
    for name, data in uploads:
        if stop.is_set():
            log_event("decoding_stopped", request_id=request_id, decoded=len(photos),
                      skipped=len(uploads) - len(photos))
            break
        photos.append(runner.prepare(name, data, cam))
    return photos


async def _predict_queued(batcher: MicroBatcher, photos: Sequence[Photo], cam: bool,
                          watch: RequestWatch) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The model's outputs for `photos` through the batcher's queue; when the request is
    abandoned (Abandoned), its photos still queued leave the queue."""
    futures = batcher.submit([(p.x, cam) for p in photos])
    try:
        return await watch.wait(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
    except Abandoned as e:
        batcher.cancel(futures)
        e.stage = "waiting for the model"
        raise


def _results(runner: ModelRunner, photos: Sequence[Photo], outputs: dict[int, tuple],
             cam: bool, model_ms: float) -> list[dict[str, Any]]:
    results = []
    for photo in photos:
        item: dict[str, Any] = {"filename": photo.filename}
        if photo.error is not None:
            item.update(error=photo.error, status=photo.status)
        else:
            probs, heatmap = outputs[id(photo)]
            item.update(runner.result(probs), error=None)
            if cam and heatmap is not None:
                item["cam_png_base64"] = overlay_png_base64(photo.shown, heatmap)
                if note := attention_note(heatmap):  # the page shows it instead of a legend
                    item["cam_note"] = note
            elif cam:
                item["cam_error"] = runner.cam_unavailable
        item["ms"] = round(photo.ms + model_ms, 1)
        results.append(item)
    return results


# bytes of an upload's name kept in a saved photo's file name: with the request id, the
# number and the temporary suffix of atomic_path it stays under the 255 bytes file systems allow
SAVED_NAME_BYTES = 150


def saved_name(filename: str) -> str:
    """An upload's file name made safe to save: no folders, only letters, digits and '._-',
    and its last SAVED_NAME_BYTES bytes in UTF-8 (the extension is at the end)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(filename).name)
    tail = safe.encode("utf-8")[-SAVED_NAME_BYTES:].decode("utf-8", errors="ignore")
    return tail or "photo"


def _save_photos(folder: Path, request_id: str | None, photos: Sequence[Photo]) -> None:
    """Keep the uploads as `<request id>-<n>-<file name>` (the log line names the request)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, photo in enumerate(photos, 1):
        with atomic_path(folder / f"{request_id}-{n}-{saved_name(photo.filename)}") as tmp:
            Path(tmp).write_bytes(photo.data)
