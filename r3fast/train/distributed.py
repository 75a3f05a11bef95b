"""Data parallelism through torchrun and torch.distributed, and nothing else.

    torchrun --nproc_per_node=K -m r3fast train ...

Each rank holds a colocated rollout engine and draws its own prompts; the policy is replicated
(DDP) or sharded (FSDP2 `fully_shard`); rank 0 writes checkpoints and logs. Without torchrun
(no WORLD_SIZE in the environment) everything here degrades to single-process no-ops.

With vLLM tensor parallelism (rollout.tensor_parallel_size = tp > 1) the ranks form groups of tp
consecutive ranks that share one engine, sharded across them. vLLM's external launcher needs every
rank of a group to submit the same prompts with the same seed, so data is split and sampling seeded
by *data rank* (`data_shard`): a group draws one share of the batch, and its ranks train on
identical copies of it. The loss needs no correction for those copies: update.py's loss_scale
normalises by counts summed over all ranks (sequences, micro-batches, or tokens for dapo), which
hold every copy, so each of the tp copies of a sample weighs 1/tp of its single weight, and the
gradient that DDP/FSDP2 averages over ranks is the one data_world ranks without copies would get.
Counts reported as metrics are another matter: `all_reduce_data_sum` counts each group once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0                          # global rank
    world_size: int = 1                    # ranks in the job
    local_rank: int = 0                    # rank on this node: picks the CUDA device
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where this rank's policy lives
    strategy: str = "none"                 # none (single process), ddp or fsdp2
    tensor_parallel_size: int = 1          # ranks sharing one rollout engine: they hold the same data

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def data_rank(self) -> int:
        """Which share of the data this rank draws (its tensor-parallel peers draw the same)."""
        return data_shard(self.rank, self.world_size, self.tensor_parallel_size)[0]

    @property
    def data_world(self) -> int:
        """How many distinct shares the data is split into."""
        return data_shard(self.rank, self.world_size, self.tensor_parallel_size)[1]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _comm_device(self) -> torch.device:
        # nccl reduces CUDA tensors only; gloo wants CPU ones.
        return self.device if tdist.get_backend() == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        buf = t.to(self._comm_device())
        tdist.all_reduce(buf, op=tdist.ReduceOp.SUM)
        return buf.to(t.device)

    def all_reduce_data_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over data ranks: tensor-parallel peers hold identical values, so the sum over all
        ranks counts each group tensor_parallel_size times."""
        return self.all_reduce_sum(t) / self.tensor_parallel_size

    def all_reduce_max(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        buf = t.to(self._comm_device())
        tdist.all_reduce(buf, op=tdist.ReduceOp.MAX)
        return buf.to(t.device)

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, on rank 0 (other ranks get an empty list)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        tdist.gather_object(obj, out, dst=0)
        return out or []

    def broadcast_object(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def no_sync(self, module: nn.Module):
        """Skip the gradient all-reduce of this backward (all but the last micro-batch)."""
        if self.strategy == "ddp":
            return module.no_sync()
        if self.strategy == "fsdp2":
            return _fsdp_no_sync(module)
        return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(module):
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def data_shard(rank: int, world_size: int, tensor_parallel_size: int) -> tuple[int, int]:
    """(data rank, data world) of `rank`: groups of tensor_parallel_size consecutive ranks share one
    engine and so one share of the data (vLLM's external launcher groups ranks the same way)."""
    if tensor_parallel_size < 1 or world_size % tensor_parallel_size:
        raise ValueError(f"config key 'rollout.tensor_parallel_size' ({tensor_parallel_size}) must be >= 1 and "
                         f"divide the number of ranks ({world_size})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return rank // tensor_parallel_size, world_size // tensor_parallel_size


def init_distributed(strategy: str, backend: str, device: str, tensor_parallel_size: int = 1) -> DistContext:
    """Join the torchrun job when there is one; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if tensor_parallel_size > 1 and world == 1:
        # Alone, vLLM runs TP in worker processes that cannot take the trainer's weight pushes.
        raise ValueError(f"config key 'rollout.tensor_parallel_size' ({tensor_parallel_size}) > 1 needs torchrun "
                         f"with a multiple of it as the number of ranks")
    data_shard(0, world, tensor_parallel_size)  # a world the groups do not divide stops here, before joining
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.device=cuda but torch sees no CUDA device")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistContext(device=dev)
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not use_cuda:
        raise ValueError("distributed.backend=nccl needs CUDA devices; use gloo on CPU")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return DistContext(rank=tdist.get_rank(), world_size=tdist.get_world_size(), local_rank=local_rank,
                       device=dev, strategy=strategy, tensor_parallel_size=tensor_parallel_size)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def wrap_policy(module: nn.Module, policy: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP or FSDP2 around `module` (PolicyLoss over `policy`); unchanged in a single process."""
    if not ctx.enabled:
        return module
    if ctx.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    # One FSDP unit per decoder layer, the rest (embeddings, lm_head, final norm) in the root.
    for layer in policy.get_decoder().layers:
        fully_shard(layer)
    fully_shard(module)
    return module


def full_state_dict(policy: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor]:
    """Unsharded weights on every rank, by parameter name (a collective under FSDP2)."""
    if ctx.strategy != "fsdp2":
        return {k: v.detach() for k, v in policy.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True))


def optimizer_state(policy: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> dict:
    if ctx.strategy != "fsdp2":
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(policy, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(policy: nn.Module, optimizer: torch.optim.Optimizer, state: dict, ctx: DistContext) -> None:
    if ctx.strategy != "fsdp2":
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(policy, optimizer, state, options=StateDictOptions(full_state_dict=True))
