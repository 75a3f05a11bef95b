"""GRPO loss from logits that already exist (when the model hands back logits, not hidden states).

Same math and chunking as the fused op; the gradient of the logits is written straight into one
buffer of the logits' size (which backward has to return anyway), so no extra copies pile up.
Where the coefficients need every token's logp or entropy first (grpo_math.needs_first_pass), a
no-grad pass computes them chunk by chunk in one scratch buffer.
"""

from __future__ import annotations

import torch

from .fused_linear_grpo import scale_finished_grads
from .grpo_math import (
    GRPOParams,
    LossBatch,
    accumulation_dtype,
    batch_terms,
    needs_first_pass,
    token_loss_and_grad,
)
from .torch_fused import exps_to_dlogits_, logits_to_exps_, rows_per_chunk


class GRPOFromLogitsFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,  # [N, V], N = B * T
        target_ids: torch.Tensor,  # [N] int64
        batch: LossBatch,  # [B, T] inputs without gradient
        params: GRPOParams,
    ):
        acc = accumulation_dtype(logits.dtype)
        n_tokens, vocab = logits.shape
        keep_grad = ctx.needs_input_grad[0]
        step = rows_per_chunk(vocab, logits.dtype)
        terms = None
        if needs_first_pass(params, batch.old_logp is not None):
            logp, entropy = _logp_and_entropy(logits, target_ids, params.temperature, step)
            terms = batch_terms(batch, params, logp.view(batch.mask.shape), entropy.view(batch.mask.shape))
        else:
            terms = batch_terms(batch, params)
            logp = torch.empty(n_tokens, dtype=acc, device=logits.device)
            entropy = torch.empty(n_tokens, dtype=acc, device=logits.device)
        grad_logits = torch.empty((n_tokens, vocab), dtype=acc, device=logits.device) if keep_grad else None
        loss = torch.zeros((), dtype=acc, device=logits.device)
        for start in range(0, n_tokens, step):
            rows = slice(start, start + step)
            buf = grad_logits[rows] if keep_grad else torch.empty_like(logits[rows], dtype=acc)
            buf.copy_(logits[rows])
            targets = target_ids[rows]
            sum_exp, chunk_logp, chunk_entropy = logits_to_exps_(buf, targets, params.temperature)
            chunk_terms = {k: None if v is None else v[rows] for k, v in terms.items()}
            per_token, dloss_dlogp = token_loss_and_grad(chunk_logp, params, **chunk_terms)
            loss += per_token.sum()
            exps_to_dlogits_(buf, sum_exp, targets, dloss_dlogp / params.temperature)
            logp[rows] = chunk_logp
            entropy[rows] = chunk_entropy
        # Tokens outside the mask report logp and entropy 0, as in the fused op, which skips them.
        on_loss = batch.weights.reshape(-1) != 0
        logp = torch.where(on_loss, logp, torch.zeros_like(logp))
        entropy = torch.where(on_loss, entropy, torch.zeros_like(entropy))
        ctx.save_for_backward(None if grad_logits is None else grad_logits.to(logits.dtype))
        ctx.mark_non_differentiable(logp, entropy)
        return loss, logp, entropy

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_entropy):
        (grad_logits,) = scale_finished_grads(ctx, grad_loss)
        return grad_logits, None, None, None


@torch.no_grad()
def _logp_and_entropy(logits: torch.Tensor, target_ids: torch.Tensor, temperature: float,
                      step: int) -> tuple[torch.Tensor, torch.Tensor]:
    acc = accumulation_dtype(logits.dtype)
    logp = torch.empty(logits.shape[0], dtype=acc, device=logits.device)
    entropy = torch.empty_like(logp)
    scratch = torch.empty((min(step, logits.shape[0]), logits.shape[1]), dtype=acc, device=logits.device)
    for start in range(0, logits.shape[0], step):
        rows = slice(start, start + step)
        buf = scratch[: logits[rows].shape[0]]
        buf.copy_(logits[rows])
        _, logp[rows], entropy[rows] = logits_to_exps_(buf, target_ids[rows], temperature)
    return logp, entropy
