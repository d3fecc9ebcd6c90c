"""DataLoader construction: seeded per-epoch shuffling and per-worker, per-epoch numpy seeds."""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import paddle

from palm.runtime import worker_init


class SeededBatchSampler(paddle.io.BatchSampler):
    """Batches in an order that depends only on (seed, epoch), not on global random state.

    `epoch` advances each time a DataLoader starts iterating; `set_epoch` sets it, e.g. when
    training resumes, so epoch k sees the same order as in an uninterrupted run.
    """

    def __init__(
        self,
        dataset: paddle.io.Dataset,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
    ):
        super().__init__(dataset=dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = -1  # the first iteration is epoch 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration will be epoch `epoch`."""
        self.epoch = epoch - 1

    def __iter__(self) -> Iterator[list[int]]:
        # A plain method, not a generator: the epoch advances when DataLoader calls iter(),
        # which happens before it starts the worker processes, so workers see the new epoch.
        self.epoch += 1
        n = len(self.sampler.data_source)
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return iter(batches)


class _SeedWorker:
    """worker_init_fn: seed numpy and `random` from (seed, epoch, worker id).

    Augmentations draw from `np.random` (palm.data.transforms); without this, every worker
    would repeat the same random stream in every epoch unless global state was seeded.
    """

    def __init__(self, seed: int, batch_sampler: SeededBatchSampler):
        self.seed = seed
        self.batch_sampler = batch_sampler

    def __call__(self, worker_id: int) -> None:
        worker_init(worker_id)  # die with the trainer; decode in the gaps at low priority
        ss = np.random.SeedSequence([self.seed, max(self.batch_sampler.epoch, 0), worker_id])
        np.random.seed(ss.generate_state(4))
        random.seed(int(ss.generate_state(1)[0]))


def build_loader(
    dataset: paddle.io.Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool | None = None,
) -> paddle.io.DataLoader:
    """DataLoader for training (shuffled, seeded, drop_last) or evaluation (in order, all samples).

    Args:
        dataset: a palm.data data set (returns (CHW float32, int64)).
        batch_size: samples per batch.
        train: shuffle each epoch with a (seed, epoch) permutation.
        num_workers: loader processes (0 = load in this process; augmentations then follow
            the global numpy seed, so call np.random.seed(seed) once for a repeatable run).
        seed: shuffling and worker seed.
        drop_last: default True for training when the set is larger than one batch (a
            1-sample last batch upsets BatchNorm), False otherwise.

    Returns:
        paddle.io.DataLoader yielding [images (B,3,H,W) float32, labels (B,) int64]. Its
        `batch_sampler.set_epoch(k)` makes a resumed run see the same order as a full run.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if drop_last is None:
        drop_last = train and len(dataset) > batch_size
    sampler = SeededBatchSampler(dataset, batch_size, shuffle=train, drop_last=drop_last, seed=seed)
    return paddle.io.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=_SeedWorker(seed, sampler) if num_workers > 0 else None,
        return_list=True,
    )
