"""lm_head matmul + log-softmax + GRPO loss as one autograd op that never holds all the logits.

Once batch_terms has fixed the batch-level coefficients, d(loss)/d(logp) of a token is elementwise,
so d(loss)/d(logits) of a chunk is known as soon as that chunk's log-sum-exp is: the forward walks
the loss tokens chunk by chunk and leaves the gradients of hidden, weight and bias finished.
Backward only scales them by the incoming gradient; nothing is recomputed.

Where the coefficients need every token's logp or entropy first (grpo_math.needs_first_pass), one
no-grad pass over the masked tokens computes them (the lm_head matmul and a softmax: about 0.4x
the fused pass on CPU); the fused pass then skips the tokens whose loss and gradient are exactly 0
(for example those below the entropy quantile when beta = 0).

The chunk steps come from a backend module (torch_fused or triton_fused) with the same four
names: rows_per_chunk, logits_dtype, chunk_forward, chunk_backward.
Tokens outside the mask cost nothing: they are never multiplied with the weight.
"""

from __future__ import annotations

from types import ModuleType

import torch

from .grpo_math import (
    GRPOParams,
    LossBatch,
    accumulation_dtype,
    batch_terms,
    contributing_tokens,
    needs_first_pass,
    take,
    token_loss_and_grad,
)
from .selective_logprobs import chunked_logprobs


class FusedLinearGRPOFunction(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,  # [N, H], N = B * T
        weight: torch.Tensor,  # [V, H]
        bias: torch.Tensor | None,  # [V]
        target_ids: torch.Tensor,  # [N] int64
        batch: LossBatch,  # [B, T] inputs without gradient
        params: GRPOParams,
        ops: ModuleType,
    ):
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_bias = bias is not None and ctx.needs_input_grad[2]
        acc = accumulation_dtype(hidden.dtype)
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        logp = torch.zeros(n_tokens, dtype=acc, device=hidden.device)
        entropy = torch.zeros(n_tokens, dtype=acc, device=hidden.device)
        masked = (batch.weights.reshape(-1) != 0).nonzero().squeeze(1)

        first_pass = needs_first_pass(params, batch.old_logp is not None)
        if first_pass:
            known_logp, known_entropy = chunked_logprobs(hidden.index_select(0, masked), weight, bias,
                                                         target_ids.index_select(0, masked), params.temperature, ops)
            logp.index_copy_(0, masked, known_logp.to(acc))
            entropy.index_copy_(0, masked, known_entropy.to(acc))
            terms = batch_terms(batch, params, logp.view(batch.mask.shape), entropy.view(batch.mask.shape))
            active = contributing_tokens(terms, params)
        else:
            terms = batch_terms(batch, params)
            active = masked

        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(vocab, dtype=acc, device=weight.device) if need_bias else None
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        step = max(1, min(ops.rows_per_chunk(vocab, hidden.dtype), active.numel()))
        logits = torch.empty((step, vocab), dtype=ops.logits_dtype(hidden.dtype), device=hidden.device)
        for start in range(0, active.numel(), step):
            idx = active[start : start + step]
            h = hidden.index_select(0, idx)
            targets = target_ids.index_select(0, idx)
            state, chunk_logp, chunk_entropy = ops.chunk_forward(h, weight, bias, targets, params.temperature,
                                                                 logits[: idx.numel()])
            per_token, dloss_dlogp = token_loss_and_grad(chunk_logp, params, **take(terms, idx))
            loss += per_token.sum()
            chunk_grad_hidden = ops.chunk_backward(
                state, h, weight, targets, dloss_dlogp / params.temperature, grad_weight, grad_bias, need_hidden
            )
            if need_hidden:
                grad_hidden.index_copy_(0, idx, chunk_grad_hidden.to(hidden.dtype))
            if not first_pass:
                logp.index_copy_(0, idx, chunk_logp.to(acc))
                entropy.index_copy_(0, idx, chunk_entropy.to(acc))
            del state
        del logits

        if grad_weight is not None and grad_weight.dtype != weight.dtype:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None and grad_bias.dtype != bias.dtype:
            grad_bias = grad_bias.to(bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.mark_non_differentiable(logp, entropy)
        return loss, logp, entropy

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_entropy):
        grad_hidden, grad_weight, grad_bias = scale_finished_grads(ctx, grad_loss)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None


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
