"""The GRPO objective, written once: per-token loss and d(loss)/d(logp), and the batch-level terms.

Every path (torch chunks, Triton kernels, loss from precomputed logits) needs the same thing per
token: its weighted loss and d(loss)/d(logp). With token-level ratios both depend on the token's
own logp only, and each loss_type's normalisation is a constant known from the mask, so a fused
path knows the gradient with respect to the logits as soon as a chunk's log-sum-exp is known.

Three options couple the tokens of a batch, and batch_terms settles them before the fused pass:
  - importance_sampling_level="sequence" (GSPO): the ratio is exp(mean over the sequence's masked
    tokens of logp - old_logp), so d(loss)/d(logp_t) is a sum over the whole sequence;
  - sampling_correction="sequence_*": the weight is exp(sum over the sequence of old - sampling);
  - top_entropy_quantile < 1: the entropy threshold is a quantile over the batch's masked tokens.
Where these need the policy's own logp or entropy (off-policy GSPO, sequence_* correction without
old_logp, the entropy quantile), needs_first_pass says so and the fused op runs one no-grad pass
for logp and entropy first; everything after it is elementwise again. On-policy GSPO needs no
such pass: its ratio is exactly 1 and d(ratio)/d(logp_t) = mask_t / L (the sequence length).

The semantics are TRL 1.16's GRPOTrainer._compute_loss: the sampling weight and the entropy keep
mask multiply the policy term, not the KL term; normalisations per loss_type ("grpo" per-sequence
mean, "bnpo" token mean of the batch, "dr_grpo" B * max_completion_length, "dapo" and "cispo"
num_items_in_batch). TRL's division by the gradient-accumulation step count is the trainer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
SAMPLING_CORRECTIONS = (None, "token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 inputs, fp64 for fp64 (so gradcheck sees the exact math)."""
    return torch.promote_types(dtype, torch.float32)


@dataclass(frozen=True)
class GRPOParams:
    beta: float = 0.0  # weight of the k3 KL term; needs ref_logp when > 0
    eps_low: float = 0.2  # ratio is clipped below at 1 - eps_low
    eps_high: float = 0.2  # ratio is clipped above at 1 + eps_high (cispo: the ratio's cap itself)
    temperature: float = 1.0  # logits are divided by it before the softmax
    loss_type: str = "grpo"  # "cispo" changes the policy term; every type has its normalisation
    importance_sampling_level: str = "token"  # "sequence": GSPO's per-sequence ratio
    sampling_correction: str | None = None  # weight of the sampler-trainer mismatch, see sampling_weight
    sampling_cap: float = 3.0  # sampling weights above it are truncated to it or masked to 0
    top_entropy_quantile: float = 1.0  # share of masked tokens, highest entropy first, that get the policy term
    kl_bias_correction: bool = False  # KL term times the (differentiable) ratio: TRL's use_bias_correction_kl

    @property
    def sequence_level(self) -> bool:
        return self.importance_sampling_level == "sequence"

    @property
    def token_correction(self) -> bool:
        return self.sampling_correction in ("token_truncate", "token_mask")

    @property
    def sequence_correction(self) -> bool:
        return self.sampling_correction in ("sequence_truncate", "sequence_mask")


@dataclass
class LossBatch:
    """The loss inputs that carry no gradient, as [B, T] (a flat sequence of N tokens is [1, N])."""

    advantages: torch.Tensor  # [B, T] (per-sequence advantages broadcast)
    mask: torch.Tensor  # [B, T] as given (bool or real)
    weights: torch.Tensor  # [B, T] token_weights: loss = sum(weights * per-token loss)
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    sampling_logp: torch.Tensor | None = None


