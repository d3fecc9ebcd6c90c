"""The profile section: where a training step's time goes in palm (Paddle) and in PyTorch
eager on the same network, and how fast each framework's convolution kernels run.

Three views, each measured on both frameworks in one process:
  phases     seconds per step in the forward (with the loss), the backward and the optimizer
             (step and clearing the gradients), timed around each phase (CPU ops are
             synchronous, so the wall time of a phase is its work)
  op types   the profilers' (paddle.profiler, torch.profiler) top-level events per step,
             grouped by operator type (conv, batch norm, ReLU, pooling, add, ...) and phase
  conv       every convolution of the network at the step's batch, timed alone: forward,
             data gradient (d input) and filter gradient (d weight), GFLOP/s of each kind;
             Paddle's also with its oneDNN kernels (FLAGS_use_mkldnn, conv_onednn), which
             its dygraph training does not use by default
"""
from __future__ import annotations

import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F
import paddle.profiler as profiler
from paddle.profiler.profiler_statistic import StatisticData

from palm.bench.timing import random_batch
from palm.bench.torch_twin import torch_training_parts
from palm.bench.train import NO_TORCH, training_setup

# operator type <- a pattern of the profilers' event names (first match wins)
OP_TYPES = (("conv", r"conv"), ("batch_norm", r"batch_?norm"), ("relu", r"relu|threshold"),
            ("pool", r"pool"), ("grad_accumulation", r"accumulat"), ("add", r"(^|[_:\s])add"),
            ("optimizer", r"momentum|optimizer|sgd"))
# conv shape: (N, C_in, H, W, C_out, kernel, stride, padding, groups)
ConvShape = tuple[int, int, int, int, int, int, int, int, int]
Phases = dict[str, float]


def op_type(event_name: str) -> str:
    name = event_name.lower()
    return next((kind for kind, pattern in OP_TYPES if re.search(pattern, name)), "other")


def _median_phases(run_phases: Callable[[], Phases], steps: int) -> Phases:
    runs = [run_phases() for _ in range(steps)]
    return {phase: statistics.median(r[phase] for r in runs) for phase in runs[0]}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def paddle_phases(model_name: str, batch_size: int, size: int, steps: int
                  ) -> tuple[Phases, Callable[[], None]]:
    """Median seconds per phase of palm's training step, and the step itself."""
    model, optimizer, loss_fn, step = training_setup(model_name, batch_size, size)
    images = paddle.to_tensor(random_batch(batch_size, size))
    labels = paddle.to_tensor(np.arange(batch_size) % 2, dtype="int64")

    def run() -> Phases:
        loss, forward = _timed(lambda: loss_fn(model(images), labels))
        _, backward = _timed(loss.backward)
        _, opt = _timed(lambda: (optimizer.step(), optimizer.clear_grad()))
        return {"forward": forward, "backward": backward, "optimizer": opt}

    run()  # warm-up
    return _median_phases(run, steps), step


def torch_phases(model_name: str, batch_size: int, size: int, steps: int
                 ) -> tuple[Phases, Callable[[], None]] | None:
    """The same for the PyTorch twin; None without torch or a twin."""
    parts = torch_training_parts(model_name, random_batch(batch_size, size),
                                 np.arange(batch_size) % 2)
    if parts is None:
        return None
    net, optimizer, loss_fn, images, targets = parts

    def run() -> Phases:
        loss, forward = _timed(lambda: loss_fn(net(images), targets))
        _, backward = _timed(loss.backward)
        _, opt = _timed(lambda: (optimizer.step(), optimizer.zero_grad()))
        return {"forward": forward, "backward": backward, "optimizer": opt}

    def step() -> None:
        run()

    run()
    return _median_phases(run, steps), step


def _add_event(table: dict[str, dict[str, float]], name: str, phase: str, seconds: float) -> None:
    kind = op_type(name)
    if kind == "optimizer":
        phase = "optimizer"
    table.setdefault(kind, {}).setdefault(phase, 0.0)
    table[kind][phase] += seconds


def paddle_op_types(step: Callable[[], None], steps: int) -> dict[str, dict[str, float]]:
    """Seconds per step by operator type and phase, from paddle.profiler's events (grad
    nodes are the backward, momentum the optimizer, the other dygraph ops the forward)."""
    # on_trace_ready: without one Paddle writes a chrome trace into ./profiler_log/
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                             on_trace_ready=lambda prof: None)
    prof.start()
    for _ in range(steps):
        step()
        prof.step()
    prof.stop()
    items = StatisticData(prof.profiler_result.get_data(),
                          prof.profiler_result.get_extra_info()).event_summary.items
    table: dict[str, dict[str, float]] = {}
    for name, item in items.items():
        phase = "backward" if "GradNode" in name else "forward"
        _add_event(table, name, phase, item.cpu_time / 1e9 / steps)  # ns
    return table


