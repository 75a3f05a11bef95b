"""Naive GRPO loss written straight from the formula, differentiated by autograd.

logits -> log_softmax -> gather -> importance ratio (per token or per sequence) -> clipped surrogate
or CISPO -> sampling-mismatch weight and entropy keep mask -> + k3 KL -> TRL's normalisation, in the
order of TRL 1.16's GRPOTrainer._compute_loss. It holds
the full [tokens, vocab] logits (and autograd keeps more copies), so it is the oracle that tests
and benches compare against, never a path to train with. It shares no code with the fused paths
on purpose: a mistake there cannot hide by being repeated here.
"""

from __future__ import annotations

import torch


def reference_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target_ids: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    temperature: float = 1.0,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    **options,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (loss, per-token logp); inputs as for fused_linear_grpo_loss (options: sampling_logp,
    sampling_correction, sampling_cap, importance_sampling_level, top_entropy_quantile, kl_bias_correction)."""
    acc = torch.promote_types(hidden.dtype, torch.float32)
    logits = hidden.to(acc) @ weight.to(acc).T
    if bias is not None:
        logits = logits + bias.to(acc)
    return reference_grpo_loss_from_logits(
        logits / temperature, target_ids, advantages, mask,
        old_logp=old_logp, ref_logp=ref_logp, beta=beta, eps_low=eps_low, eps_high=eps_high,
        loss_type=loss_type, max_completion_length=max_completion_length,
        num_items_in_batch=num_items_in_batch, **options,
    )


def reference_grpo_loss_from_logits(
    logits: torch.Tensor,
    target_ids: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    sampling_logp: torch.Tensor | None = None,
    sampling_correction: str | None = None,
    sampling_cap: float = 3.0,
    importance_sampling_level: str = "token",
    top_entropy_quantile: float = 1.0,
    kl_bias_correction: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same, from logits already divided by the temperature."""
    one_sequence = target_ids.dim() == 1
    if one_sequence:  # a flat batch of tokens is one sequence
        logits, target_ids, mask = logits.unsqueeze(0), target_ids.unsqueeze(0), mask.unsqueeze(0)
        advantages = advantages.reshape(1, -1)
        old_logp = None if old_logp is None else old_logp.unsqueeze(0)
        ref_logp = None if ref_logp is None else ref_logp.unsqueeze(0)
        sampling_logp = None if sampling_logp is None else sampling_logp.unsqueeze(0)
    acc = torch.promote_types(logits.dtype, torch.float32)
    log_probs = torch.log_softmax(logits.to(acc), dim=-1)
    logp = log_probs.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).detach()
    adv = advantages.to(acc)
    if adv.dim() == 1:
        adv = adv.unsqueeze(1)
    m = mask.to(acc)
    old = logp.detach() if old_logp is None else old_logp.to(acc)
    if importance_sampling_level == "sequence":
        ratio = torch.exp(((logp - old) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0))
    else:
        ratio = torch.exp(logp - old)
    if loss_type == "cispo":
        per_token = -torch.clamp(ratio, max=eps_high).detach() * adv * logp
    else:
        clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
        per_token = -torch.min(ratio * adv, clipped * adv)
    per_token = per_token.expand(logp.shape)
    if top_entropy_quantile < 1.0:
        masked_entropy = entropy[mask.bool()]
        if masked_entropy.numel() == 0:
            keep = torch.zeros_like(mask, dtype=torch.bool)
        else:
            # threshold and comparison in one dtype (at least fp32, which torch.quantile needs): a
            # threshold rounded to another dtype can drop the very token it was computed from
            wide = torch.promote_types(entropy.dtype, torch.float32)
            threshold = torch.quantile(masked_entropy.to(wide), 1 - top_entropy_quantile)
            keep = ((entropy * m).to(wide) >= threshold) & mask.bool()
        per_token = per_token * keep
    if sampling_correction is not None:
        diff = torch.nan_to_num((old - sampling_logp.to(acc)) * m, nan=0.0)
        if sampling_correction.startswith("sequence"):
            diff = diff.sum(-1, keepdim=True)
        weight = torch.exp(diff)
        if sampling_correction.endswith("truncate"):
            weight = torch.clamp(weight, max=sampling_cap)
        else:
            weight = weight.masked_fill(weight > sampling_cap, 0.0)
        per_token = per_token * weight.detach()
    if beta != 0.0:
        diff = ref_logp.to(acc) - logp
        kl = torch.exp(diff) - diff - 1
        per_token = per_token + beta * (kl * ratio if kl_bias_correction else kl)
    if loss_type == "grpo":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        length = m.shape[-1] if max_completion_length is None else max_completion_length
        loss = (per_token * m).sum() / (per_token.shape[0] * length)
    elif loss_type in ("dapo", "cispo"):
        count = m.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=acc)
        loss = (per_token * m).sum() / count.clamp(min=1.0)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    return loss, (logp.squeeze(0) if one_sequence else logp).detach()


def reference_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim (logits already divided by the temperature)."""
    return torch.distributions.Categorical(logits=logits.double()).entropy()
