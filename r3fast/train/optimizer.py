"""AdamW and its learning-rate schedule: linear warm-up, then constant or cosine."""

from __future__ import annotations

import math
import warnings

import torch


def build_optimizer(parameters, *, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                    steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float, sft_steps: int = 0,
                    sft_lr: float = 0.0):
    """(AdamW, its LambdaLR schedule) over `parameters`; the first `sft_steps` train at `sft_lr` when it is set."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    factor = lr_factor(steps=steps, warmup_steps=warmup_steps, schedule=schedule, min_lr_ratio=min_lr_ratio,
                       sft_steps=sft_steps, sft_scale=sft_lr / lr if sft_lr else 1.0)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_factor(*, steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float, sft_steps: int = 0,
              sft_scale: float = 1.0):
    """Multiplier of the peak LR at each training step: linear warm-up, then constant or cosine.
    The first `sft_steps` (the supervised stage) are further scaled by `sft_scale`: imitation
    wants a larger step than policy gradient, and both share one AdamW."""

    def shape(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def factor(step: int) -> float:
        return (sft_scale if step < sft_steps else 1.0) * shape(step)

    return factor


def advance_schedule(scheduler) -> float:
    """Step the schedule once per training step; returns the LR the step trained with."""
    lr = scheduler.get_last_lr()[0]
    with warnings.catch_warnings():
        # The LR follows training steps, also those with no group carrying signal (no optimizer step).
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        scheduler.step()
    return lr
