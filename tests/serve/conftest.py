"""Fixtures of the service tests: an untrained ResNet18 checkpoint, photos, log events."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import paddle
import pytest

from palm.engine.checkpoint import save_checkpoint
from palm.models import build_model
from palm.serve.logs import LOG

from tests.serve.helpers import META, Events


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained resnet18 at 64 px with a small head: probabilities differ between photos."""
    paddle.seed(0)
    model = build_model("resnet18", num_classes=1)
    rng = np.random.default_rng(0)
    model.fc.weight.set_value(rng.normal(0, 0.05, model.fc.weight.shape).astype("float32"))
    path = tmp_path_factory.mktemp("serve_ckpt") / "best.pdparams"
    save_checkpoint(path, model, META)
    return path


@pytest.fixture(scope="module")
def photos(palm_root: Path) -> list[Path]:
    return sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg"))[:6]


@pytest.fixture
def events():
    handler = Events()
    LOG.addHandler(handler)
    level = LOG.level
    LOG.setLevel(logging.INFO)
    yield handler
    LOG.removeHandler(handler)
    LOG.setLevel(level)
