"""Training sections: bare training steps, palm's training loop fed by the data loader, both
against PyTorch eager's bare step on the same network, and eager against to_static-compiled
steps."""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from palm.bench.data import fill_folder, palm_sized_images
from palm.bench.settings import BenchSettings
from palm.bench.timing import images_per_second, random_batch, timing_network
from palm.bench.torch_twin import torch_training_step
from palm.data import PalmTrainSet, build_loader, build_transform
from palm.engine.losses import ClassificationLoss
from palm.engine.runner import compile_network
from palm.engine.train import train_one_epoch


NO_TORCH = "torch not installed or no PyTorch twin of this network"


def training_setup(model_name: str, batch_size: int, size: int, compiled: bool = False
                   ) -> tuple[paddle.nn.Layer, Any, ClassificationLoss, Callable[[], None]]:
    """(model, optimizer, loss, one-batch training step) as tools/train.py builds them."""
    paddle.seed(0)
    model, _ = timing_network(model_name, size)
    model.train()
    optimizer = paddle.optimizer.Momentum(1e-3, momentum=0.9, parameters=model.parameters(),
                                          weight_decay=1e-3)
    loss_fn = ClassificationLoss(num_outputs=1)
    net = compile_network(model) if compiled else model
    images = paddle.to_tensor(random_batch(batch_size, size))
    labels = paddle.to_tensor(np.arange(batch_size) % 2, dtype="int64")

    def step() -> None:
        loss = loss_fn(net(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)  # wait for the result, as the real loop does

    return model, optimizer, loss_fn, step


def bench_compiled_training(model_name: str, size: int, settings: BenchSettings) -> dict[str, Any]:
    """Bare steps of the eager and the to_static-compiled network (train.py --compile),
    alternating in chunks so machine drift affects both alike; plus compile seconds."""
    batch_size = settings.batch_size
    *_, eager = training_setup(model_name, batch_size, size)
    *_, compiled = training_setup(model_name, batch_size, size, compiled=True)
    start = time.perf_counter()
    compiled()  # the first call traces and compiles
    out: dict[str, Any] = {"compile_seconds": time.perf_counter() - start}
    chunk = max(1, settings.train_iters // 3)
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(3):
        rates["eager"].append(images_per_second(eager, batch_size, chunk, warmup=1))
        rates["compiled"].append(images_per_second(compiled, batch_size, chunk, warmup=1))
    out["train_step_eager"] = float(np.mean(rates["eager"]))
    out["train_step_compiled"] = float(np.mean(rates["compiled"]))
    out["compiled_vs_eager"] = out["train_step_compiled"] / out["train_step_eager"]
    return out


class BareSteps:
    """Chunks of bare training steps of palm's network and, when torch and a twin are there,
    of PyTorch eager's, one chunk of each per call so that a drift in the machine's speed
    affects both frameworks alike."""

    def __init__(self, step: Callable[[], None], torch_step: Callable[[], None] | None,
                 batch_size: int, chunk: int) -> None:
        self.steps = {"train_step": step}
        if torch_step is not None:
            self.steps["train_step_torch"] = torch_step
        self.batch_size, self.chunk = batch_size, chunk
        self.rates: dict[str, list[float]] = {name: [] for name in self.steps}

    def measure(self, warmup: int) -> None:
        for name, fn in self.steps.items():
            self.rates[name].append(images_per_second(fn, self.batch_size, self.chunk, warmup))

    def figures(self) -> dict[str, Any]:
        """Mean rate and the rate of each chunk (their spread shows the drift), palm / torch."""
        out: dict[str, Any] = {"train_step_torch": NO_TORCH}
        for name, runs in self.rates.items():
            out[name] = float(np.mean(runs))
            out[f"{name}_runs"] = runs
        if "train_step_torch" in self.rates:
            out["train_step_vs_torch"] = out["train_step"] / out["train_step_torch"]
            # other jobs on the machine slow PyTorch's spinning OpenMP threads more than
            # Paddle's sleeping ones: the fastest chunks are each framework on a quiet machine
            out["train_step_vs_torch_best"] = (max(self.rates["train_step"])
                                               / max(self.rates["train_step_torch"]))
        return out


def bench_training(model_name: str, size: int, settings: BenchSettings, work_dir: Path,
                   with_loader: bool) -> dict[str, Any]:
    """Bare step rate of palm and of PyTorch eager (alternating in three chunks) and,
    `with_loader`, palm's training loop's rate in its first epoch (decoding into the image
    cache) and second (cache hits), with bare chunks of both before, between and after."""
    batch_size = settings.batch_size
    model, optimizer, loss_fn, step = training_setup(model_name, batch_size, size)
    torch_step = torch_training_step(model_name, random_batch(batch_size, size),
                                     np.arange(batch_size) % 2)
    bare = BareSteps(step, torch_step, batch_size, max(1, settings.train_iters // 3))
    if not with_loader:
        for _ in range(3):
            bare.measure(warmup=1)
        return bare.figures()
    bare.measure(warmup=2)
    folder = fill_folder(work_dir / f"train{settings.train_images}", palm_sized_images(work_dir),
                         settings.train_images, keep_prefix=True)
    epochs = []
    # as tools/train.py runs: the image cache fills in epoch 1 and serves every later one
    with tempfile.TemporaryDirectory(dir=work_dir) as cache:
        dataset = PalmTrainSet(folder, transform=build_transform(size, train=True),
                               cache_dir=cache)
        loader = build_loader(dataset, batch_size, train=True, num_workers=settings.num_workers)
        for epoch in (1, 2):
            epochs.append(train_one_epoch(model, loss_fn, optimizer, loader, epoch=epoch,
                                          progress=False)["train_img_per_s"])
            bare.measure(warmup=0)
    out = bare.figures()
    out["train_loader_first_epoch"], out["train_loader"] = epochs
    out["first_epoch_vs_step"] = epochs[0] / out["train_step"]
    out["loader_vs_step"] = epochs[1] / out["train_step"]
    if "train_step_vs_torch" in out:
        # palm's whole loop, data loading included, against torch's bare step
        out["train_loader_vs_torch"] = epochs[1] / out["train_step_torch"]
    return out