def needs_first_pass(params: GRPOParams, has_old_logp: bool) -> bool:
    """Whether the coefficients of the fused pass need every masked token's logp or entropy first."""
    if params.top_entropy_quantile < 1.0:
        return True
    if params.sequence_correction and not has_old_logp:
        return True
    if params.sequence_level:
        # Off-policy the sequence ratio needs all logp; on-policy it is 1, unless the terms summed
        # into the sequence gradient depend on logp (token correction against logp itself, or the
        # ratio-weighted KL).
        return (has_old_logp or (params.token_correction and params.loss_type != "cispo")
                or (params.kl_bias_correction and params.beta != 0.0))
    return False


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
    if loss_type in ("dapo", "cispo"):
        if num_items_in_batch is None:
            count = m.sum()
        else:
            count = torch.as_tensor(num_items_in_batch, dtype=dtype, device=m.device)
        return m / count.clamp(min=1.0)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


# ---- the pieces, each defined once ----


def sampling_log_ratio(own_logp: torch.Tensor, sampling_logp: torch.Tensor, mask: torch.Tensor,
                       params: GRPOParams) -> torch.Tensor:
    """log(trainer / sampler probability) per token ([B, T]), or summed per sequence ([B, 1]) for the
    sequence_* modes. Masked-out tokens and missing (NaN) sampler log-probs contribute 0, as in TRL."""
    diff = torch.nan_to_num((own_logp - sampling_logp.to(own_logp.dtype)) * mask.to(own_logp.dtype), nan=0.0)
    return diff.sum(-1, keepdim=True) if params.sequence_correction else diff


def sampling_weight(log_ratio: torch.Tensor, params: GRPOParams) -> torch.Tensor:
    """exp(log_ratio), truncated at the cap (*_truncate) or set to 0 above it (*_mask)."""
    ratio = torch.exp(log_ratio)
    if params.sampling_correction.endswith("truncate"):
        return ratio.clamp(max=params.sampling_cap)
    return torch.where(ratio > params.sampling_cap, torch.zeros_like(ratio), ratio)


def sequence_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's [B, 1] ratio: exp of the mean over each sequence's masked tokens of logp - old_logp."""
    m = mask.to(logp.dtype)
    log_ratio = torch.where(m != 0, logp - old_logp, torch.zeros_like(logp))  # off-mask values may be anything
    return torch.exp((log_ratio * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp(min=1.0))


def entropy_keep_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """Tokens among the masked ones whose entropy reaches the (1 - quantile) quantile of the masked
    tokens' entropies (linear interpolation, TRL's torch.quantile); none when nothing is masked."""
    on = mask != 0
    # threshold and comparison in one dtype (at least fp32, which torch.quantile needs): a threshold
    # rounded to another dtype can drop the very token it was computed from
    wide = torch.promote_types(entropy.dtype, torch.float32)
    masked = entropy[on].to(wide)
    if masked.numel() == 0:
        return torch.zeros_like(on)
    threshold = torch.quantile(masked, 1.0 - quantile)
    return ((entropy * mask.to(entropy.dtype)).to(wide) >= threshold) & on  # TRL compares entropy * mask


def k3_kl(ref_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(pi || ref) per token: exp(ref - logp) - (ref - logp) - 1."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def policy_term(ratio: torch.Tensor, advantages: torch.Tensor, logp: torch.Tensor,
                params: GRPOParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy loss per token, its derivative in the ratio, and its direct derivative in logp.

    Clipped types: -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A); the unclipped branch carries
    the gradient when min() picks it, ties (r inside the range) count as unclipped (torch.minimum's
    half-and-half split adds up to the same). cispo: -min(r, eps_high).detach() * A * logp.
    """
    if params.loss_type == "cispo":
        capped = ratio.clamp(max=params.eps_high)
        return -capped * advantages * logp, torch.zeros_like(ratio), -capped * advantages
    clipped = ratio.clamp(1.0 - params.eps_low, 1.0 + params.eps_high)
    value = -torch.minimum(ratio * advantages, clipped * advantages)
    unclipped = (((advantages > 0) & (ratio <= 1.0 + params.eps_high))
                 | ((advantages < 0) & (ratio >= 1.0 - params.eps_low)))
    d_ratio = torch.where(unclipped, -advantages, torch.zeros_like(ratio))
    return value, d_ratio, torch.zeros_like(ratio)


# ---- the batch-level terms, fixed before the fused pass ----


