"""Batches through an exported or INT8 engine as numpy arrays, with the engine kept busy.

`predict` and `eval` hand a Paddle Inference or OpenVINO predictor the loader's batches as
numpy arrays: no paddle.Tensor round trip (gather, Tensor -> numpy -> Tensor -> numpy) around
an engine that takes and gives numpy anyway. An engine that releases the GIL while it runs
(OpenVINO) gets the next batch queued while the current one runs (`run_ahead`), so what the
main thread does between batches (collecting the next batch from the decoding workers,
writing rows) overlaps the engine instead of leaving its cores idle. A dygraph model keeps
its tensors: predict's TTA flips and Grad-CAM run on them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import paddle

from palm.engine.inference import DygraphPredictor, Predictor

Item = TypeVar("Item")
Result = TypeVar("Result")

# engines whose predict() releases the GIL for the whole run, so a thread can run it while
# the main thread collects the next batch (OpenVINO's infer does; Paddle Inference's predictor
# resets the math library's threads on the calling thread after each run, so it stays there)
AHEAD_ENGINES = ("openvino",)


def batch_model(predictor: Predictor) -> paddle.nn.Layer | Predictor:
    """What predict and eval run batches through: a DygraphPredictor's Layer (tensors), else
    the predictor itself (numpy arrays)."""
    return predictor.model if isinstance(predictor, DygraphPredictor) else predictor


def takes_arrays(model: paddle.nn.Layer | Predictor) -> bool:
    """True for a predictor run on numpy batches (`batch_model`), False for a dygraph Layer."""
    return not isinstance(model, paddle.nn.Layer)


def runs_ahead(model: paddle.nn.Layer | Predictor) -> bool:
    """True if `model`'s batches may run on a thread one batch ahead of the main thread."""
    return takes_arrays(model) and getattr(model, "engine", None) in AHEAD_ENGINES


def run_ahead(fn: Callable[[Item], Result], items: Iterable[Item],
              ahead: bool = True) -> Iterator[tuple[Item, Result]]:
    """(item, fn(item)) for each item, in order.

    With `ahead`, fn runs on one worker thread and item k + 1 is queued behind item k as soon
    as the caller asks for item k's result, so the thread goes from one batch to the next
    without waiting while the caller handles item k and fetches item k + 2. At most two items
    are in flight. An exception from fn reaches the caller with its item's result; one from
    `items` (or Ctrl-C while it is drawn) after the result of the item on the engine, as
    without running ahead. When the caller stops early, the queued item is dropped: only the
    running one is waited for.
    """
    if not ahead:
        for item in items:
            yield item, fn(item)
        return
    drawn = iter(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="palm-engine")
    try:
        pending: tuple[Item, Future] | None = None
        while True:
            try:
                item = next(drawn)
            except StopIteration:
                break
            except BaseException:
                if pending is not None:  # the engine finishes it anyway: its rows are kept
                    yield pending[0], pending[1].result()
                raise
            future = pool.submit(fn, item)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (item, future)
        if pending is not None:
            yield pending[0], pending[1].result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
