"""Public entry points: check the inputs, flatten them to tokens, pick the backend, run the op.

Shapes: hidden [B, T, H] with target_ids [B, T], or hidden [N, H] with target_ids [N] (one
sequence of N tokens). advantages are per sequence [B] or per token (target_ids' shape).
"""

from __future__ import annotations

import math
from types import ModuleType

import torch

from .backend import resolve_backend
from .fused_linear_grpo import FusedLinearGRPOFunction
from .grpo_loss import GRPOFromLogitsFunction
from .grpo_math import (
    IMPORTANCE_SAMPLING_LEVELS,
    LOSS_TYPES,
    SAMPLING_CORRECTIONS,
    GRPOParams,
    LossBatch,
    accumulation_dtype,
    summarize,
    token_weights,
)
from .selective_logprobs import chunked_logprobs


def fused_linear_grpo_loss(
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
    sampling_logp: torch.Tensor | None = None,
    sampling_correction: str | None = None,
    sampling_cap: float = 3.0,
    importance_sampling_level: str = "token",
    top_entropy_quantile: float = 1.0,
    kl_bias_correction: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss of the tokens where mask != 0, from the last hidden states and the lm_head.

    Per token (TRL 1.16's GRPOTrainer._compute_loss), with logp taken after dividing the logits
    by temperature and old = old_logp (logp.detach() when None, i.e. on-policy):
      r = exp(logp - old), or with importance_sampling_level="sequence" (GSPO) the sequence's
          exp(mean over its masked tokens of logp - old), the gradient flowing through the mean;
      policy = -min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A), or for loss_type="cispo"
          -min(r, eps_high).detach() * A * logp;
      loss_t = c_t * policy + beta * k3_kl,  k3_kl = exp(ref - logp) - (ref - logp) - 1, times r
          (with its gradient) when kl_bias_correction (TRL's use_bias_correction_kl, on by default there);
      c_t = (sampling weight) x (entropy keep mask), detached:
        sampling weight: s = exp(old - sampling_logp) per token ("token_*"), or exp of its sum over
          the sequence's masked tokens ("sequence_*"); "*_truncate" min(s, sampling_cap),
          "*_mask" s where s <= sampling_cap else 0. NaN sampling_logp count as no mismatch.
        entropy keep mask (top_entropy_quantile = q < 1): the masked tokens whose entropy reaches
          the (1 - q) quantile of the masked tokens' entropies in this call (q = 0.2: the top 20%).
    then normalised as TRL does for loss_type ("grpo" per-sequence mean, "bnpo" token mean,
    "dr_grpo" B * max_completion_length (default T), "dapo" and "cispo" num_items_in_batch
    (default the mask's token count)).

    Off-policy GSPO, sequence_* correction without old_logp and top_entropy_quantile < 1 run one
    extra no-grad pass over the masked tokens for their logp and entropy (about 1.4x the time of
    plain grpo on CPU; the same peak memory).

    Returns (loss, metrics): metrics holds detached tensors "logp" and "entropy" (per token,
    target_ids' shape, 0 outside the mask; entropy of the tempered softmax), and token means over
    the mask: "entropy_mean", "kl_mean", "clip_frac_low", "clip_frac_high" (cispo: ratio > eps_high
    with A > 0), "ratio_mean" (GSPO: each token's sequence ratio), "is_weight_mean" (the sampling
    weight, 1 without correction) and "is_clipped_frac" (share whose sampling ratio exceeded the
    cap, so was truncated or masked).
    """
    _check_linear(hidden, weight, bias, target_ids)
    params, batch = _checked_loss_inputs(
        target_ids, advantages, mask, old_logp, ref_logp, sampling_logp, beta, eps_low, eps_high, temperature,
        loss_type, max_completion_length, num_items_in_batch, sampling_correction, sampling_cap,
        importance_sampling_level, top_entropy_quantile, kl_bias_correction, hidden)
    ops = _backend_ops(resolve_backend(backend, hidden.device, hidden.dtype))
    loss, logp, entropy = FusedLinearGRPOFunction.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, bias, target_ids.reshape(-1).long(), batch, params, ops,
    )
    return loss, _metrics(logp, entropy, batch, target_ids.shape, params)


def grpo_loss(
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
    temperature: float = 1.0,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    sampling_logp: torch.Tensor | None = None,
    sampling_correction: str | None = None,
    sampling_cap: float = 3.0,
    importance_sampling_level: str = "token",
    top_entropy_quantile: float = 1.0,
    kl_bias_correction: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """fused_linear_grpo_loss's math from logits [..., V] that already exist (target_ids' shape + V)."""
    _check_tensor("logits", logits, floating=True)
    if logits.dim() not in (2, 3):
        raise ValueError(f"logits must be [B, T, V] or [N, V], got shape {tuple(logits.shape)}")
    _check_targets(target_ids, logits.shape[:-1], logits.shape[-1], logits.device)
    params, batch = _checked_loss_inputs(
        target_ids, advantages, mask, old_logp, ref_logp, sampling_logp, beta, eps_low, eps_high, temperature,
        loss_type, max_completion_length, num_items_in_batch, sampling_correction, sampling_cap,
        importance_sampling_level, top_entropy_quantile, kl_bias_correction, logits)
    loss, logp, entropy = GRPOFromLogitsFunction.apply(
        logits.reshape(-1, logits.shape[-1]), target_ids.reshape(-1).long(), batch, params,
    )
    return loss, _metrics(logp, entropy, batch, target_ids.shape, params)


def selective_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target_ids: torch.Tensor,
    temperature: float = 1.0,
    *,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """log softmax(hidden @ weight.T + bias) / temperature) at target_ids, without gradient, in
    chunks (the full logits never exist). Shape of target_ids, fp32 (fp64 for fp64 inputs)."""
    _check_linear(hidden, weight, bias, target_ids)
    _check_temperature(temperature)
    ops = _backend_ops(resolve_backend(backend, hidden.device, hidden.dtype))
    logp, _ = chunked_logprobs(hidden.reshape(-1, hidden.shape[-1]), weight, bias, target_ids.reshape(-1).long(),
                               temperature, ops)
    return logp.reshape(target_ids.shape)


def _checked_loss_inputs(target_ids, advantages, mask, old_logp, ref_logp, sampling_logp, beta, eps_low, eps_high,
                         temperature, loss_type, max_completion_length, num_items_in_batch, sampling_correction,
                         sampling_cap, importance_sampling_level, top_entropy_quantile, kl_bias_correction,
                         values: torch.Tensor) -> tuple[GRPOParams, LossBatch]:
    """Both entry points' checks, then the loss options and the flat per-token batch (`values` is
    hidden or logits: the device and dtype the loss runs in)."""
    _check_loss_inputs(target_ids, advantages, mask, old_logp, ref_logp, sampling_logp, beta, eps_low, eps_high,
                       temperature, loss_type, max_completion_length, num_items_in_batch, sampling_correction,
                       sampling_cap, importance_sampling_level, top_entropy_quantile, kl_bias_correction,
                       device=values.device)
    params = GRPOParams(beta=beta, eps_low=eps_low, eps_high=eps_high, temperature=temperature, loss_type=loss_type,
                        importance_sampling_level=importance_sampling_level, sampling_correction=sampling_correction,
                        sampling_cap=sampling_cap, top_entropy_quantile=top_entropy_quantile,
                        kl_bias_correction=kl_bias_correction)
    batch = _loss_batch(target_ids, advantages, mask, old_logp, ref_logp, sampling_logp, loss_type,
                        max_completion_length, num_items_in_batch, accumulation_dtype(values.dtype))
    return params, batch


def _backend_ops(name: str) -> ModuleType:
    if name == "triton":
        from . import triton_fused  # imported on first use: triton is optional and slow to import

        return triton_fused
    from . import torch_fused

    return torch_fused


def _loss_batch(target_ids, advantages, mask, old_logp, ref_logp, sampling_logp, loss_type, max_completion_length,
                num_items_in_batch, dtype) -> LossBatch:
    """The inputs as [B, T]; a flat [N] call is one sequence, [1, N]."""
    rows = target_ids.shape if target_ids.dim() == 2 else (1, target_ids.shape[0])
    adv = advantages.unsqueeze(1) if (target_ids.dim() == 2 and advantages.dim() == 1) else advantages
    weights = token_weights(mask, loss_type, max_completion_length, num_items_in_batch, dtype=dtype)

    def as_rows(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.reshape(rows)

    return LossBatch(advantages=adv.expand(target_ids.shape).reshape(rows), mask=as_rows(mask),
                     weights=as_rows(weights), old_logp=as_rows(old_logp), ref_logp=as_rows(ref_logp),
                     sampling_logp=as_rows(sampling_logp))


def _metrics(logp, entropy, batch: LossBatch, shape, params) -> dict[str, torch.Tensor]:
    metrics = summarize(logp.view(batch.mask.shape), entropy.view(batch.mask.shape), batch, params)
    metrics["logp"] = metrics["logp"].reshape(shape)
    metrics["entropy"] = metrics["entropy"].reshape(shape)
    return metrics


# ---- input checks: every failure names the argument and what was expected ----


def _check_tensor(name: str, t, *, floating: bool = False) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_targets(target_ids, token_shape, vocab: int, device) -> None:
    _check_tensor("target_ids", target_ids)
    if target_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"target_ids must be int64 (or int32), got dtype {target_ids.dtype}")
    if tuple(target_ids.shape) != tuple(token_shape):
        raise ValueError(f"target_ids must have shape {tuple(token_shape)}, got {tuple(target_ids.shape)}")
    if target_ids.device != device:
        raise ValueError(f"target_ids is on {target_ids.device}, expected {device}")
    if target_ids.numel() and (int(target_ids.min()) < 0 or int(target_ids.max()) >= vocab):
        raise ValueError(f"target_ids must lie in [0, {vocab}), got values in "
                         f"[{int(target_ids.min())}, {int(target_ids.max())}]")


def _check_linear(hidden, weight, bias, target_ids) -> None:
    _check_tensor("hidden", hidden, floating=True)
    _check_tensor("weight", weight, floating=True)
    if hidden.dim() not in (2, 3):
        raise ValueError(f"hidden must be [B, T, H] or [N, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be [V, {hidden.shape[-1]}] (hidden's last dim), got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight dtype {weight.dtype} must match hidden dtype {hidden.dtype}")
    if weight.device != hidden.device:
        raise ValueError(f"weight is on {weight.device}, expected hidden's device {hidden.device}")
    if bias is not None:
        _check_tensor("bias", bias, floating=True)
        if tuple(bias.shape) != (weight.shape[0],) or bias.dtype != weight.dtype or bias.device != weight.device:
            raise ValueError(f"bias must be [{weight.shape[0]}] of dtype {weight.dtype} on {weight.device}, "
                             f"got {tuple(bias.shape)} {bias.dtype} on {bias.device}")
    _check_targets(target_ids, hidden.shape[:-1], weight.shape[0], hidden.device)


def _check_loss_inputs(target_ids, advantages, mask, old_logp, ref_logp, sampling_logp, beta, eps_low, eps_high,
                       temperature, loss_type, max_completion_length, num_items_in_batch, sampling_correction,
                       sampling_cap, importance_sampling_level, top_entropy_quantile, kl_bias_correction, *,
                       device) -> None:
    shape = tuple(target_ids.shape)
    _check_tensor("advantages", advantages, floating=True)
    per_sequence = (shape[0],) if len(shape) == 2 else None
    if tuple(advantages.shape) not in (shape, per_sequence):
        expected = f"{per_sequence} or {shape}" if per_sequence else f"{shape}"
        raise ValueError(f"advantages must have shape {expected}, got {tuple(advantages.shape)}")
    _check_tensor("mask", mask)
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask must have target_ids' shape {shape}, got {tuple(mask.shape)}")
    if mask.is_complex():
        raise ValueError(f"mask must be bool or real, got dtype {mask.dtype}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("sampling_logp", sampling_logp)):
        if t is None:
            continue
        _check_tensor(name, t, floating=True)
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have target_ids' shape {shape}, got {tuple(t.shape)}")
    for name, t in (("advantages", advantages), ("mask", mask), ("old_logp", old_logp), ("ref_logp", ref_logp),
                    ("sampling_logp", sampling_logp)):
        if t is not None and t.device != device:
            raise ValueError(f"{name} is on {t.device}, expected {device}")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if beta > 0 and ref_logp is None:
        raise ValueError("ref_logp is required when beta > 0 (the KL term needs the reference log-probs)")
    if not (isinstance(eps_low, (int, float)) and 0 <= eps_low < 1):
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low!r}")
    if not (isinstance(eps_high, (int, float)) and 0 <= eps_high and math.isfinite(eps_high)):
        raise ValueError(f"eps_high must be a finite number >= 0, got {eps_high!r}")
    _check_temperature(temperature)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if max_completion_length is not None and not (
        isinstance(max_completion_length, int) and max_completion_length > 0
    ):
        raise ValueError(f"max_completion_length must be a positive int, got {max_completion_length!r}")
    if num_items_in_batch is not None:
        count = float(num_items_in_batch) if isinstance(num_items_in_batch, (int, float)) else None
        if isinstance(num_items_in_batch, torch.Tensor) and num_items_in_batch.numel() == 1:
            count = float(num_items_in_batch)
        if count is None or not math.isfinite(count) or count < 0:
            raise ValueError(f"num_items_in_batch must be a finite count >= 0, got {num_items_in_batch!r}")
    _check_sampling(sampling_logp, sampling_correction, sampling_cap)
    if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
                         f"got {importance_sampling_level!r}")
    if not (isinstance(top_entropy_quantile, (int, float)) and 0 < top_entropy_quantile <= 1):
        raise ValueError(f"top_entropy_quantile must be in (0, 1], got {top_entropy_quantile!r}")
    if not isinstance(kl_bias_correction, bool):
        raise ValueError(f"kl_bias_correction must be a bool, got {kl_bias_correction!r}")


def _check_sampling(sampling_logp, sampling_correction, sampling_cap) -> None:
    if sampling_correction not in SAMPLING_CORRECTIONS:
        raise ValueError(f"sampling_correction must be one of {SAMPLING_CORRECTIONS}, got {sampling_correction!r}")
    if sampling_logp is not None and sampling_correction is None:
        raise ValueError("sampling_logp is given but sampling_correction is None; pick one of "
                         f"{SAMPLING_CORRECTIONS[1:]} (or drop sampling_logp)")
    if sampling_correction is not None and sampling_logp is None:
        raise ValueError(f"sampling_correction={sampling_correction!r} needs sampling_logp (the sampler's log-probs)")
    if not (isinstance(sampling_cap, (int, float)) and math.isfinite(sampling_cap) and sampling_cap > 1):
        raise ValueError(f"sampling_cap must be a finite number > 1, got {sampling_cap!r}")
