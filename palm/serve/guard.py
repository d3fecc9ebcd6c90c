"""HTTP guards of the screening service: upload limits, the token, origin and host checks,
the request-head timeout, security headers, JSON errors."""
from __future__ import annotations

import asyncio
import http
import json
import secrets
import time
import urllib.parse
import uuid
from typing import Any, Callable

import h11
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from palm.serve.config import ServiceConfig, is_loopback
from palm.serve.logs import log_event


# on every response: no other site's page may show ours in a frame (clickjacking), and
# browsers take the Content-Type as given instead of guessing (an upload echoed as HTML)
SECURITY_HEADERS = {"X-Frame-Options": "DENY",
                    "Content-Security-Policy": "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff"}


class UploadTooLarge(Exception):
    pass


class UploadTooSlow(Exception):
    pass


class UploadsBusy(Exception):
    """The request's upload would push the bytes held by all requests over UploadBudget."""


class UploadBudget:
    """The upload bytes held in memory by all requests at once, and their limit.

    Every request keeps its upload in memory until it ends (waiting for a decoding slot
    included), so without a bound memory grows with the number of clients uploading. All
    requests run in the server's one event loop: no lock is needed.
    """

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.held = 0
        self.high_water = 0  # the most ever held at once (the tests check the bound)

    def take(self, n: int) -> bool:
        """Hold `n` more bytes if the total stays within the limit; False if it would not."""
        if self.held + n > self.limit:
            return False
        self.held += n
        self.high_water = max(self.high_water, self.held)
        return True

    def release(self, n: int) -> None:
        self.held -= n


def error_response(status: int, message: str, request_id: str | None,
                   **extra: Any) -> JSONResponse:
    """The service's JSON error: `{"error", "status", "request_id", **extra}`."""
    headers = {"Retry-After": "1"} if status == 503 else {}
    # A 413 or 503 answers before the body is read; uvicorn reads and drops the rest (within
    # HeaderTimeoutProtocol's deadline) so the client, still sending, gets the answer: closing
    # at once would reset the connection under it. A 408's client is too slow to wait for.
    if status == 408:
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

    The upload bytes of all requests together are bounded by `budget`: a request whose
    Content-Length would go over it is refused (503) before its body is read, one sent without
    a length is cut off when its next bytes would (UploadsBusy, 503); either holds its bytes
    until it ends, however it ends. Holding the declared length from the start means a
    request let in is never cut off halfway because others arrived.

    Web pages of other sites are refused (403): a POST with an Origin other than the service's
    own (a page making the browser post to it), and, when the service listens on loopback
    only, a Host header naming another machine (a page of a name its site made resolve to
    127.0.0.1 could otherwise read the answers). Scripts and curl send no Origin.
    """

    def __init__(self, app: Any, max_bytes: int, upload_timeout: float, loopback: bool,
                 budget: UploadBudget):
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget
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
        held = 0  # of `budget`, given back in the finally below
        body_done = False

        async def limited_receive() -> dict:
            nonlocal received, held, body_done
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
            if received > held:  # a body without Content-Length (or longer than it said)
                if not self.budget.take(received - held):
                    raise UploadsBusy(self._busy())
                held = received
            return message

        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        declared = int(length) if length.isdigit() else 0
        foreign = self._foreign_site(scope["method"], headers)
        # A client waiting for "100 Continue" has sent no byte of the body, so closing resets
        # nothing; kept open, the connection would read its next request as the refused body
        # (or make it send that body, which Expect exists to save)
        close = {"Connection": "close"} \
            if headers.get("expect", "").lower() == "100-continue" else {}
        try:
            if foreign:
                await error_response(403, foreign, request_id)(scope, receive, send_with_id)
            elif declared > self.max_bytes:
                refusal = error_response(413, self._too_large(declared), request_id)
                refusal.headers.update(close)
                await refusal(scope, receive, send_with_id)
            elif not self.budget.take(declared):  # refused before its body is read
                refusal = error_response(503, self._busy(), request_id)
                refusal.headers.update(close)
                await refusal(scope, receive, send_with_id)
            else:
                held = declared
                await self.app(scope, limited_receive, send_with_id)
        finally:
            self.budget.release(held)
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

    def _busy(self) -> str:
        return (f"busy receiving other uploads (at most {self.budget.limit / 1e6:g} MB held at "
                "once); try again shortly")

    def _too_large(self, size: int, qualifier: str = "") -> str:
        return (f"upload of {qualifier}{size / 1e6:.1f} MB is over the limit of "
                f"{self.max_bytes / 1e6:g} MB per request; send fewer or smaller photos")


# the most of refused bodies a connection is read for (the client gets its 413 or 503 as long
# as the rest of its body fits; a larger one is cut off, which it sees as a reset)
DROPPED_BODY_BYTES = 32 * 1024 * 1024


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11) with a deadline for each request's line and headers.

    uvicorn bounds the idle time between requests (`timeout_keep_alive`) but neither a new
    connection's wait for its first request nor the time a request's head takes once its
    first byte came: clients sending a few bytes of headers now and then (slowloris) hold
    their connections for ever. Here a connection whose next request head is not complete
    `header_timeout` seconds after it opened, or after its previous response, is closed:
    with 408 if part of the head came, silently if nothing did (an idle connection, as
    uvicorn closes them). The body of an accepted request has its own limit (RequestGuard);
    the rest of a body answered before it was read (413, 503), which uvicorn reads and drops
    so that the client gets the answer rather than a reset, must also end within
    `header_timeout` of the answer and DROPPED_BODY_BYTES, or the connection is closed
    (reading a refused gigabyte would cost the service its bandwidth for nothing).
    """

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._timed: str | None = None  # what the timer waits for: "head" or "dropped body"
        self._dropped = 0  # bytes of refused bodies read on this connection
        self._time_head()

    def data_received(self, data: bytes) -> None:
        if self._timed == "dropped body":
            self._dropped += len(data)
            if self._dropped > DROPPED_BODY_BYTES:
                self.transport.close()
                return
        super().data_received(data)
        self._time_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _waiting_for(self) -> str | None:
        """"head" while waiting for a request head (h11's IDLE: their_state leaves it once a
        whole head is parsed), "dropped body" while the rest of an answered request's body
        comes in, else None."""
        if self.transport.is_closing():
            return None
        if self.conn.their_state is h11.IDLE:
            return "head"
        if self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.DONE:
            return "dropped body"
        return None

    def _time_head(self) -> None:
        """Start the deadline when the connection begins waiting for one of those, stop it
        when it came (or the wait changed)."""
        waiting = self._waiting_for()
        if waiting == self._timed:
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._timed = waiting
        self._head_timer = (self.loop.call_later(self.header_timeout, self._head_timed_out)
                            if waiting else None)

    def _head_timed_out(self) -> None:
        self._head_timer, timed, self._timed = None, self._timed, None
        if timed is None or self._waiting_for() != timed:
            return
        if timed == "head" and self.conn.trailing_data[0]:  # part of a head, unparsed
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


def has_token(request: Request, token: str | None) -> bool:
    """True if the request may use the service: no token is set, or it sends it."""
    if not token:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.encode(), token.encode())


def check_token(request: Request, token: str | None) -> None:
    """401 unless the request may use the service (has_token)."""
    if not has_token(request, token):
        raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": "Bearer"})
