"""What a training run holds between steps, and how it is saved and restored.

`TrainState.build` loads the policy (from the newest checkpoint when resuming), the frozen
reference (beta > 0), the rollout engine, AdamW with its schedule, and the failure pool; `save`
writes all of it as one atomic checkpoint (train/checkpoint.py) and `push_weights` hands the
updated policy to the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from r3fast.failures import failures_as_attempts, mine_failures, read_failures
from r3fast.reflect import Attempt, ReflectConfig
from r3fast.rollout import make_engine, resolve_engine
from r3fast.rollout.base import GenerationStats, RolloutEngine
from r3fast.tasks.base import Instance, Task
from r3fast.tasks.selection import fresh_instances
from r3fast.train import checkpoint as ckpt
from r3fast.train.config import TrainConfig, to_dict
from r3fast.train.distributed import (
    DistContext,
    full_state_dict,
    load_optimizer_state,
    optimizer_state,
    wrap_policy,
)
from r3fast.train.optimizer import build_optimizer
from r3fast.train.pool import FailurePool
from r3fast.train.update import PolicyLoss


@dataclass
class TrainState:
    dist: DistContext
    run_dir: Path
    policy: nn.Module
    tokenizer: Any
    reference: nn.Module | None            # the initial policy, frozen (loss.beta > 0), also when resuming
    engine: RolloutEngine
    module: nn.Module                      # PolicyLoss over the policy, wrapped for DDP / FSDP2
    optimizer: torch.optim.Optimizer
    scheduler: Any
    pool: FailurePool[Attempt]
    task: Task
    reflect: ReflectConfig                 # how R3 steps sample; each step sets its own seed
    fresh_instances: Callable[[int, int], list[Instance]]  # (n, seed) -> first-try stage tasks, never held-out
    step: int = 0                          # the last step done (the checkpoint's, when resuming)
    generation: dict[str, GenerationStats] = field(default_factory=dict)  # this step's, per phase

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

    @classmethod
    def build(cls, cfg: TrainConfig, dist: DistContext, run_dir: Path, task: Task, reflect: ReflectConfig,
              heldout_ids: set[str], training: list[Instance], generate: Callable[[int, int], list[Instance]],
              resume_from: Path | None) -> TrainState:
        weights = resume_from / "model" if resume_from else cfg.model.name
        policy, tokenizer = load_policy(weights, cfg.model.dtype, cfg.model.gradient_checkpointing, dist)
        reference = None
        if cfg.loss.beta > 0:
            reference, _ = load_policy(cfg.model.name, cfg.model.dtype, False, dist)
            reference.requires_grad_(False)
        engine = rollout_engine(cfg, policy, tokenizer, weights, dist)
        o, s = cfg.optimizer, cfg.schedule
        optimizer, scheduler = build_optimizer(
            policy.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
            steps=s.steps, warmup_steps=s.warmup_steps, schedule=s.lr_schedule, min_lr_ratio=s.min_lr_ratio,
            sft_steps=cfg.stage.sft_steps, sft_lr=cfg.stage.sft_lr)
        state = cls(dist, run_dir, policy, tokenizer, reference, engine, wrap_policy(PolicyLoss(policy), policy, dist),
                    optimizer, scheduler, pool=None, task=task, reflect=reflect,
                    fresh_instances=lambda n, seed: fresh_instances(training, generate, n, seed, heldout_ids))
        state.pool = state.failure_pool(cfg, task, reflect, heldout_ids, training, generate)
        if resume_from:
            state.restore(resume_from)
        return state

    def failure_pool(self, cfg: TrainConfig, task: Task, reflect: ReflectConfig, heldout_ids: set[str],
                     training: list[Instance], generate) -> FailurePool[Attempt]:
        """Failed first attempts to reflect on: read from a failure dataset, or mined with the policy."""
        common = dict(data_rank=self.dist.data_rank, data_world=self.dist.data_world, seed=cfg.data.seed,
                      exclude_ids=heldout_ids, encode=Attempt.to_dict, decode=Attempt.from_dict)
        if cfg.data.source == "offline":
            stored = read_failures(cfg.data.failures_path, task=task.name)
            return FailurePool(source="offline", failures=failures_as_attempts(stored, task, self.tokenizer), **common)

        def mine(instances: list[Instance], seed: int) -> list[Attempt]:
            params = dataclasses.replace(reflect, seed=seed).attempt_params()
            stats = self.generation.setdefault("mining", GenerationStats())
            return mine_failures(self.engine, self.tokenizer, task, instances, params, stats)

        return FailurePool(source="online", mining_batch=cfg.data.mining_batch, mine=mine,
                           generate_instances=None if training else generate, instances=training, **common)

    def restore(self, folder: Path) -> None:
        """Optimizer, schedule, pool, RNG streams and step from a checkpoint (the weights were loaded
        by build)."""
        saved = ckpt.read_checkpoint(folder)
        trainer_state = saved["trainer_state"]
        ckpt.check_same_layout(trainer_state, self.dist, folder)
        load_optimizer_state(self.policy, self.optimizer, saved["optimizer"]["optimizer"], self.dist)
        self.scheduler.load_state_dict(saved["optimizer"]["scheduler"])
        self.pool.load_state(trainer_state["pools"][self.dist.rank])
        ckpt.restore_rng(saved["rng"][self.dist.rank])
        self.step = trainer_state["step"]

    def save(self, step: int, cfg: TrainConfig) -> None:
        """One atomic checkpoint of everything a resumed run needs; every rank takes part."""
        dist = self.dist
        weights = full_state_dict(self.policy, dist)
        opt_state = optimizer_state(self.policy, self.optimizer, dist)
        rng_states, pool_states = dist.gather_objects(ckpt.capture_rng()), dist.gather_objects(self.pool.state())
        if dist.is_main:
            def save_model(folder: Path) -> None:
                self.policy.save_pretrained(folder, state_dict=weights, safe_serialization=True)
                self.tokenizer.save_pretrained(folder)

            ckpt.write_checkpoint(
                self.run_dir, step, save_model=save_model,
                optimizer_state={"optimizer": opt_state, "scheduler": self.scheduler.state_dict()},
                rng_states=rng_states,
                trainer_state={"step": step, "pools": pool_states, "world_size": dist.world_size,
                               "tensor_parallel_size": dist.tensor_parallel_size},
                config_yaml=yaml.safe_dump(to_dict(cfg), sort_keys=False), keep_last=cfg.checkpoint.keep_last,
            )
        dist.barrier()

    def push_weights(self) -> None:
        """The engine samples from the updated policy from now on."""
        self.engine.update_weights(self.policy.state_dict().items())
        self.engine.wake_up()


def load_policy(name_or_path, dtype: str, gradient_checkpointing: bool, dist: DistContext):
    """(policy, tokenizer) on this rank's device, dropout off: the loss's log-probs must be the sampler's."""
    from r3fast.models import load

    model, tokenizer = load(name_or_path, dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype],
                            device=str(dist.device))
    model.eval()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def rollout_engine(cfg: TrainConfig, policy: nn.Module, tokenizer, weights, dist: DistContext) -> RolloutEngine:
    """This rank's engine: hf decodes with the policy itself; vllm starts from `weights` (the model or the
    resumed checkpoint's folder) and gets every update pushed."""
    kind = resolve_engine(cfg.rollout.engine)
    if kind == "hf" and dist.strategy == "fsdp2":
        raise ValueError("rollout.engine=hf samples with the policy itself, which distributed.strategy=fsdp2 "
                         "shards across ranks; use rollout.engine=vllm or distributed.strategy=ddp")
    if kind == "hf" and dist.tensor_parallel_size > 1:
        raise ValueError(f"config key 'rollout.tensor_parallel_size' ({dist.tensor_parallel_size}) > 1 needs "
                         f"rollout.engine=vllm; rollout.engine={cfg.rollout.engine} resolved to hf")
    if kind == "hf":
        return make_engine("hf", policy=policy, tokenizer=tokenizer, batch_size=cfg.rollout.batch_size)[0]
    from r3fast.engine_log import engine_stderr_to_log
    from r3fast.rollout.vllm import on_cpu

    # The engine gathers sharded (FSDP2) tensors one at a time as it loads them: no full copy.
    with engine_stderr_to_log():  # C++ notices at engine start go to engine.log too
        return make_engine("vllm", weights, policy=policy, tokenizer=tokenizer,
                           gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, enable_sleep_mode=not on_cpu(),
                           seed=cfg.seed + dist.data_rank, tensor_parallel_size=dist.tensor_parallel_size)[0]
