"""Screening service: a JSON API and a web page over one model (FastAPI + uvicorn).

    app = create_app(ServiceConfig(checkpoint="runs/resnet50/best.pdparams"))

Endpoints:
    GET  /             the web page (palm/serve/static/index.html)
    GET  /healthz      liveness, queue length, batch sizes run so far
    GET  /v1/model     name, SHA-256, classes, threshold (operating point), calibration, limits
    POST /v1/predict   multipart upload of one or more photos -> one JSON result per photo;
                       `?cam=1` adds a Grad-CAM overlay (PNG, base64) and `cam_target`,
                       the class it explains (a multi-label model's top label)

Uploads are decoded off the event loop in a pool of `max_decoding` threads (the usable cores
by default), one request's photos at a time in each. Concurrent requests are micro-batched:
decoded photos wait in a bounded queue, and one worker thread runs up to `max_batch` of them
together; the photos that arrived while the model ran start the next batch as soon as it is
free, and only an idle model waits at most `max_wait_ms` for a batch to fill, so many clients
share the batch throughput of the predictor instead of each running a batch of one. The model
only ever runs in that thread. A full queue answers 503 at once, a
request not answered within `timeout` of its upload's end (decoding included) answers 504. A request whose
client disconnects, or whose time is up, stops: its photos not yet decoded are skipped and
its photos still queued leave the queue (logged as `cancelled`, status 499 for a client that
left).

Every error is JSON `{"error": message, "request_id": ...}` with a status saying what went
wrong: 401 no or wrong token, 403 another web site's page, 408 request head or upload too
slow, 413 upload, image or photo count too large, 415 not an image (the content is decoded,
the extension is ignored), 422 empty or damaged image, no photo, or a photo for which the
model's output is not finite (NaN or inf), 503 busy (queue full, no decoding slot, or
too many upload bytes held at once), 504 timeout, 500 a bug (its traceback
goes to the log, never to the client). Every request
is logged as one JSON line with its id, which the response repeats in `X-Request-ID`.
Every response forbids framing by other pages and MIME sniffing (SECURITY_HEADERS).

Uploaded photos live in memory (parts over 1 MB in a temporary file deleted with the
request) and are kept only when `save_dir` is set.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from palm.data.image_io import max_pixels_setting
from palm.engine.evaluate import NON_FINITE_OUTPUT, finite_rows
from palm.errors import describe_os_error
from palm.io_utils import atomic_path
from palm.serve.batcher import Abandoned, MicroBatcher, QueueFull, RequestWatch
from palm.serve.config import ServiceConfig, is_loopback
from palm.serve.guard import (RequestGuard, UploadBudget, UploadsBusy, UploadTooLarge,
                              UploadTooSlow, check_token, error_response, has_token)
from palm.serve.logs import log_event
from palm.serve.model_runner import (ModelRunner, Photo, overlay_png_base64,
                                     return_large_blocks_to_the_system)
from palm.viz.cam import attention_note


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


@dataclass
class Service:
    """What the routes of one app share: its settings, model, batcher, decoding slots and
    the decoding pool (as many threads as slots; ?cam=1 overlays are drawn there too)."""

    config: ServiceConfig
    runner: ModelRunner
    batcher: MicroBatcher
    decoding: asyncio.Semaphore
    decode_pool: ThreadPoolExecutor
    model_info: dict[str, Any]

    def has_token(self, request: Request) -> bool:
        return has_token(request, self.config.token)

    def check_token(self, request: Request) -> None:
        check_token(request, self.config.token)


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
    # a pool of its own rather than the event loop's shared one (40 threads): every photo is
    # decoded by the same few threads, as many as the decoding slots
    decode_pool = ThreadPoolExecutor(config.max_decoding, thread_name_prefix="palm-decode")
    service = Service(config, runner, batcher, asyncio.Semaphore(config.max_decoding),
                      decode_pool, runner.describe())
    app = FastAPI(title="palm screening service", lifespan=_lifespan(service), docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.runner, app.state.batcher = runner, batcher
    app.state.upload_budget = UploadBudget(int(config.max_inflight_mb * 1e6))
    app.add_middleware(RequestGuard, max_bytes=int(config.max_upload_mb * 1e6),
                       upload_timeout=config.upload_timeout, loopback=is_loopback(config.host),
                       budget=app.state.upload_budget)
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _lifespan(service: Service) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the batcher and warm the model up before the first request; stop it after."""
    config, runner, batcher = service.config, service.runner, service.batcher

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        await run_in_threadpool(runner.warm_up, batcher)
        settings = {k: v for k, v in asdict(config).items() if k not in ("token", "engine")}
        log_event("started", model=service.model_info["name"], sha256=runner.sha256,
                  engine=service.model_info["engine"], token=bool(config.token), **settings)
        yield
        batcher.stop()
        service.decode_pool.shutdown(wait=False, cancel_futures=True)
        log_event("stopped")

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers JSON with the request id; a bug's traceback goes to the log only."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail), _request_id(request))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(422, f"invalid request: {problems}", _request_id(request))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log_event("internal_error", logging.ERROR, request_id=_request_id(request),
                  error=traceback.format_exc())
        return error_response(500, "internal error; the service log has the details under "
                              "this request id", _request_id(request))


