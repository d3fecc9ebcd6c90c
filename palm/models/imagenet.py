"""ImageNet weights Paddle publishes for palm's networks: which, from where, and a local copy
checked by its published MD5.

The URLs and MD5 sums are Paddle's own (`paddle.vision.models.<module>.model_urls`), read
from the installed Paddle; palm adds only which of its networks has the same architecture
and parameter names (tests/models/test_imagenet.py compares every one with paddle.vision's).
Files are fetched by Paddle's downloader into a private folder beside the cache and moved
in only once their MD5 matches, so the cache never holds a partial or wrong file.
"""
from __future__ import annotations

import collections
import hashlib
import importlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from paddle.utils.download import get_path_from_url

from palm.errors import BadConfig, DownloadFailed

MIRROR_ENV = "PALM_WEIGHTS_MIRROR"
WEIGHTS_DIR_ENV = "PALM_WEIGHTS_DIR"
STALL_ENV = "PALM_DOWNLOAD_STALL_SECONDS"
# Paddle's downloader waits forever on a server that stops sending; palm gives up when the
# download grew by less than MIN_PROGRESS_BYTES in the last stall window. A byte count, not
# "any byte": the file grows in Paddle's 8 KiB write buffer, and a server trickling a few
# bytes a second would otherwise never be given up on (137 B/s: 9 days for resnet50).
DEFAULT_STALL_SECONDS = 60.0
MIN_PROGRESS_BYTES = 64 * 1024
# a private download folder untouched this long is left from a killed run (a live download
# writes into it at least every few seconds) and is removed by the next download
STALE_DOWNLOAD_SECONDS = 24 * 3600

# palm model -> (module of paddle.vision.models, key of its model_urls)
IMAGENET_WEIGHTS: dict[str, tuple[str, str]] = {
    "alexnet": ("alexnet", "alexnet"),
    "vgg16": ("vgg", "vgg16"),
    "vgg19": ("vgg", "vgg19"),
    "googlenet": ("googlenet", "googlenet"),
    "inception_v3": ("inceptionv3", "inception_v3"),
    "resnet18": ("resnet", "resnet18"),
    "resnet34": ("resnet", "resnet34"),
    "resnet50": ("resnet", "resnet50"),
    "resnet101": ("resnet", "resnet101"),
    "resnet152": ("resnet", "resnet152"),
    "densenet121": ("densenet", "densenet121"),
    "densenet169": ("densenet", "densenet169"),
    "squeezenet1_1": ("squeezenet", "squeezenet1_1"),
    "shufflenet_v2_x1_0": ("shufflenetv2", "shufflenet_v2_x1_0"),
    "mobilenet_v1": ("mobilenetv1", "mobilenetv1_1.0"),
    "mobilenet_v2": ("mobilenetv2", "mobilenetv2_1.0"),
}


@dataclass(frozen=True)
class PublishedWeights:
    """One network's ImageNet weights as Paddle publishes them (`url` after the mirror)."""

    model: str
    url: str
    md5: str

    @property
    def file_name(self) -> str:
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    @property
    def shown_url(self) -> str:
        """`url` with the mirror's password, if any, masked: for messages and listings."""
        return _without_password(self.url)

    @property
    def path(self) -> Path:
        """Where the verified copy lives in the cache."""
        return weights_dir() / self.file_name


