"""Timing helpers shared by the benchmark sections and the load test, and running a section
function in a child process."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import paddle

import palm
from palm.data import PALM_CLASSES
from palm.engine.runner import build_network
from palm.errors import BadConfig

# The folder holding the palm package: child processes run from it, so they import this same
# palm (not another checkout or an installed copy).
PACKAGE_PARENT = Path(palm.__file__).resolve().parents[1]


def images_per_second(fn: Callable[[], Any], batch_size: int, iters: int, warmup: int = 2) -> float:
    """Throughput of `fn` (one batch per call) over `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return batch_size * iters / (time.perf_counter() - start)


def random_batch(batch_size: int, size: int) -> np.ndarray:
    """A fixed batch of `batch_size` random images, NCHW float32 in [-1, 1]."""
    return np.random.default_rng(0).uniform(-1, 1, (batch_size, 3, size, size)).astype("float32")


def timing_network(model_name: str, size: int) -> tuple[paddle.nn.Layer, dict[str, Any]]:
    """A one-logit network of `model_name` with random weights for `size`-px input, built as
    training builds it (lenet sizes its classifier from the input side), and the metadata
    of a checkpoint of it."""
    model, model_kwargs = build_network(model_name, 1, size, {})
    return model, {"model": model_name, "num_classes": 1, "class_names": list(PALM_CLASSES),
                   "image_size": size, "normalize": "minus_one_one", "fundus_crop": False,
                   "threshold": 0.5, "model_kwargs": model_kwargs}


def require_at_least(minimum: int, **values: int) -> None:
    """Refuse, before any work, a count below `minimum`, naming the parameter.

    Raises:
        BadConfig: e.g. "iters must be >= 1 (got 0)".
    """
    for name, value in values.items():
        if value < minimum:
            # param: `workers[1]` is an item of `workers`, which the command line names as a flag
            raise BadConfig(f"{name} must be >= {minimum} (got {value})",
                            param=name.split("[")[0])


def run_in_child(module: str, function: str, kwargs: Mapping[str, Any],
                 env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `module.function(**kwargs)` in a fresh Python; its JSON result is the last line of
    the returned stdout. A child isolates a crash (a oneDNN segfault costs one figure) and
    lets a figure be measured under other environment variables."""
    code = (f"import json, sys; from {module} import {function}; "
            f"print(json.dumps({function}(**json.loads(sys.argv[1]))))")
    return subprocess.run([sys.executable, "-c", code, json.dumps(dict(kwargs))],
                          env=dict(env) if env is not None else None, capture_output=True,
                          text=True, cwd=PACKAGE_PARENT)


def child_result(run: subprocess.CompletedProcess) -> Any:
    """The JSON result a run_in_child child printed last."""
    return json.loads(run.stdout.strip().splitlines()[-1])
