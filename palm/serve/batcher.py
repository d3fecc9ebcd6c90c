"""Micro-batching of queued photos in one thread, and the cancellation of abandoned requests."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import numpy as np
from fastapi import Request

from palm.serve.logs import log_event


class QueueFull(Exception):
    """More photos would wait for the model than the queue holds."""


@dataclass
class _Job:
    x: np.ndarray
    cam: bool
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Runs queued images through `run_batch` in one thread, several at a time.

    When the model gets free, the images that arrived while it ran (up to `max_batch`) start
    the next batch at once: it gathers while the current one runs, and the model never idles
    while decoded images wait. Only a model that found the queue empty waits for a batch to
    fill: until `max_batch` images wait or `max_wait_s` after the first one arrived. The queue
    holds at most `max_queue` images; `submit` raises QueueFull beyond that rather than
    letting latency grow without bound.

    Attributes:
        batch_sizes: how many batches of each size ran.
        cancelled: how many queued images were dropped by `cancel` before they ran.
    """

    def __init__(self, run_batch: Callable[[np.ndarray, list[bool]], list[Any]], *,
                 max_batch: int, max_wait_s: float, max_queue: int):
        self.run_batch = run_batch
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.batch_sizes: Counter[int] = Counter()
        self.cancelled = 0
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="palm-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def submit(self, items: Sequence[tuple[np.ndarray, bool]]) -> list[Future]:
        """Queue (model input, wants Grad-CAM) pairs, all or none; a Future per item."""
        jobs = [_Job(x, cam) for x, cam in items]
        with self._cond:
            if self._stopping:
                raise QueueFull("the service is shutting down")
            if len(self._jobs) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._jobs)} photos are waiting for the model (the queue "
                                f"holds {self.max_queue}); try again shortly")
            self._jobs.extend(jobs)
            self._cond.notify_all()
        return [job.future for job in jobs]

    def cancel(self, futures: Sequence[Future]) -> None:
        """Drop the jobs of `futures` that have not run yet (their request is over): they
        leave the queue now, so they neither run nor count against `max_queue`."""
        dropped = {id(f) for f in futures if f.cancel()}
        with self._cond:
            kept = [job for job in self._jobs if id(job.future) not in dropped]
            self.cancelled += len(self._jobs) - len(kept)
            self._jobs = deque(kept)

    def _next_batch(self) -> list[_Job]:
        with self._cond:
            idle = not self._jobs
            while not self._jobs and not self._stopping:
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while idle and len(self._jobs) < self.max_batch and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stopping:
                return []
            taken = [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]
        # a job whose request timed out was cancelled: skip it
        return [job for job in taken if job.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while not self._stopping:
            batch = self._next_batch()
            if not batch:
                continue
            self.batch_sizes[len(batch)] += 1
            try:
                outputs = self.run_batch(np.stack([job.x for job in batch]),
                                         [job.cam for job in batch])
            except Exception as e:  # noqa: BLE001 - the requests get a 500, the thread lives on
                log_event("batch_failed", logging.ERROR, size=len(batch),
                          error=traceback.format_exc())
                for job in batch:
                    job.future.set_exception(e)
                continue
            for job, out in zip(batch, outputs):
                job.future.set_result(out)
        with self._cond:
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()


T = TypeVar("T")


class Abandoned(Exception):
    """A request's work stopped before its answer: its time is up or its client left."""

    def __init__(self, reason: str, stage: str = ""):
        super().__init__(reason)
        self.reason, self.stage = reason, stage  # reason: "timeout" or "disconnected"


class RequestWatch:
    """Ends a request's waits at its deadline or as soon as its client disconnects.

    The work awaited goes on in the background when a wait ends (a decoding thread cannot be
    interrupted inside OpenCV), so `stop` is set for it to check between steps.
    """

    def __init__(self, request: Request, deadline: float):
        self.deadline = deadline  # a time.perf_counter time
        self.stop = threading.Event()
        self._gone = asyncio.ensure_future(_disconnected(request))

    async def wait(self, work: Awaitable[T]) -> T:
        """The result of `work`; Abandoned when the deadline or the client's disconnect
        comes first."""
        task = asyncio.ensure_future(work)
        left = max(self.deadline - time.perf_counter(), 0)
        done, _ = await asyncio.wait({task, self._gone}, timeout=left,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        self.stop.set()
        task.add_done_callback(_log_failure)  # nobody awaits it any more
        raise Abandoned("disconnected" if self._gone in done else "timeout")

    def close(self) -> None:
        self._gone.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (called once the body has been read, so every
    later message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log_event("abandoned_work_failed", logging.ERROR, error=repr(task.exception()))