def weights_dir() -> Path:
    """$PALM_WEIGHTS_DIR, else $XDG_CACHE_HOME/palm/weights, else ~/.cache/palm/weights."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "palm" / "weights"


def mirrored(url: str, mirror: str | None = None) -> str:
    """`url` with its scheme and host replaced by the mirror's ($PALM_WEIGHTS_MIRROR when
    `mirror` is None); a path in the mirror is put in front of the URL's path.

    Example:
        mirrored("https://paddle-hapi.bj.bcebos.com/models/resnet18.pdparams",
                 "http://10.0.0.5:8080/paddle")
        # 'http://10.0.0.5:8080/paddle/models/resnet18.pdparams'
    """
    mirror = os.environ.get(MIRROR_ENV, "") if mirror is None else mirror
    if not mirror:
        return url
    try:
        parts = urlsplit(mirror)
        parts.port  # noqa: B018 - raises ValueError on a port that is not one
    except ValueError:
        parts = None
    # a query or fragment would be dropped from every URL: refused rather than ignored
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
            or parts.query or parts.fragment:
        raise BadConfig(f"{MIRROR_ENV} must be an http(s)://HOST[:PORT][/PATH] URL, "
                        f"got {_without_password(mirror)!r}", param="pretrained")
    original = urlsplit(url)
    path = parts.path.rstrip("/") + original.path
    return urlunsplit((parts.scheme, parts.netloc, path, original.query, ""))


def published_weights(model: str) -> PublishedWeights:
    """The URL (through the mirror) and MD5 Paddle publishes for `model`'s ImageNet weights.

    Raises:
        BadConfig: palm has no ImageNet weights for `model` (the message lists those it has).
    """
    if model not in IMAGENET_WEIGHTS:
        raise BadConfig(f"no ImageNet weights published for {model!r}; --pretrained imagenet "
                        f"works for {', '.join(IMAGENET_WEIGHTS)} (or give a .pdparams file)",
                        param="pretrained")
    module, key = IMAGENET_WEIGHTS[model]
    url, md5 = importlib.import_module(f"paddle.vision.models.{module}").model_urls[key]
    return PublishedWeights(model, mirrored(url), md5)


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_cached(weights: PublishedWeights) -> bool:
    """The cache holds `weights` with the published MD5."""
    return weights.path.is_file() and file_md5(weights.path) == weights.md5


def fetch_imagenet(model: str) -> Path:
    """The cached, MD5-verified ImageNet weights of `model`, downloaded when missing or wrong.

    Raises:
        BadConfig: no published weights for `model`, or a bad $PALM_WEIGHTS_MIRROR.
        DownloadFailed: the download failed, stalled or did not match the MD5; the message
            names the URL and where the file may be placed by hand. Nothing is left behind.
    """
    weights = published_weights(model)
    if is_cached(weights):
        return weights.path
    stall = stall_seconds()
    folder = weights.path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_downloads(folder)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    except OSError as e:
        raise DownloadFailed(f"{folder}: cannot write the weights cache ({e.strerror or e}); "
                             f"set {WEIGHTS_DIR_ENV} to a writable folder") from e
    try:
        downloaded = _download(weights, staging, stall)
        os.replace(downloaded, weights.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return weights.path


def stall_seconds() -> float:
    """$PALM_DOWNLOAD_STALL_SECONDS (default DEFAULT_STALL_SECONDS): a positive number."""
    value = os.environ.get(STALL_ENV) or str(DEFAULT_STALL_SECONDS)
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise BadConfig(f"{STALL_ENV} must be a positive number of seconds, got {value!r}",
                        param="pretrained")
    return seconds


def _remove_stale_downloads(folder: Path) -> None:
    """Remove the private download folders of killed runs (nothing in them changed for
    STALE_DOWNLOAD_SECONDS); other downloads' live folders are left alone."""
    now = time.time()
    for staging in folder.glob(".download-*"):
        try:
            changed = max([staging.stat().st_mtime]
                          + [entry.stat().st_mtime for entry in os.scandir(staging)])
        except OSError:  # removed by its own download meanwhile, or not a folder
            continue
        if now - changed > STALE_DOWNLOAD_SECONDS:
            shutil.rmtree(staging, ignore_errors=True)


def _without_password(url: str) -> str:
    # by pattern, not urlsplit: a URL it cannot parse is shown in an error too
    return re.sub(r"^([^:/?#]+://[^/?#@:]*):[^/?#]*@", r"\1:***@", url)


class _Stalled(DownloadFailed):
    """The server stopped sending; the download thread is left behind (it cannot be stopped)."""


