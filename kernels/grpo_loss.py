"""GRPO loss from logits that already exist (when the model hands back logits, not hidden states).

Same math and chunking as the fused op; the gradient of the logits is written straight into one
buffer of the logits' size (which backward has to return anyway), so no extra copies pile up.
"""

from __future__ import annotations

import torch

from .fused_linear_grpo import scale_finished_grads
from .grpo_math import GRPOParams, accumulation_dtype, token_loss_and_grad
from .torch_fused import exps_to_dlogits_, logits_to_exps_, rows_per_chunk


class GRPOFromLogitsFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,  # [N, V]
        target_ids: torch.Tensor,  # [N] int64
        advantages: torch.Tensor,  # [N]
        token_weights: torch.Tensor,  # [N]
        old_logp: torch.Tensor | None,  # [N]
        ref_logp: torch.Tensor | None,  # [N]
        params: GRPOParams,
    ):
        acc = accumulation_dtype(logits.dtype)
        n_tokens, vocab = logits.shape
        keep_grad = ctx.needs_input_grad[0]
        grad_logits = torch.empty((n_tokens, vocab), dtype=acc, device=logits.device) if keep_grad else None
        logp = torch.empty(n_tokens, dtype=acc, device=logits.device)
        ratio = torch.empty(n_tokens, dtype=acc, device=logits.device)
        loss = torch.zeros((), dtype=acc, device=logits.device)
        step = rows_per_chunk(vocab, logits.dtype)
        for start in range(0, n_tokens, step):
            rows = slice(start, start + step)
            buf = grad_logits[rows] if keep_grad else torch.empty_like(logits[rows], dtype=acc)
            buf.copy_(logits[rows])
            targets = target_ids[rows]
            sum_exp, chunk_logp = logits_to_exps_(buf, targets, params.temperature)
            per_token, dloss_dlogp, chunk_ratio = token_loss_and_grad(
                chunk_logp,
                advantages[rows],
                None if old_logp is None else old_logp[rows],
                None if ref_logp is None else ref_logp[rows],
                params,
            )
            w = token_weights[rows].to(acc)
            loss += (w * per_token).sum()
            exps_to_dlogits_(buf, sum_exp, targets, w * dloss_dlogp / params.temperature)
            logp[rows] = chunk_logp
            ratio[rows] = chunk_ratio
        # Tokens outside the mask report logp 0 and ratio 1, as in the fused op, which skips them.
        on_loss = token_weights != 0
        logp = torch.where(on_loss, logp, torch.zeros_like(logp))
        ratio = torch.where(on_loss, ratio, torch.ones_like(ratio))
        ctx.save_for_backward(None if grad_logits is None else grad_logits.to(logits.dtype))
        ctx.mark_non_differentiable(logp, ratio)
        return loss, logp, ratio

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_ratio):
        (grad_logits,) = scale_finished_grads(ctx, grad_loss)
        return grad_logits, None, None, None, None, None, None
