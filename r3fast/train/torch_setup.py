"""The process-wide torch settings of a training rank: threads, determinism, seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def configure_torch(*, threads: int, deterministic: bool, seed: int, data_rank: int) -> None:
    """Threads, determinism and every global RNG. Each data rank gets its own stream: tensor-parallel
    peers share a data rank, since they must make the same random choices."""
    torch.set_num_threads(rank_threads(threads))
    if deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    stream = step_seed(seed, 0, data_rank)
    random.seed(stream)
    np.random.seed(stream % 2**32)
    torch.manual_seed(stream)


def rank_threads(threads: int) -> int:
    """`threads`, else this process's cores shared among the ranks of this node. The trainer's one
    thread setting: OMP_NUM_THREADS, which torchrun sets to 1, does not decide it."""
    if threads:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def step_seed(seed: int, step: int, data_rank: int) -> int:
    """A sampling seed per (run seed, step, data rank): a resumed step samples what the original would."""
    return int(np.random.SeedSequence([seed, step, data_rank]).generate_state(1)[0])