def batch_terms(batch: LossBatch, params: GRPOParams, logp: torch.Tensor | None = None,
                entropy: torch.Tensor | None = None) -> dict[str, torch.Tensor | None]:
    """Per-token inputs of token_loss_and_grad, flat [B * T], in the accumulation dtype.

    logp and entropy ([B, T], masked tokens filled) are needed where needs_first_pass says so.
    "policy_scale": sequence sampling weight x entropy keep mask (None when neither applies);
    "seq_ratio": GSPO's ratio of the token's sequence; "seq_grad": d(total loss)/d(logp) through it
    (of the policy terms, cispo's excepted as its ratio is detached, and of the ratio-weighted KL).
    """
    acc = accumulation_dtype(batch.weights.dtype)
    m = batch.mask.to(acc)
    adv = batch.advantages.to(acc)
    weights = batch.weights.to(acc)
    own_old = batch.old_logp.to(acc) if batch.old_logp is not None else logp
    scale = None
    if params.sequence_correction:
        scale = sampling_weight(sampling_log_ratio(own_old, batch.sampling_logp, m, params), params).expand_as(m)
    if params.top_entropy_quantile < 1.0:
        keep = entropy_keep_mask(entropy, batch.mask, params.top_entropy_quantile).to(acc)
        scale = keep if scale is None else scale * keep
    seq_ratio = seq_grad = None
    if params.sequence_level:
        ratio = torch.ones_like(m[:, :1]) if batch.old_logp is None else sequence_ratio(logp, own_old, m)
        seq_ratio = ratio.expand_as(m)
        d_total = torch.zeros_like(m)  # d(total loss)/d(ratio), per token, summed per sequence below
        if params.loss_type != "cispo":  # cispo's ratio is detached: no gradient through it
            c = torch.ones_like(m) if scale is None else scale
            if params.token_correction:
                c = c * sampling_weight(sampling_log_ratio(own_old, batch.sampling_logp, m, params), params)
            _, d_ratio, _ = policy_term(seq_ratio, adv, seq_ratio, params)
            d_total = d_total + weights * c * d_ratio
        if params.kl_bias_correction and params.beta != 0.0:
            d_total = d_total + weights * params.beta * k3_kl(batch.ref_logp.to(acc), logp)
        if params.loss_type != "cispo" or (params.kl_bias_correction and params.beta != 0.0):
            per_seq = d_total.sum(-1, keepdim=True)
            seq_grad = per_seq * ratio * m / m.sum(-1, keepdim=True).clamp(min=1.0)

    def flat(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.reshape(-1)

    return {
        "advantages": flat(adv), "weights": flat(weights), "mask": flat(m),
        "old_logp": flat(batch.old_logp), "ref_logp": flat(batch.ref_logp), "sampling_logp": flat(batch.sampling_logp),
        "policy_scale": flat(scale), "seq_ratio": flat(seq_ratio), "seq_grad": flat(seq_grad),
    }


def contributing_tokens(terms: dict, params: GRPOParams) -> torch.Tensor:
    """Flat positions whose loss or gradient can be non-zero: weight != 0, and a policy term not
    zeroed by policy_scale, or a KL term, or a gradient through the sequence ratio."""
    on = terms["weights"] != 0
    if terms["policy_scale"] is not None and params.beta == 0.0:
        live = terms["policy_scale"] != 0
        if terms["seq_grad"] is not None:
            live = live | (terms["seq_grad"] != 0)
        on = on & live
    return on.nonzero().squeeze(1)


def take(terms: dict, index: torch.Tensor) -> dict:
    """The terms of the tokens at index (flat positions)."""
    return {k: None if v is None else v.index_select(0, index) for k, v in terms.items()}


# ---- per token: what every chunk of every path evaluates ----


def token_loss_and_grad(
    logp: torch.Tensor,
    params: GRPOParams,
    *,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    sampling_logp: torch.Tensor | None = None,
    policy_scale: torch.Tensor | None = None,
    seq_ratio: torch.Tensor | None = None,
    seq_grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted per-token loss and d(total loss)/d(logp), detached, in accumulation_dtype.

    loss_t = w_t * (c_t * policy(r_t, A_t) + beta * k3_kl_t [* r_t with kl_bias_correction]),
    with r_t = exp(logp - old_logp)
    (old_logp = logp.detach() on-policy, so r == 1 with gradient A), or the sequence's ratio;
    c_t = the sampling weight x the entropy keep mask. The arguments are batch_terms' entries.
    """
    acc = accumulation_dtype(logp.dtype)
    logp = logp.detach().to(acc)
    own_old = logp if old_logp is None else old_logp.to(acc)
    ratio = torch.exp(logp - own_old) if seq_ratio is None else seq_ratio
    scale = torch.ones_like(logp) if policy_scale is None else policy_scale
    if params.token_correction:
        scale = scale * sampling_weight(sampling_log_ratio(own_old, sampling_logp, mask, params), params)
    value, d_ratio, d_logp = policy_term(ratio, advantages, logp, params)
    loss = scale * value
    grad = scale * d_logp if seq_ratio is not None else scale * (d_ratio * ratio + d_logp)
    if params.beta != 0.0:
        kl = k3_kl(ref_logp.to(acc), logp)
        d_kl = 1.0 - torch.exp(ref_logp.to(acc) - logp)
        if params.kl_bias_correction:  # beta * kl * r: through r per token, or via seq_grad for GSPO
            loss = loss + params.beta * kl * ratio
            grad = grad + params.beta * (d_kl + (kl if seq_ratio is None else 0.0)) * ratio
        else:
            loss = loss + params.beta * kl
            grad = grad + params.beta * d_kl
    loss, grad = weights * loss, weights * grad
    if seq_grad is not None:
        grad = grad + seq_grad
    return loss, grad


def summarize(logp: torch.Tensor, entropy: torch.Tensor, batch: LossBatch, params: GRPOParams) -> dict:
    """Detached metrics from logp and entropy ([B, T], 0 off the mask): token means over the mask.

    Ratios are per token, or each token's sequence ratio for importance_sampling_level="sequence".
    """
    on = batch.mask != 0
    m = on.float()
    count = m.sum().clamp(min=1.0)

    def masked_mean(x: torch.Tensor) -> torch.Tensor:
        return torch.where(on, x.float(), 0.0).sum() / count

    logp32 = logp.float()
    adv = batch.advantages.float()
    own_old = logp32 if batch.old_logp is None else batch.old_logp.float()
    if params.sequence_level:
        ratio = sequence_ratio(logp32, own_old, batch.mask).expand_as(logp32)
    else:
        ratio = torch.exp(logp32 - own_old)
    if params.loss_type == "cispo":
        clip_low = torch.zeros_like(on)
        clip_high = (ratio > params.eps_high) & (adv > 0)
    else:
        clip_low = (ratio < 1.0 - params.eps_low) & (adv < 0)
        clip_high = (ratio > 1.0 + params.eps_high) & (adv > 0)
    if batch.ref_logp is None:
        kl_mean = torch.zeros((), device=logp.device)
    else:
        kl_mean = masked_mean(k3_kl(batch.ref_logp.float(), logp32))
    if params.sampling_correction is None:
        is_weight, is_clipped = torch.ones_like(logp32), torch.zeros_like(on)
    else:
        log_ratio = sampling_log_ratio(own_old, batch.sampling_logp, batch.mask, params)
        is_weight = sampling_weight(log_ratio, params).expand_as(logp32)
        is_clipped = (torch.exp(log_ratio) > params.sampling_cap).expand_as(on)
    return {
        "logp": logp.detach(),
        "entropy": entropy.detach(),
        "entropy_mean": masked_mean(entropy).detach(),
        "kl_mean": kl_mean.detach(),
        "clip_frac_low": masked_mean(clip_low).detach(),
        "clip_frac_high": masked_mean(clip_high).detach(),
        "ratio_mean": masked_mean(ratio).detach(),
        "is_weight_mean": masked_mean(is_weight).detach(),
        "is_clipped_frac": masked_mean(is_clipped).detach(),
    }
