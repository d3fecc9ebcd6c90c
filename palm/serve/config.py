"""The screening service's settings (ServiceConfig) and their checks."""
from __future__ import annotations

import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from palm.data.image_io import max_pixels_setting
from palm.errors import BadConfig, describe_os_error
from palm.runtime import usable_cores


TOKEN_ENV = "PALM_SERVE_TOKEN"


# a token guessable in a few tries protects nothing; whitespace cannot survive an HTTP header
MIN_TOKEN_CHARS = 16


@dataclass
class ServiceConfig:
    """What `create_app` serves and its limits (tools/serve.py's options)."""

    checkpoint: str
    engine: str = "auto"  # see palm.engine.inference.load_predictor
    host: str = "127.0.0.1"
    token: str | None = None
    save_dir: str | None = None
    max_upload_mb: float = 20.0  # per request
    # upload bytes held in memory by all requests at once (each keeps its upload until it
    # ends, waiting for a decoding slot included): the max_decoding requests decoding (2 on
    # a 2-core machine) and as many more received, ready for the next slots, at max_upload_mb each
    max_inflight_mb: float = 80.0
    max_pixels: int | None = None  # per photo; None: palm.data's default ($PALM_MAX_PIXELS)
    max_files: int = 64  # photos per request
    max_queue: int = 64  # photos waiting for the model
    timeout: float = 30.0  # seconds a request may take, decoding and model
    upload_timeout: float = 60.0  # seconds the whole upload may take to arrive
    header_timeout: float = 10.0  # seconds a request's line and headers may take to arrive
    max_batch: int = 8
    max_wait_ms: float = 10.0
    # requests decoding photos at once, the threads of the decoding pool (None: the usable
    # cores, which decoding shares with the model): a photo of max_pixels takes 3 bytes a
    # pixel, and OpenCV holds about 6 while decoding, however small its file (a PNG of one
    # colour); this bounds the memory
    max_decoding: int | None = None

    def __post_init__(self) -> None:
        if self.max_decoding is None:
            self.max_decoding = usable_cores()

    def check(self) -> None:
        """Refuse options that make no sense, an exposed service without a token, a short
        token and a save_dir that cannot be written (creating it)."""
        for name in ("max_upload_mb", "max_files", "max_queue", "timeout", "upload_timeout",
                     "header_timeout", "max_batch", "max_decoding"):
            if not getattr(self, name) > 0:
                raise BadConfig(f"{name} must be positive, got {getattr(self, name)}",
                                param=name)
        if self.max_inflight_mb < self.max_upload_mb:
            raise BadConfig(f"max_inflight_mb must be >= max_upload_mb ({self.max_upload_mb:g}), "
                            f"got {self.max_inflight_mb:g}: one upload of the largest size must "
                            "fit", param="max_inflight_mb")
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


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything
