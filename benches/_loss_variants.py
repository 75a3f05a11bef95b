"""The GRPO loss implementations the loss bench compares, each as forward + backward on one input set.

Shared by bench_loss.py (timing) and _loss_peak_rss.py (peak memory in a fresh process).
The plain variants compute the same loss: on-policy GRPO ("grpo" normalisation), beta = 0, fp32.
The *_tis variants add TRL 1.16's default sampler correction (sequence_mask, cap 3) against
sampler log-probs 1e-2 off per token, on-policy; the *_gspo variants are GSPO (sequence-level
ratio) off-policy. TRL's path takes the same options as its _compute_loss applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Size:
    batch: int  # sequences
    seq_len: int  # tokens per sequence
    hidden: int  # model width
    vocab: int  # lm_head rows

    @property
    def weight_grad_mb(self) -> float:
        return self.vocab * self.hidden * 4 / 1e6


SIZES = {
    "small": Size(batch=4, seq_len=128, hidden=256, vocab=32_000),
    # Qwen2.5-0.5B: 2048 tokens, H=896, V=151,936.
    "qwen": Size(batch=8, seq_len=256, hidden=896, vocab=151_936),
}
# Tiny problems that load each variant's code before anything is timed or measured.
WARMUP = {name: Size(batch=2, seq_len=s.seq_len, hidden=16, vocab=64) for name, s in SIZES.items()}


def make_inputs(size: Size, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden": torch.randn(size.batch, size.seq_len, size.hidden, generator=g).requires_grad_(),
        "weight": (torch.randn(size.vocab, size.hidden, generator=g) / size.hidden**0.5).requires_grad_(),
        "target_ids": torch.randint(0, size.vocab, (size.batch, size.seq_len), generator=g),
        "advantages": torch.randn(size.batch, generator=g),
        "mask": torch.ones(size.batch, size.seq_len),
    }


def make_variant_inputs(variant: str, size: Size, seed: int = 0) -> dict:
    """make_inputs, plus the sampler's (for *_tis) or the old policy's (for *_gspo) log-probs: the
    policy's own, off by Gaussian noise of 1e-2 (a bf16 sampler) or 5e-2 (a few optimiser steps)."""
    inputs = make_inputs(size, seed)
    if variant.endswith(("_tis", "_gspo")):
        from r3fast.kernels import selective_logprobs

        own = selective_logprobs(inputs["hidden"].detach(), inputs["weight"].detach(), inputs["target_ids"])
        g = torch.Generator().manual_seed(seed + 1)
        key, noise = ("sampling_logp", 1e-2) if variant.endswith("_tis") else ("old_logp", 5e-2)
        inputs[key] = own + noise * torch.randn(own.shape, generator=g)
    return inputs


def clear_grads(inputs: dict) -> None:
    inputs["hidden"].grad = None
    inputs["weight"].grad = None


def _grpo_from_logp(logp, advantages, mask, eps=0.2, old_logp=None, sequence_level=False, sampling_logp=None):
    """The clipped surrogate with the per-sequence mean, as TRL's GRPOTrainer computes it: optionally
    with GSPO's sequence ratio and the sequence_mask sampler weight (cap 3)."""
    old = logp.detach() if old_logp is None else old_logp
    log_ratio = logp - old
    if sequence_level:
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_ratio)
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps)
    adv = advantages.unsqueeze(1)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)
    if sampling_logp is not None:
        with torch.no_grad():  # TRL makes this weight before the loss, from a no-grad forward
            weight = torch.exp(torch.nan_to_num((old - sampling_logp) * mask, nan=0.0).sum(-1, keepdim=True))
            weight = weight.masked_fill(weight > 3.0, 0.0)
        per_token_loss = per_token_loss * weight
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def run_naive(x: dict) -> torch.Tensor:
    logits = x["hidden"] @ x["weight"].T
    logp = torch.log_softmax(logits, dim=-1).gather(-1, x["target_ids"].unsqueeze(-1)).squeeze(-1)
    loss = _grpo_from_logp(logp, x["advantages"], x["mask"])
    loss.backward()
    return loss


def run_trl(x: dict, **options) -> torch.Tensor:
    from trl.trainer.utils import selective_log_softmax

    logits = x["hidden"] @ x["weight"].T  # what the model's lm_head hands TRL
    logp = selective_log_softmax(logits, x["target_ids"])
    loss = _grpo_from_logp(logp, x["advantages"], x["mask"], **options)
    loss.backward()
    return loss


def run_trl_tis(x: dict) -> torch.Tensor:
    return run_trl(x, sampling_logp=x["sampling_logp"])


def run_trl_gspo(x: dict) -> torch.Tensor:
    return run_trl(x, old_logp=x["old_logp"], sequence_level=True)


_liger_losses: dict = {}


def run_liger(x: dict) -> torch.Tensor:
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    if "grpo" not in _liger_losses:
        # Eager: with torch 2.13 on CPU, Liger's default compiled=True dies in dynamo when the shape
        # changes between calls ("sources must not be empty for symbol"), and compiles ~15 s per process.
        _liger_losses["grpo"] = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, loss_type="grpo",
                                                         compiled=False)
    out = _liger_losses["grpo"](x["hidden"], x["weight"], x["target_ids"], x["mask"], x["advantages"])
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    return loss


def run_r3fast(x: dict, **options) -> torch.Tensor:
    from r3fast.kernels import fused_linear_grpo_loss

    loss, _ = fused_linear_grpo_loss(x["hidden"], x["weight"], x["target_ids"], x["advantages"], x["mask"],
                                     loss_type="grpo", **options)
    loss.backward()
    return loss


def run_r3fast_tis(x: dict) -> torch.Tensor:
    return run_r3fast(x, sampling_logp=x["sampling_logp"], sampling_correction="sequence_mask", sampling_cap=3.0)


def run_r3fast_gspo(x: dict) -> torch.Tensor:
    return run_r3fast(x, old_logp=x["old_logp"], importance_sampling_level="sequence")


VARIANTS = {"naive": run_naive, "trl": run_trl, "liger": run_liger, "r3fast": run_r3fast,
            "trl_tis": run_trl_tis, "r3fast_tis": run_r3fast_tis, "trl_gspo": run_trl_gspo,
            "r3fast_gspo": run_r3fast_gspo}
