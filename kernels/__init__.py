"""Fused GRPO loss over masked spans (reflection tokens), importable into any RL codebase.

    from r3fast.kernels import fused_linear_grpo_loss, grpo_loss, selective_logprobs

The [tokens x vocab] logits never exist: the lm_head matmul, log-softmax and GRPO loss run chunk by
chunk, in Triton on CUDA and in torch elsewhere (resolve_backend decides).
"""

from .api import fused_linear_grpo_loss, grpo_loss, selective_logprobs
from .backend import resolve_backend
from .grpo_math import IMPORTANCE_SAMPLING_LEVELS, LOSS_TYPES, SAMPLING_CORRECTIONS

__all__ = ["IMPORTANCE_SAMPLING_LEVELS", "LOSS_TYPES", "SAMPLING_CORRECTIONS", "fused_linear_grpo_loss", "grpo_loss",
           "resolve_backend", "selective_logprobs"]
