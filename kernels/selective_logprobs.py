"""Log-probabilities of chosen tokens straight from hidden states, without the full logits.

The no-grad companion of the fused loss, for old-policy and reference log-probs (and the fused
loss's own first pass, where its coefficients need every token's logp or entropy): same chunking,
same memory bound, same backend choice.
"""

from __future__ import annotations

from types import ModuleType

import torch


@torch.no_grad()
def chunked_logprobs(
    hidden: torch.Tensor,  # [N, H]
    weight: torch.Tensor,  # [V, H]
    bias: torch.Tensor | None,  # [V]
    target_ids: torch.Tensor,  # [N] int64
    temperature: float,
    ops: ModuleType,
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] log p(target_ids | hidden) and [N] entropy of the tempered softmax, in the accumulation dtype."""
    logps, entropies = [], []
    step = max(1, min(ops.rows_per_chunk(weight.shape[0], hidden.dtype), hidden.shape[0]))
    logits = torch.empty((step, weight.shape[0]), dtype=ops.logits_dtype(hidden.dtype), device=hidden.device)
    for start in range(0, hidden.shape[0], step):
        rows = slice(start, start + step)
        state, logp, entropy = ops.chunk_forward(
            hidden[rows], weight, bias, target_ids[rows], temperature, logits[: hidden[rows].shape[0]]
        )
        del state
        logps.append(logp)
        entropies.append(entropy)
    if not logps:
        empty = hidden.new_zeros(0, dtype=torch.promote_types(hidden.dtype, torch.float32))
        return empty, empty.clone()
    return torch.cat(logps), torch.cat(entropies)
