"""What the service tests share: the checkpoint's metadata, a test client, a model held
on purpose, uploads and the service's log events."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from palm.serve.app import create_app
from palm.serve.config import ServiceConfig

SIZE = 64
META = {"model": "resnet18", "num_classes": 1, "class_names": ["non-PM", "PM"],
        "image_size": SIZE, "normalize": "minus_one_one", "fundus_crop": False,
        "threshold": 0.4, "epoch": 1, "metrics": {"auc": 0.9}, "model_kwargs": {}}


def make_client(checkpoint: Path, **options) -> TestClient:
    config = ServiceConfig(checkpoint=str(checkpoint), engine="dygraph", **options)
    return TestClient(create_app(config), base_url="http://127.0.0.1:8000",
                      raise_server_exceptions=False)


def upload(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "image/jpeg")) for name, data in files]


class BlockedModel:
    """Holds the batcher inside `run_batch` until released, to fill the queue on purpose."""

    def __init__(self, batcher):
        self.batcher, self.run = batcher, batcher.run_batch
        self.entered, self.release = threading.Event(), threading.Event()
        batcher.run_batch = self

    def __call__(self, x, cam):
        self.entered.set()
        self.release.wait(30)
        return self.run(x, cam)


def wait_until(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


class Events(logging.Handler):
    """The service's log events (name and fields), whatever handlers serve.py configured."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, dict]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((record.getMessage(), getattr(record, "fields", {})))

    def named(self, name: str) -> list[dict]:
        return [fields for event, fields in self.events if event == name]