def _add_routes(app: FastAPI, service: Service) -> None:
    page = resources.files("palm.serve").joinpath("static", "index.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        return _health(service, request)

    @app.get("/v1/model")
    async def model(request: Request) -> dict[str, Any]:
        service.check_token(request)
        return _model_info(service)

    @app.post("/v1/predict")
    async def predict(request: Request, cam: bool = False) -> JSONResponse:
        service.check_token(request)
        return await _predict(service, request, cam)


def _health(service: Service, request: Request) -> JSONResponse:
    config, batcher = service.config, service.batcher
    alive = batcher.alive
    health: dict[str, Any] = {"status": "ok" if alive else "down"}
    # the load and the traffic are the operator's business: anyone who can reach an
    # exposed service (which has a token, see ServiceConfig.check) learns only whether
    # it is up, unless they send the token
    if is_loopback(config.host) or service.has_token(request):
        health.update(
            queue=batcher.pending, max_queue=config.max_queue,
            batches=sum(batcher.batch_sizes.values()),
            images=sum(k * v for k, v in batcher.batch_sizes.items()),
            batch_sizes={str(k): v for k, v in sorted(batcher.batch_sizes.items())})
    return JSONResponse(health, status_code=200 if alive else 503)


def _model_info(service: Service) -> dict[str, Any]:
    config = service.config
    limits = {k: getattr(config, k) for k in ("max_upload_mb", "max_inflight_mb", "max_files",
                                               "max_queue", "timeout", "upload_timeout", "header_timeout",
                                               "max_batch", "max_wait_ms", "max_decoding")}
    return {**service.model_info,
            "limits": {**limits, "max_pixels": max_pixels_setting(config.max_pixels)}}


async def _predict(service: Service, request: Request, cam: bool) -> JSONResponse:
    """Decode the uploads, run them through the batcher's queue, answer one result a photo."""
    config, runner = service.config, service.runner
    start = time.perf_counter()
    request_id = _request_id(request)
    uploads = await _read_uploads(request, config.max_files)
    if len(uploads) > config.max_queue:  # never queued whole: refused before taking a slot
        return error_response(413, f"{len(uploads)} photos in one request, but the queue "
                              f"holds {config.max_queue}; send at most {config.max_queue} "
                              "per request", request_id)
    uploaded = time.perf_counter()
    # from the upload's end: the upload has its own limit (upload_timeout), and a slow one
    # must not leave no time to decode on an idle service
    watch = RequestWatch(request, uploaded + config.timeout)
    try:
        photos = await _decode(service, uploads, cam, watch, request_id)
        decoded = modelled = time.perf_counter()
        good = [p for p in photos if p.x is not None]
        outputs: list[tuple[np.ndarray, np.ndarray | None]] = []
        if good:
            outputs = await _predict_queued(service.batcher, good,
                                            cam and runner.gradcam is not None, watch)
            modelled = time.perf_counter()
    except QueueFull as e:
        return error_response(503, f"busy: {e}", request_id)
    except Abandoned as e:
        log_event("cancelled", request_id=request_id, reason=e.reason, stage=e.stage,
                  photos=len(uploads))
        return _abandoned_error(e, config, request_id)
    finally:
        watch.close()
    _refuse_non_finite(good, outputs, request_id)
    model_ms = (time.perf_counter() - start) * 1000 - sum(p.ms for p in photos)
    answer = functools.partial(_results, runner, photos, dict(zip(map(id, good), outputs)), cam,
                               model_ms)
    # without overlays the answer is a few dicts: made here, it waits for no thread; the PNG
    # overlays are encoded in the decoding pool
    results = (await asyncio.get_running_loop().run_in_executor(service.decode_pool, answer)
               if cam else answer())
    if config.save_dir:
        try:
            await run_in_threadpool(_save_photos, Path(config.save_dir), request_id, photos)
        except OSError as e:  # the folder was removed, replaced by a file, made read-only
            # the operator asked for every photo to be kept: no result goes out unsaved,
            # and the folder's path stays in the log, not in the answer
            log_event("save_failed", logging.ERROR, request_id=request_id,
                      error=describe_os_error(e) or repr(e))
            return error_response(500, "the service could not keep the photos as it is set to "
                                       "(save_dir); its operator must fix the folder, the log "
                                       "has the details under this request id", request_id)
    # counts only: file names may identify patients
    log_event("predicted", request_id=request_id, photos=len(photos),
              errors=sum(p.error is not None for p in photos), cam=cam,
              classes=dict(Counter(r["class_name"] for r in results if r.get("error") is None)),
              # where the request's time went: receiving and parsing the upload, waiting for a
              # decoding slot and decoding, the queue and the model, the answer (and saving)
              stage_ms={"upload": _ms(uploaded - start), "decode": _ms(decoded - uploaded),
                        "queue_and_model": _ms(modelled - decoded),
                        "answer": _ms(time.perf_counter() - modelled)})
    body = {"request_id": request_id,
            "model": {"name": service.model_info["name"], "sha256": runner.sha256},
            "results": results, "ms": round((time.perf_counter() - start) * 1000, 1)}
    if any(p.error is None for p in photos):
        return JSONResponse(body)
    return error_response(photos[0].status, photos[0].error or "no usable photo", request_id,
                          **{k: v for k, v in body.items() if k != "request_id"})


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _refuse_non_finite(photos: Sequence[Photo], outputs: Sequence[tuple],
                       request_id: str | None) -> None:
    """Mark the photos whose output is not finite (a faulty model): a JSON error, never NaN
    in JSON."""
    for photo, (probs, _) in zip(photos, outputs):
        if not finite_rows(probs[None])[0]:
            photo.error, photo.status = f"{photo.filename}: {NON_FINITE_OUTPUT}", 422
            log_event("non_finite_output", logging.ERROR, request_id=request_id)


async def _read_uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """(file name, content) of every file in a multipart upload; HTTP errors for bad ones."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except UploadTooLarge as e:
        raise HTTPException(413, str(e)) from None
    except UploadTooSlow as e:
        raise HTTPException(408, str(e)) from None
    except UploadsBusy as e:  # uvicorn drops the rest of the body (guard.HeaderTimeoutProtocol)
        raise HTTPException(503, str(e)) from None
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
    """The answer to a request abandoned at `e.stage`: 499, 503 or 504."""
    if e.reason == "disconnected":  # nobody reads it; the log line shows 499 (nginx's code)
        return error_response(499, "the client closed the request", request_id)
    if e.stage == "waiting for a decoding slot":
        message = (f"busy: waited {config.timeout:g} s for one of the {config.max_decoding} "
                   "decoding slots; try again shortly")
        return error_response(503, message, request_id)
    if e.stage == "decoding":
        message = (f"photos not decoded within {config.timeout:g} s; send fewer or smaller "
                   "photos")
    else:
        message = (f"no result within {config.timeout:g} s (the service is overloaded); try "
                   "again later")
    return error_response(504, message, request_id)


async def _decode(service: Service, uploads: Sequence[tuple[str, bytes]], cam: bool,
                  watch: RequestWatch, request_id: str | None) -> list[Photo]:
    """Decode the uploads one after the other in one of the service's decoding slots, on a
    thread of its decoding pool.

    A request keeps its slot for all its photos, so under overload the requests that started
    finish instead of all sharing the slots and all running out of time. When the request is
    abandoned (Abandoned, its `stage` set), its thread stops before the next photo and only
    then gives the slot back: the slots bound the photos being decoded, answered or not. A
    request abandoned while it waited for a slot stops waiting.
    """
    stage = "waiting for a decoding slot"

    async def decode_in_slot() -> list[Photo]:
        nonlocal stage
        async with service.decoding:
            if watch.stop.is_set():  # abandoned while it waited
                return []
            stage = "decoding"
            return await asyncio.get_running_loop().run_in_executor(
                service.decode_pool, _prepare_all, service.runner, uploads, cam, watch.stop,
                request_id)

    task = asyncio.ensure_future(decode_in_slot())
    try:
        return await watch.wait(task)
    except Abandoned as e:
        e.stage = stage
        if stage == "waiting for a decoding slot":
            # it holds no slot and decodes nothing: cancelled, it lets go of its upload now,
            # which the upload budget stopped counting when the request ended
            task.cancel()
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
                item["cam_target"] = runner.cam_target(probs)  # which class it explains
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
