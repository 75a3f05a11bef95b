"""The GRPO objective per token, with its gradient in closed form.

Every path (torch chunks, Triton kernels, loss from precomputed logits) needs the same two
things per token: the loss term and d(loss)/d(logp). Both depend on logp only elementwise,
and the normalisation of each loss_type is a constant known from the mask alone, so a fused
path knows the gradient with respect to the logits as soon as a chunk's log-sum-exp is known.

The normalisations follow TRL's GRPOTrainer (per-sequence mean for "grpo", token mean over the
batch for "bnpo", a constant B * max_completion_length for "dr_grpo", and num_items_in_batch
for "dapo"). TRL's further division by the gradient-accumulation step count is the trainer's
business and is not applied here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 inputs, fp64 for fp64 (so gradcheck sees the exact math)."""
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class GRPOParams:
    beta: float = 0.0  # weight of the k3 KL term; needs ref_logp when > 0
    eps_low: float = 0.2  # ratio is clipped below at 1 - eps_low
    eps_high: float = 0.2  # ratio is clipped above at 1 + eps_high
    temperature: float = 1.0  # logits are divided by it before the softmax


def token_weights(
    mask: torch.Tensor,
    loss_type: str,
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Weights w with loss = sum(w * per_token_loss), same shape as mask ([B, T] or [N]).

    A 1-D mask is one sequence. Masked-out tokens get weight 0; an all-zero row gets all zeros.
    """
    m = mask.to(dtype)
    rows = m if m.dim() == 2 else m.unsqueeze(0)
    n_seqs = rows.shape[0]
    if loss_type == "grpo":
        per_row = rows / (rows.sum(-1, keepdim=True).clamp(min=1.0) * n_seqs)
        return per_row.reshape(m.shape)
    if loss_type == "bnpo":
        return m / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        length = rows.shape[-1] if max_completion_length is None else max_completion_length
        return m / float(n_seqs * length)
    if loss_type == "dapo":
        if num_items_in_batch is None:
            count = m.sum()
        else:
            count = torch.as_tensor(num_items_in_batch, dtype=dtype, device=m.device)
        return m / count.clamp(min=1.0)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


def token_loss_and_grad(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    params: GRPOParams,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token loss, d(loss)/d(logp) and the ratio, detached, in accumulation_dtype.

    loss = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A) + beta * k3_kl,
    r = exp(logp - old_logp) (old_logp = logp.detach() on-policy, so r == 1 with gradient A).
    The unclipped branch carries the gradient when it is the one min() picks; ties (r inside the
    clip range) count as unclipped, as torch.minimum's half-and-half split adds up to the same.
    """
    acc = accumulation_dtype(logp.dtype)
    logp = logp.detach().to(acc)
    adv = advantages.to(acc)
    ratio = torch.ones_like(logp) if old_logp is None else torch.exp(logp - old_logp.to(acc))
    clipped = ratio.clamp(1.0 - params.eps_low, 1.0 + params.eps_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    unclipped = ((adv > 0) & (ratio <= 1.0 + params.eps_high)) | ((adv < 0) & (ratio >= 1.0 - params.eps_low))
    grad = torch.where(unclipped, -adv * ratio, torch.zeros_like(ratio))
    if params.beta != 0.0:
        delta = ref_logp.to(acc) - logp
        ref_over_pi = torch.exp(delta)
        loss = loss + params.beta * (ref_over_pi - delta - 1.0)
        grad = grad + params.beta * (1.0 - ref_over_pi)
    return loss, grad, ratio


def summarize(
    logp: torch.Tensor,
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None,
    params: GRPOParams,
) -> dict[str, torch.Tensor]:
    """Detached metrics: token means over the mask, as TRL logs them."""
    m = mask.float()
    count = m.sum().clamp(min=1.0)

    def masked_mean(x: torch.Tensor) -> torch.Tensor:
        return (x.float() * m).sum() / count

    adv = advantages.float()
    if ref_logp is None:
        kl_mean = torch.zeros((), device=logp.device)
    else:
        delta = ref_logp.float() - logp.float()
        kl_mean = masked_mean(torch.exp(delta) - delta - 1.0)
    return {
        "logp": logp.detach(),
        "kl_mean": kl_mean.detach(),
        "clip_frac_low": masked_mean((ratio < 1.0 - params.eps_low) & (adv < 0)).detach(),
        "clip_frac_high": masked_mean((ratio > 1.0 + params.eps_high) & (adv > 0)).detach(),
        "ratio_mean": masked_mean(ratio).detach(),
    }
