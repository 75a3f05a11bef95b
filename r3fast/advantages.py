"""Group-normalised advantages (GRPO) and the groups that carry no learning signal.

A group is every reflection sampled for one failed attempt. Each reflection's advantage is its
reward minus the group mean, divided by the group's standard deviation (+ eps) when `scale_std`.
A group whose rewards are all equal has zero advantages everywhere: it teaches nothing, yet its
samples still count in the loss's normalisation (as in TRL), and it is reported so a run can see
how much of its sampling was wasted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class GroupAdvantages:
    advantages: list[float]            # one per reward, in input order
    flat_groups: list[int]             # group ids whose rewards are all equal (no signal), sorted
    group_sizes: dict[int, int]        # group id -> number of rewards in it

    def has_signal(self, group_id: int) -> bool:
        return group_id not in self.flat_groups


def group_advantages(
    rewards: Sequence[float], group_ids: Sequence[int], *, scale_std: bool = True, eps: float = 1e-4
) -> GroupAdvantages:
    """(reward - group mean) / (group std + eps), or without the division when `scale_std` is False.

    The std is the population std (divide by the group size), as in the R3 and DeepSeekMath
    formulations; a group of one has std 0 and advantage 0.
    """
    if len(rewards) != len(group_ids):
        raise ValueError(f"rewards ({len(rewards)}) and group_ids ({len(group_ids)}) must have the same length")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not rewards:
        return GroupAdvantages([], [], {})
    r = torch.tensor(list(rewards), dtype=torch.float64)
    if not torch.isfinite(r).all():
        raise ValueError("rewards must be finite numbers")
    unique, inverse = torch.unique(torch.tensor(list(group_ids)), return_inverse=True)
    counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(r))
    mean = torch.zeros_like(counts).index_add_(0, inverse, r) / counts
    centred = r - mean[inverse]
    advantages = centred
    if scale_std:
        var = torch.zeros_like(counts).index_add_(0, inverse, centred**2) / counts
        advantages = centred / (var.sqrt()[inverse] + eps)
    low = torch.full_like(counts, torch.inf).scatter_reduce_(0, inverse, r, "amin")
    high = torch.full_like(counts, -torch.inf).scatter_reduce_(0, inverse, r, "amax")
    is_flat = low == high
    flat = sorted(int(g) for g, f in zip(unique.tolist(), is_flat.tolist(), strict=True) if f)
    # exact zeros for flat groups: rounding in the mean must not push a group with no signal
    advantages = torch.where(is_flat[inverse], torch.zeros_like(advantages), advantages)
    sizes = {int(g): int(c) for g, c in zip(unique.tolist(), counts.tolist(), strict=True)}
    return GroupAdvantages(advantages.tolist(), flat, sizes)


def assign_advantages(samples: Sequence, *, scale_rewards: bool = True) -> list[int]:
    """Set each sample's `.advantage` from the `.reward`s of its `.group_id`; returns the group ids
    with no signal. The one place both stages turn rewards into advantages."""
    result = group_advantages([s.reward for s in samples], [s.group_id for s in samples], scale_std=scale_rewards)
    for sample, advantage in zip(samples, result.advantages, strict=True):
        sample.advantage = advantage
    return result.flat_groups
