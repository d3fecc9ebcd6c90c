"""DataLoader construction: seeded per-epoch shuffling, per-worker, per-epoch numpy seeds, and
read errors that reach the main process as one line naming the file.

Paddle's DataLoader cannot carry an exception raised while loading out safely: with 0
workers its reading thread dies and the main thread waits forever on the killed queue
(the tools hung on a truncated JPEG); with workers it re-raises by calling the exception's
class with one message argument, which fails for exceptions taking more (ImageReadError)
and buries the file name in a worker traceback. So the loader never lets an exception
cross it: each sample carries an error field, and the main process raises from that.
"""

from __future__ import annotations

import random
import traceback
from typing import Iterator

import numpy as np
import paddle

from palm.data.image_io import ImageReadError
from palm.errors import BadConfig
from palm.runtime import worker_init


class LoaderError(Exception):
    """A sample failed to load for a reason other than a bad image (a bug); the message holds
    the traceback from the process that loaded it."""


class SeededBatchSampler(paddle.io.BatchSampler):
    """Batches in an order that depends only on (seed, epoch), not on global random state.

    `epoch` advances each time a DataLoader starts iterating; `set_epoch` sets it, e.g. when
    training resumes, so epoch k sees the same order as in an uninterrupted run. With
    `weights` (one per sample) an epoch draws as many samples with replacement, each with
    probability proportional to its weight (a balanced sampler: 1 / its class's count).
    """

    def __init__(
        self,
        dataset: paddle.io.Dataset,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        weights: np.ndarray | None = None,
    ):
        super().__init__(dataset=dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last)
        self.shuffle = shuffle
        self.seed = seed
        self.weights = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        self.epoch = -1  # the first iteration is epoch 0

    def set_epoch(self, epoch: int) -> None:
        """The next iteration will be epoch `epoch`."""
        self.epoch = epoch - 1

    def __iter__(self) -> Iterator[list[int]]:
        # A plain method, not a generator: the epoch advances when DataLoader calls iter(),
        # which happens before it starts the worker processes, so workers see the new epoch.
        self.epoch += 1
        n = len(self.sampler.data_source)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            order = rng.choice(n, n, replace=True, p=self.weights)
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
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


class _Guarded(paddle.io.Dataset):
    """dataset[i] as (image, label, path, problem); a failed sample gives a blank image and
    its error as text (path "" for an error that is not about an image)."""

    def __init__(self, dataset: paddle.io.Dataset):
        super().__init__()
        self.dataset = dataset
        size = dataset.transform.image_size
        self.blank = np.zeros((3, size, size), np.float32)
        # a failed sample's label has the shape of the others, so the batch still stacks
        self.blank_label = np.zeros(getattr(dataset, "label_shape", ()), np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64, str, str]:
        try:
            image, label = self.dataset[index]
            return image, np.asarray(label, np.int64), "", ""
        except ImageReadError as e:
            return self.blank, self.blank_label, e.path, e.problem
        except Exception:  # noqa: BLE001 - anything else must not hang the loader either
            return self.blank, self.blank_label, "", traceback.format_exc()


class CheckedLoader(paddle.io.DataLoader):
    """A DataLoader over `_Guarded(dataset)` yielding [images, labels]; the first failed
    sample raises ImageReadError (or LoaderError) in the iterating process."""

    def __iter__(self) -> Iterator[list[paddle.Tensor]]:
        for images, labels, paths, problems in super().__iter__():
            for path, problem in zip(paths, problems):
                if problem and path:
                    raise ImageReadError(path, problem)
                if problem:
                    raise LoaderError(f"loading a sample failed:\n{problem}")
            yield [images, labels]


def balanced_sample_weights(labels: np.ndarray) -> np.ndarray:
    """1 / (its class's count) per sample: every class is drawn equally often."""
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


def build_loader(
    dataset: paddle.io.Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool | None = None,
    batch_sampler: paddle.io.BatchSampler | None = None,
    sample_weights: np.ndarray | None = None,
) -> CheckedLoader:
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
        batch_sampler: a sampler to use instead of the seeded one (e.g. a
            DistributedBatchSampler); `train`, `seed` and `drop_last` then do not apply.
        sample_weights: training draws samples with replacement in proportion to these
            (`balanced_sample_weights`), instead of a permutation.

    Returns:
        CheckedLoader (a paddle.io.DataLoader) yielding [images (B,3,H,W) float32, labels
        (B,) int64]; an unreadable image raises ImageReadError naming it, in this process,
        whatever `num_workers`. Its `batch_sampler.set_epoch(k)` makes a resumed run see the
        same order as a full run.
    """
    if batch_size < 1:
        raise BadConfig(f"batch_size must be >= 1, got {batch_size}")
    if batch_sampler is None:
        if drop_last is None:
            drop_last = train and len(dataset) > batch_size
        batch_sampler = SeededBatchSampler(dataset, batch_size, shuffle=train,
                                           drop_last=drop_last, seed=seed,
                                           weights=sample_weights if train else None)
    seeded = isinstance(batch_sampler, SeededBatchSampler) and num_workers > 0
    return CheckedLoader(
        _Guarded(dataset),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        # every worker dies with its parent; seeded ones also seed their augmentations
        worker_init_fn=_SeedWorker(seed, batch_sampler) if seeded else worker_init,
        return_list=True,
    )