def torch_op_types(step: Callable[[], None], steps: int) -> dict[str, dict[str, float]]:
    """The same from torch.profiler's top-level events (autograd's evaluate_function events
    are the backward, Optimizer.* the optimizer)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    table: dict[str, dict[str, float]] = {}
    for event in prof.events():
        if event.cpu_parent is not None:
            continue  # its parent's time holds it
        phase = "backward" if event.name.startswith("autograd::engine") else "forward"
        _add_event(table, event.name, phase, event.cpu_time_total / 1e6 / steps)  # us
    return table


def conv_shapes(model_name: str, batch_size: int, size: int) -> Counter[ConvShape]:
    """Every Conv2D of palm's network at this batch and size, with how often it occurs."""
    model, *_ = training_setup(model_name, batch_size, size)
    shapes: Counter[ConvShape] = Counter()

    def hook(layer: paddle.nn.Conv2D, inputs: tuple) -> None:
        n, c, h, w = inputs[0].shape
        shapes[(n, c, h, w, layer._out_channels, layer._kernel_size[0], layer._stride[0],
                layer._padding, layer._groups)] += 1

    handles = [layer.register_forward_pre_hook(hook) for layer in model.sublayers()
               if isinstance(layer, paddle.nn.Conv2D)]
    with paddle.no_grad():
        model(paddle.to_tensor(random_batch(batch_size, size)))
    for handle in handles:
        handle.remove()
    return shapes


def conv_flops(shape: ConvShape) -> float:
    """FLOPs of one convolution's forward (each of its two gradients costs the same)."""
    n, c, h, w, cout, k, stride, pad, groups = shape
    out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    return 2.0 * n * cout * out_h * out_w * c // groups * k * k


def _best(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    return min(_timed(fn)[1] for _ in range(repeats))


def paddle_conv_seconds(shape: ConvShape, repeats: int) -> dict[str, float]:
    """Forward, data-gradient and filter-gradient seconds of one convolution in Paddle. A
    gradient is timed as forward + backward minus the forward: Paddle's conv2d_grad skips
    the gradient of an input that stops gradients, and exposes no single-gradient call."""
    n, c, h, w, cout, k, stride, pad, groups = shape
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((n, c, h, w), dtype="float32"))
    weight = paddle.to_tensor(rng.standard_normal((cout, c // groups, k, k), dtype="float32"))

    def forward() -> paddle.Tensor:
        return F.conv2d(x, weight, stride=stride, padding=pad, groups=groups)

    def gradient(of: paddle.Tensor) -> Callable[[], Any]:
        def run() -> Any:
            of.stop_gradient = False
            try:
                return paddle.grad([forward()], [of], [paddle.ones_like(out)])
            finally:
                of.stop_gradient = True
        return run

    with paddle.no_grad():
        out = forward()
        fwd = _best(forward, repeats)
    return {"forward": fwd, "data_grad": _best(gradient(x), repeats) - fwd,
            "filter_grad": _best(gradient(weight), repeats) - fwd}


def paddle_onednn_conv_seconds(shape: ConvShape, repeats: int) -> dict[str, float]:
    """paddle_conv_seconds with Paddle's oneDNN kernels switched on."""
    paddle.set_flags({"FLAGS_use_mkldnn": True})
    try:
        return paddle_conv_seconds(shape, repeats)
    finally:
        paddle.set_flags({"FLAGS_use_mkldnn": False})


def torch_conv_seconds(shape: ConvShape, repeats: int) -> dict[str, float]:
    """The same in PyTorch, each gradient by its own call (torch.nn.grad)."""
    import torch

    n, c, h, w, cout, k, stride, pad, groups = shape
    x = torch.randn(n, c, h, w)
    weight = torch.randn(cout, c // groups, k, k)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(x, weight, stride=stride, padding=pad, groups=groups)
        grad_out = torch.ones_like(out)
        return {
            "forward": _best(lambda: torch.nn.functional.conv2d(
                x, weight, stride=stride, padding=pad, groups=groups), repeats),
            "data_grad": _best(lambda: torch.nn.grad.conv2d_input(
                x.shape, weight, grad_out, stride, pad, groups=groups), repeats),
            "filter_grad": _best(lambda: torch.nn.grad.conv2d_weight(
                x, weight.shape, grad_out, stride, pad, groups=groups), repeats)}


def conv_rates(shapes: Counter[ConvShape], seconds_of: Callable[[ConvShape, int], dict[str, float]],
               repeats: int) -> dict[str, dict[str, float]]:
    """Per kind: seconds of all the network's convolutions and their GFLOP/s."""
    flops = sum(conv_flops(s) * count for s, count in shapes.items())
    totals = Counter[str]()
    for shape, count in shapes.items():
        for kind, seconds in seconds_of(shape, repeats).items():
            totals[kind] += max(seconds, 0.0) * count
    return {kind: {"seconds": totals[kind], "gflop_per_s": flops / totals[kind] / 1e9}
            for kind in totals}


def bench_train_profile(model_name: str, batch_size: int, size: int, steps: int = 3,
                        repeats: int = 3) -> dict[str, Any]:
    """Phases, operator types and convolution kernels of palm's training step and of
    PyTorch eager's (when torch and a twin are there), one framework after the other."""
    shapes = conv_shapes(model_name, batch_size, size)
    gflop = sum(conv_flops(s) * n for s, n in shapes.items())
    out: dict[str, Any] = {"conv_gflop_per_step_forward": gflop / 1e9}
    phases, step = paddle_phases(model_name, batch_size, size, steps)
    out["paddle"] = {"phases": phases, "op_types": paddle_op_types(step, steps)}
    twin = torch_phases(model_name, batch_size, size, steps)
    if twin is None:
        out["torch"] = NO_TORCH
    else:
        out["torch"] = {"phases": twin[0], "op_types": torch_op_types(twin[1], steps)}
    out["paddle"]["conv"] = conv_rates(shapes, paddle_conv_seconds, repeats)
    out["paddle"]["conv_onednn"] = conv_rates(shapes, paddle_onednn_conv_seconds, repeats)
    if twin is not None:
        out["torch"]["conv"] = conv_rates(shapes, torch_conv_seconds, repeats)
    return out
