"""A local HTTP server standing in for a weights mirror (tests have no Internet).

Each path answers with bytes, with a stall (the head and a first chunk, then nothing until
the test ends), with a trickle (TRICKLE_CHUNK bytes every TRICKLE_PAUSE seconds), or cut
once (half its bytes, then the connection closed; the next requests get them all, paced at
PACED_CHUNK every PACED_PAUSE seconds). Requests are counted per path."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# a trickle that grows the download every 0.25 s (by Paddle's 8 KiB write buffer) yet brings
# 32 KiB a second, less than palm's 64 KiB per stall window of 1 s
TRICKLE_CHUNK, TRICKLE_PAUSE = 8 * 1024, 0.25
# 2 MB a second: a live download, far above that limit
PACED_CHUNK, PACED_PAUSE = 200_000, 0.1


@dataclass
class Mirror:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    stalled: set[str] = field(default_factory=set)
    trickled: set[str] = field(default_factory=set)
    cut_once: set[str] = field(default_factory=set)
    requests: Counter = field(default_factory=Counter)
    release: threading.Event = field(default_factory=threading.Event)


@contextmanager
def serving_mirror() -> Iterator[Mirror]:
    """A mirror on a free loopback port; fill `files` (URL path -> bytes) and `stalled`."""
    mirror = Mirror(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            mirror.requests[self.path] += 1
            if self.path in mirror.stalled:
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 20))
                self.end_headers()
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
                mirror.release.wait(60)
                return
            if self.path in mirror.trickled:
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 24))
                self.end_headers()
                while not mirror.release.wait(TRICKLE_PAUSE):
                    self.wfile.write(b"\0" * TRICKLE_CHUNK)
                    self.wfile.flush()
                return
            if self.path not in mirror.files:
                self.send_error(404)
                return
            body = mirror.files[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path not in mirror.cut_once:
                self.wfile.write(body)
            elif mirror.requests[self.path] == 1:
                self.wfile.write(body[:len(body) // 2])
                self.close_connection = True
            else:
                for start in range(0, len(body), PACED_CHUNK):
                    self.wfile.write(body[start:start + PACED_CHUNK])
                    self.wfile.flush()
                    time.sleep(PACED_PAUSE)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield mirror
    finally:
        mirror.release.set()
        server.shutdown()
        server.server_close()
