"""lm_head matmul + log-softmax + GRPO loss as one autograd op that never holds all the logits.

The loss depends on each token's logp elementwise and its normalisation is fixed by the mask, so
d(loss)/d(logits) of a chunk is known as soon as that chunk's log-sum-exp is: the forward walks
the loss tokens chunk by chunk and leaves the gradients of hidden, weight and bias finished.
Backward only scales them by the incoming gradient; nothing is recomputed.

The chunk steps come from a backend module (torch_fused or triton_fused) with the same four
names: rows_per_chunk, logits_dtype, chunk_forward, chunk_backward.
Tokens outside the mask cost nothing: they are never multiplied with the weight.
"""

from __future__ import annotations

from types import ModuleType

import torch

from .grpo_math import GRPOParams, accumulation_dtype, token_loss_and_grad


def loss_token_index(token_weights: torch.Tensor) -> torch.Tensor:
    """Positions (into the flat token axis) of the tokens that carry loss."""
    return (token_weights != 0).nonzero().squeeze(1)


class FusedLinearGRPOFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # [N, H]
        weight: torch.Tensor,  # [V, H]
        bias: torch.Tensor | None,  # [V]
        target_ids: torch.Tensor,  # [N] int64
        advantages: torch.Tensor,  # [N]
        token_weights: torch.Tensor,  # [N], loss = sum(token_weights * per-token loss)
        old_logp: torch.Tensor | None,  # [N]
        ref_logp: torch.Tensor | None,  # [N]
        params: GRPOParams,
        ops: ModuleType,
    ):
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_bias = bias is not None and ctx.needs_input_grad[2]
        acc = accumulation_dtype(hidden.dtype)
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(vocab, dtype=acc, device=weight.device) if need_bias else None
        logp = torch.zeros(n_tokens, dtype=acc, device=hidden.device)
        ratio = torch.ones(n_tokens, dtype=acc, device=hidden.device)
        loss = torch.zeros((), dtype=acc, device=hidden.device)

        active = loss_token_index(token_weights)
        step = max(1, min(ops.rows_per_chunk(vocab, hidden.dtype), active.numel()))
        logits = torch.empty((step, vocab), dtype=ops.logits_dtype(hidden.dtype), device=hidden.device)
        for start in range(0, active.numel(), step):
            idx = active[start : start + step]
            h = hidden.index_select(0, idx)
            targets = target_ids.index_select(0, idx)
            state, chunk_logp = ops.chunk_forward(h, weight, bias, targets, params.temperature, logits[: idx.numel()])
            per_token, dloss_dlogp, chunk_ratio = token_loss_and_grad(
                chunk_logp,
                advantages.index_select(0, idx),
                None if old_logp is None else old_logp.index_select(0, idx),
                None if ref_logp is None else ref_logp.index_select(0, idx),
                params,
            )
            w = token_weights.index_select(0, idx).to(acc)
            loss += (w * per_token).sum()
            coef = w * dloss_dlogp / params.temperature
            chunk_grad_hidden = ops.chunk_backward(
                state, h, weight, targets, coef, grad_weight, grad_bias, need_hidden
            )
            if need_hidden:
                grad_hidden.index_copy_(0, idx, chunk_grad_hidden.to(hidden.dtype))
            logp.index_copy_(0, idx, chunk_logp.to(acc))
            ratio.index_copy_(0, idx, chunk_ratio)
            del state
        del logits

        if grad_weight is not None and grad_weight.dtype != weight.dtype:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None and grad_bias.dtype != bias.dtype:
            grad_bias = grad_bias.to(bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.mark_non_differentiable(logp, ratio)
        return loss, logp, ratio

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_ratio):
        grad_hidden, grad_weight, grad_bias = scale_finished_grads(ctx, grad_loss)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None, None


def scale_finished_grads(ctx, grad_loss: torch.Tensor) -> tuple:
    """The saved gradients times grad_loss. The first backward scales in place: a copy of a
    weight-sized buffer would cost what the fusion saved (trainers often backpropagate
    loss / accumulation_steps). A further backward through a retained graph gets fresh tensors
    rescaled from the first, so the gradients already handed out stay as they were."""
    grads = ctx.saved_tensors
    applied = getattr(ctx, "applied_scale", None)
    if applied is None:
        ctx.applied_scale = grad_loss.detach().clone()
        if not torch.equal(grad_loss, torch.ones_like(grad_loss)):
            for g in grads:
                if g is not None:
                    # .data: scaling the buffer must not bump the saved tensor's version, which
                    # would make a later backward through a retained graph refuse to read it.
                    g.data.mul_(grad_loss.to(g.dtype))
        return grads
    if not torch.all(applied != 0):
        raise RuntimeError("the first backward through this fused GRPO loss scaled its gradients by 0; "
                           "run the forward again to backpropagate another value")
    factor = grad_loss / applied
    return tuple(None if g is None else g * factor.to(g.dtype) for g in grads)
