"""Chunk steps of the fused lm_head + GRPO loss in plain torch: the CPU path and the fallback.

A chunk of tokens gets its logits in one buffer, which is turned into probabilities and then
into d(loss)/d(logits) in place, so a chunk costs one [rows, vocab] buffer and nothing more.
The weight gradient accumulates with addmm_ into one buffer in the accumulation dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .grpo_math import accumulation_dtype

# Bytes of one chunk's logits buffer. 80 MiB (138 rows at Qwen's 151,936 vocab) keeps the extra
# peak within 1.3x the weight gradient at Qwen2.5-0.5B sizes, and the matmuls stay large enough
# to run at full speed on CPU.
CHUNK_BYTES = 80 * 1024 * 1024


def rows_per_chunk(vocab: int, dtype: torch.dtype) -> int:
    item = torch.empty((), dtype=accumulation_dtype(dtype)).element_size()
    return max(1, CHUNK_BYTES // (vocab * item))


# Elements of the temporary that the entropy of a chunk goes through, one row block at a time.
ENTROPY_BLOCK_ELEMS = 1 << 20


def logits_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the per-chunk logits buffer the caller allocates once and passes to chunk_forward."""
    return accumulation_dtype(dtype)


@dataclass
class ChunkState:
    exps: torch.Tensor  # [rows, vocab] exp(logits - row max), overwritten by the logit gradient
    sum_exp: torch.Tensor  # [rows, 1] row sums of exps


def chunk_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target_ids: torch.Tensor,
    temperature: float,
    out: torch.Tensor,
) -> tuple[ChunkState, torch.Tensor, torch.Tensor]:
    """Log-prob of each row's target, each row's entropy (of the tempered softmax), and the state
    chunk_backward needs; logp and entropy in the accumulation dtype. hidden is [rows, H];
    out is a [rows, vocab] buffer of logits_dtype, reused across chunks (no fresh pages each time)."""
    if out.dtype == hidden.dtype:
        if bias is None:
            torch.mm(hidden, weight.T, out=out)
        else:
            torch.addmm(bias, hidden, weight.T, out=out)
    else:  # bf16/fp16: the matmul accumulates in fp32 internally, its output is upcast once
        out.copy_(hidden @ weight.T if bias is None else torch.addmm(bias, hidden, weight.T))
    sum_exp, logp, entropy = logits_to_exps_(out, target_ids, temperature)
    return ChunkState(out, sum_exp), logp, entropy


def logits_to_exps_(
    logits: torch.Tensor, target_ids: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Overwrites logits [rows, V] with exp(logits / temperature - row max); returns the row sums
    of that, the targets' logp and each row's entropy. The softmax is exps / sum_exp, left
    undivided to save a pass."""
    if temperature != 1.0:
        logits.mul_(1.0 / temperature)
    target_logit = logits.gather(1, target_ids.unsqueeze(1)).squeeze(1)
    row_max = logits.amax(dim=1, keepdim=True)
    shifted = logits.sub_(row_max)
    # entropy = log S - sum(e * z) / S, with z the shifted logits and e = exp(z), S = sum(e): each
    # row block's exps go to a small scratch, are dotted with z, then written over z.
    e_dot_z = torch.empty((shifted.shape[0], 1), dtype=shifted.dtype, device=shifted.device)
    block = max(1, ENTROPY_BLOCK_ELEMS // max(1, shifted.shape[1]))
    scratch = torch.empty((min(block, shifted.shape[0]), shifted.shape[1]), dtype=shifted.dtype,
                          device=shifted.device)
    for start in range(0, shifted.shape[0], block):
        z = shifted[start : start + block]
        e = torch.exp(z, out=scratch[: z.shape[0]])
        torch.sum(z.mul_(e), dim=1, keepdim=True, out=e_dot_z[start : start + block])
        z.copy_(e)
    exps = shifted
    sum_exp = exps.sum(dim=1, keepdim=True)
    log_sum = sum_exp.log()
    entropy = (log_sum - e_dot_z / sum_exp).squeeze(1)
    return sum_exp, target_logit - (row_max + log_sum).squeeze(1), entropy


def exps_to_dlogits_(
    exps: torch.Tensor, sum_exp: torch.Tensor, target_ids: torch.Tensor, coef: torch.Tensor
) -> torch.Tensor:
    """Overwrites exps with d(loss)/d(logits) = coef * (onehot(target) - exps / sum_exp)."""
    dlogits = exps.mul_(-coef.unsqueeze(1) / sum_exp)
    rows = torch.arange(dlogits.shape[0], device=dlogits.device)
    return dlogits.index_put_((rows, target_ids), coef.to(dlogits.dtype), accumulate=True)


def chunk_backward(
    state: ChunkState,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target_ids: torch.Tensor,
    coef: torch.Tensor,
    grad_weight: torch.Tensor | None,
    grad_bias: torch.Tensor | None,
    need_grad_hidden: bool,
) -> torch.Tensor | None:
    """Turns the chunk into gradients, given coef = d(loss)/d(logp) / temperature per row, so that
    d(loss)/d(logits) = coef * (onehot(target) - softmax). Accumulates into grad_weight and
    grad_bias (either may be None) and returns the chunk's hidden gradient if asked for."""
    dlogits = exps_to_dlogits_(state.exps, state.sum_exp, target_ids, coef)
    if grad_weight is not None:
        grad_weight.addmm_(dlogits.T, hidden.to(grad_weight.dtype))
    if grad_bias is not None:
        grad_bias.add_(dlogits.sum(dim=0))
    return dlogits.to(weight.dtype) @ weight if need_grad_hidden else None
