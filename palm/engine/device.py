"""Run-time setup: device choice, seeding, and data-parallel processes.

Multi-GPU (or multi-process CPU) training is launched with
    python -m paddle.distributed.launch --nproc_per_node N tools/train.py ...
which starts N copies of the script with PADDLE_TRAINERS_NUM / PADDLE_TRAINER_ID set.
`init_distributed` then joins the group; each process trains on its own shard of every
epoch (DistributedBatchSampler) and only rank 0 writes files.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import paddle
import paddle.distributed as dist

from palm.errors import BadConfig

DEVICES = ("auto", "cpu", "gpu")


def gpu_available() -> bool:
    """True when this paddle build has CUDA and at least one GPU is visible."""
    return paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def select_device(name: str = "auto", local_rank: int = 0) -> str:
    """Set paddle's device and return "gpu" or "cpu".

    Args:
        name: "auto" (gpu when available, else cpu), "cpu" or "gpu".
        local_rank: GPU index of this process under distributed launch.

    Raises:
        ValueError: unknown name. RuntimeError: "gpu" asked for but none usable.
    """
    if name not in DEVICES:
        raise BadConfig(f"unknown device {name!r}; choose from {', '.join(DEVICES)}")
    has_gpu = gpu_available()
    if name == "gpu" and not has_gpu:
        raise BadConfig(
            "device gpu: no usable GPU (this paddle build "
            + ("sees no GPU)" if paddle.is_compiled_with_cuda() else "has no CUDA support; install paddlepaddle-gpu)"),
            param="device")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    paddle.set_device(f"gpu:{local_rank}" if device == "gpu" else "cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed paddle, numpy and `random`: same seed, same weights and batches on CPU."""
    paddle.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group when started by paddle.distributed.launch (world size > 1)."""
    world_size = dist.get_world_size()
    if world_size <= 1:
        return DistInfo()
    dist.init_parallel_env()
    return DistInfo(world_size, dist.get_rank(), dist.ParallelEnv().local_rank)