class _LastFailure(logging.Handler):
    """Keeps the reason Paddle's downloader logs for its last failed try (it returns none)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "failed with exception" in message:
            self.reason = message.rsplit("failed with exception", 1)[1].strip()


def _download(weights: PublishedWeights, staging: Path, stall: float) -> Path:
    """Paddle's downloader into `staging`, watched for stalls; returns the verified file."""
    # Paddle (and httpx under it) log every try at INFO; palm says what happened in one line
    paddle_log, httpx_log = logging.getLogger(get_path_from_url.__module__), logging.getLogger("httpx")
    saved = (paddle_log.propagate, paddle_log.level, httpx_log.level)
    failure = _LastFailure()
    paddle_log.addHandler(failure)
    paddle_log.propagate = False
    paddle_log.setLevel(logging.INFO)
    httpx_log.setLevel(logging.WARNING)
    stalled = False
    try:
        return _download_watched(weights, staging, failure, stall)
    except _Stalled:
        # the abandoned download thread may still log its retries later: they stay with
        # `failure`, not on the user's terminal
        stalled = True
        raise
    finally:
        if not stalled:
            _restore(saved, failure)


def _restore(saved: tuple[bool, int, int], failure: logging.Handler) -> None:
    paddle_log, httpx_log = logging.getLogger(get_path_from_url.__module__), logging.getLogger("httpx")
    paddle_log.removeHandler(failure)
    paddle_log.propagate = saved[0]
    paddle_log.setLevel(saved[1])
    httpx_log.setLevel(saved[2])


def _download_watched(weights: PublishedWeights, staging: Path, failure: _LastFailure,
                      stall: float) -> Path:
    result: dict[str, object] = {}

    def run() -> None:
        try:
            # no MD5 here: Paddle would fetch a wrong file three times before giving up;
            # it is checked once below
            result["path"] = get_path_from_url(weights.url, str(staging), None,
                                               check_exist=False, decompress=False)
        except Exception as e:  # noqa: BLE001 - reported below with the URL
            result["error"] = e

    worker = threading.Thread(target=run, name=f"download-{weights.model}", daemon=True)
    worker.start()
    _wait_watching(worker, staging, weights, stall)
    if "path" not in result:
        raise DownloadFailed(_failure(weights, failure.reason or str(result["error"]).rstrip(".")))
    path = Path(str(result["path"]))
    md5 = file_md5(path)
    if md5 != weights.md5:
        raise DownloadFailed(_failure(weights, f"refused: its MD5 is {md5}, Paddle publishes "
                                               f"{weights.md5}"))
    return path


def _wait_watching(worker: threading.Thread, staging: Path, weights: PublishedWeights,
                   stall: float) -> None:
    """Wait for `worker`; raise _Stalled once less than MIN_PROGRESS_BYTES arrived over the
    last `stall` seconds (a sliding window of 0.2-s samples of the bytes received so far)."""
    samples = collections.deque([(time.monotonic(), 0)])
    size, received = 0, 0
    while worker.is_alive():
        worker.join(0.2)
        now, last_size, size = time.monotonic(), size, _bytes_in(staging)
        # Paddle retries a failed try from byte 0 into the same file: a shrunk file is a
        # new try whose bytes all arrived since, not a download gone backwards
        received += size - last_size if size >= last_size else size
        samples.append((now, received))
        while len(samples) > 1 and samples[1][0] <= now - stall:
            samples.popleft()  # samples[0] stays the newest one at least `stall` old
        since, received_then = samples[0]
        if now - since >= stall and received - received_then < MIN_PROGRESS_BYTES:
            raise _Stalled(_failure(weights, f"less than {MIN_PROGRESS_BYTES // 1024} KiB "
                                             f"received in {stall:g} s"))


def _bytes_in(folder: Path) -> int:
    total = 0
    for entry in os.scandir(folder):
        try:
            total += entry.stat().st_size
        except FileNotFoundError:  # Paddle renamed its `_tmp` file meanwhile
            pass
    return total


def _failure(weights: PublishedWeights, reason: str) -> str:
    # Paddle's reason repeats the URL: the mirror's password is masked there too
    reason = reason.replace(weights.url, weights.shown_url)
    return (f"{weights.shown_url}: ImageNet weights of {weights.model} not downloaded ({reason}); "
            f"offline, place the file at {weights.path} by hand (MD5 {weights.md5}), or set "
            f"{MIRROR_ENV}")
