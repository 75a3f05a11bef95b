"""One GRPO policy update on a batch of (context, completion, advantage) samples.

The trained span is whatever `completion_ids` holds: a self-reflection in R3, or a first attempt
in a plain GRPO stage. Nothing here knows which; the loss only reads the mask.

Normalisation follows TRL's GRPOTrainer per loss_type, extended to micro-batches and ranks so
that accumulating gradients over micro-batches on several ranks gives the gradient of the whole
global batch (exactly for grpo, dr_grpo and dapo; bnpo is, as in TRL, the mean of per-micro-batch
token means). DDP and FSDP2 average gradients over ranks, so each micro-batch loss is scaled by
world size over the global count:

    grpo, dr_grpo   kernel loss is a mean over the micro-batch's B sequences -> x B * W / N_sequences
    bnpo            kernel loss is a token mean of the micro-batch            -> x W / N_micro_batches
    dapo            num_items_in_batch = N_tokens / W, loss unscaled          (TRL's normaliser)

Counts are all-reduced first, and every rank runs the same number of micro-batches (padding with
empty ones), because FSDP2 gathers parameters in each forward and DDP syncs on the last backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from r3fast.kernels import fused_linear_grpo_loss, selective_logprobs
from r3fast.train.distributed import DistContext


@dataclass
class TrainingSample:
    context_ids: list[int]                 # tokens the completion is conditioned on; no loss
    completion_ids: list[int]              # the trained span (a reflection, or a first attempt)
    advantage: float                       # group-normalised reward, shared by every completion token
    old_logprobs: list[float] | None = None  # sampler's log-probs of completion_ids (loss.old_logp=engine)


def samples_from_episodes(episodes) -> list[TrainingSample]:
    """Reflections of groups with signal, as training samples (the retry gets no loss)."""
    return [TrainingSample(e.context_ids, e.reflection_ids, e.advantage, e.reflection_logprobs)
            for e in episodes if e.reflection_ids]


@dataclass
class MicroBatch:
    input_ids: torch.Tensor                # [B, L] right-padded context + completion
    attention_mask: torch.Tensor           # [B, L]
    start: int                             # first position whose next token can be a completion token
    target_ids: torch.Tensor               # [B, L - 1 - start] the next token at each scored position
    loss_mask: torch.Tensor                # [B, L - 1 - start] 1 where the target is a completion token
    advantages: torch.Tensor               # [B]
    old_logp: torch.Tensor | None = None   # [B, L - 1 - start]
    ref_logp: torch.Tensor | None = None   # [B, L - 1 - start]

    @property
    def n_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.loss_mask.sum().item())


def collate(samples: Sequence[TrainingSample], pad_id: int, device: torch.device,
            use_old_logprobs: bool = False) -> MicroBatch:
    """Right-pad into tensors; positions before the shortest context never predict a completion
    token, so the lm_head/loss only sees positions from there on."""
    length = max(len(s.context_ids) + len(s.completion_ids) for s in samples)
    start = max(min(len(s.context_ids) for s in samples) - 1, 0)
    n = len(samples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    loss_mask = torch.zeros((n, length - 1), dtype=torch.float32)
    old = torch.zeros((n, length - 1), dtype=torch.float32) if use_old_logprobs else None
    for i, s in enumerate(samples):
        ids = s.context_ids + s.completion_ids
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        first = len(s.context_ids) - 1  # position predicting completion_ids[0]
        loss_mask[i, first : first + len(s.completion_ids)] = 1.0
        if old is not None:
            if s.old_logprobs is None or len(s.old_logprobs) != len(s.completion_ids):
                raise ValueError("loss.old_logp=engine needs the engine's log-prob of every completion token")
            old[i, first : first + len(s.completion_ids)] = torch.tensor(s.old_logprobs, dtype=torch.float32)
    return MicroBatch(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        start=start,
        target_ids=input_ids[:, start + 1 :].to(device),
        loss_mask=loss_mask[:, start:].to(device),
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32, device=device),
        old_logp=None if old is None else old[:, start:].to(device),
    )


def last_hidden(model: nn.Module, batch: MicroBatch) -> torch.Tensor:
    """[B, L - 1 - start, H]: the decoder's output at the scored positions (the lm_head is the loss's)."""
    out = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    return out.last_hidden_state[:, batch.start : -1]


class PolicyLoss(nn.Module):
    """The policy with the fused GRPO loss as its forward, so DDP and FSDP2 see every parameter
    (lm_head included) used inside one forward call."""

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch: MicroBatch, loss_kwargs: dict) -> tuple[torch.Tensor, dict]:
        head = self.policy.get_output_embeddings()
        return fused_linear_grpo_loss(
            last_hidden(self.policy, batch), head.weight, batch.target_ids, batch.advantages, batch.loss_mask,
            old_logp=batch.old_logp, ref_logp=batch.ref_logp, bias=head.bias, **loss_kwargs,
        )


@torch.no_grad()
def sequence_logprobs(model: nn.Module, batch: MicroBatch, temperature: float, backend: str = "auto") -> torch.Tensor:
    """Per-token log-probs of batch.target_ids under `model` (0 outside the loss mask), no gradient."""
    head = model.get_output_embeddings()
    logp = selective_logprobs(last_hidden(model, batch), head.weight, batch.target_ids, temperature,
                              bias=head.bias, backend=backend)
    return logp * batch.loss_mask


def filler_batch(pad_id: int, device: torch.device) -> MicroBatch:
    """One fully masked-out sequence: a rank with fewer micro-batches runs it so that every rank
    makes the same collective calls. Its loss and gradients are exactly zero."""
    batch = collate([TrainingSample([pad_id, pad_id], [pad_id], 0.0)], pad_id, device)
    batch.loss_mask.zero_()
    return batch


def loss_scale(loss_type: str, batch: MicroBatch, world: int, n_sequences: int, n_micro: int) -> float:
    if loss_type in ("grpo", "dr_grpo"):
        return batch.n_sequences * world / n_sequences
    if loss_type == "bnpo":
        return world / n_micro
    return 1.0  # dapo: normalised through num_items_in_batch


def grpo_update(
    module: nn.Module,                     # PolicyLoss, possibly wrapped by DDP / FSDP2
    model: nn.Module,                      # the bare policy (parameters, for clipping)
    optimizer: torch.optim.Optimizer,
    samples: Sequence[TrainingSample],     # this rank's samples (may be empty)
    *,
    loss_type: str,
    beta: float,
    eps_low: float,
    eps_high: float,
    num_iterations: int,
    micro_batch_size: int,
    old_logp_source: str,                  # "trainer" or "engine"
    temperature: float,                    # the sampler's temperature for these completions
    max_completion_length: int,            # dr_grpo's constant length
    max_grad_norm: float,
    pad_id: int,
    dist: DistContext,
    ref_model: nn.Module | None = None,
    backend: str = "auto",
    timer=None,                            # PhaseTimer: the optimizer step is timed as "optimizer"
) -> dict[str, float]:
    """num_iterations optimizer steps on this batch; returns global metrics (same on every rank)."""
    device = next(model.parameters()).device
    chunks = [samples[i : i + micro_batch_size] for i in range(0, len(samples), micro_batch_size)]
    batches = [collate(c, pad_id, device, use_old_logprobs=old_logp_source == "engine") for c in chunks]
    local = torch.tensor([len(samples), sum(b.n_tokens for b in batches), len(batches)], dtype=torch.float64)
    n_sequences, n_tokens, n_micro = (int(x) for x in dist.all_reduce_sum(local).tolist())
    if n_sequences == 0 or n_tokens == 0:
        return {"updated": 0.0}
    n_rounds = int(dist.all_reduce_max(torch.tensor([len(batches)], dtype=torch.float64)).item())
    if beta > 0:
        if ref_model is None:
            raise ValueError("loss.beta > 0 needs a reference model")
        for b in batches:
            b.ref_logp = sequence_logprobs(ref_model, b, temperature, backend)
    filler = filler_batch(pad_id, device)
    loss_kwargs = dict(beta=beta, eps_low=eps_low, eps_high=eps_high, temperature=temperature, loss_type=loss_type,
                       max_completion_length=max_completion_length, backend=backend)
    if loss_type == "dapo":
        loss_kwargs["num_items_in_batch"] = n_tokens / dist.world_size

    # this rank's share of the loss, then token-weighted sums of kl, clip fractions, ratio
    totals = torch.zeros(5, dtype=torch.float64)
    grad_norms = []
    for iteration in range(num_iterations):
        optimizer.zero_grad(set_to_none=True)
        for i in range(n_rounds):
            batch = batches[i] if i < len(batches) else None
            run = batch if batch is not None else filler
            last = i == n_rounds - 1
            with contextlib.nullcontext() if last else dist.no_sync(module):
                loss, metrics = module(run, loss_kwargs)
                scale = loss_scale(loss_type, run, dist.world_size, n_sequences, n_micro) if batch else 0.0
                (loss * scale).backward()
            if batch is None:
                continue
            if iteration == 0 and num_iterations > 1 and batch.old_logp is None:
                # The first pass runs before any step: its log-probs are the old policy's.
                batch.old_logp = metrics["logp"].detach().float()
            k = batch.n_tokens
            totals += torch.tensor([loss.item() * scale / dist.world_size, metrics["kl_mean"].item() * k,
                                    metrics["clip_frac_low"].item() * k, metrics["clip_frac_high"].item() * k,
                                    metrics["ratio_mean"].item() * k], dtype=torch.float64)
        with timer("optimizer") if timer is not None else contextlib.nullcontext():
            limit = max_grad_norm if max_grad_norm > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
            grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
            optimizer.step()
    totals = dist.all_reduce_sum(totals) / num_iterations
    return {
        "updated": 1.0,
        "loss": float(totals[0]),
        "kl": float(totals[1] / n_tokens),
        "clip_frac_low": float(totals[2] / n_tokens),
        "clip_frac_high": float(totals[3] / n_tokens),
        "ratio_mean": float(totals[4] / n_tokens),
        "grad_norm": sum(grad_norms) / len(grad_norms),
        "trained_sequences": float(n_sequences),
        "trained_tokens": float(n_tokens),
    }
