"""One GRPO policy update on a batch of (context, completion, advantage) samples.

The trained span is whatever `completion_ids` holds: a self-reflection in R3, or a first attempt
in a plain GRPO stage. Nothing here knows which; the loss only reads the mask.

The objective is TRL's GRPOTrainer's, over the whole batch: every sequence counts in the
normalisation, also those of groups whose rewards are all equal (advantage 0). Only the compute
is skipped where the result is known to be exactly zero: `moves_policy` is the one rule. A
zero-advantage sequence with `beta > 0` is still run, for its KL term.

Normalisation follows TRL per loss_type, extended to micro-batches and ranks so that
accumulating gradients over micro-batches on several ranks gives the gradient of the whole
global batch (exactly for grpo, dr_grpo and dapo; bnpo is, as in TRL, the mean of
per-micro-batch token means). Micro-batches are cut from the whole batch, as TRL cuts them, and
then lose their skipped sequences. DDP and FSDP2 average gradients over ranks, so each
micro-batch loss is scaled by world size W over the global count:

    grpo, dr_grpo   kernel loss is a mean over the B_run sequences it ran -> x B_run * W / N_sequences
    bnpo            kernel loss is a token mean over the tokens it ran    -> x (T_run / T_micro) * W / N_micro_batches
    dapo            num_items_in_batch = N_tokens / W, loss unscaled      (TRL's normaliser)

N_sequences, N_tokens, T_micro and N_micro_batches count skipped sequences too. Counts are
all-reduced first, and every rank runs the same number of micro-batches (padding with empty
ones), because FSDP2 gathers parameters in each forward and DDP syncs on the last backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from r3fast.episode import TrainingSample
from r3fast.kernels import fused_linear_grpo_loss, selective_logprobs
from r3fast.timing import PhaseTimer, timed
from r3fast.train.distributed import DistContext
from r3fast.train.shared_prefix import context_groups, shared_prefix_hidden, shares_work


def moves_policy(sample: TrainingSample, beta: float) -> bool:
    """Whether the sample's loss or gradient can be nonzero: the one rule for what the update skips.

    With no completion token, or with advantage 0 and no KL term, every token's loss is exactly 0
    (the policy term is proportional to the advantage, whatever the ratio or sampling weight).
    """
    return bool(sample.completion_ids) and (sample.advantage != 0.0 or beta > 0)


@dataclass
class MicroBatch:
    input_ids: torch.Tensor                # [B, L] right-padded context + completion
    attention_mask: torch.Tensor           # [B, L]
    start: int                             # first position whose next token can be a completion token
    target_ids: torch.Tensor               # [B, L - 1 - start] the next token at each scored position
    loss_mask: torch.Tensor                # [B, L - 1 - start] 1 where the target is a completion token
    advantages: torch.Tensor               # [B]
    old_logp: torch.Tensor | None = None   # [B, L - 1 - start] the policy's before this update (ratio denominator)
    ref_logp: torch.Tensor | None = None   # [B, L - 1 - start]
    sampling_logp: torch.Tensor | None = None  # [B, L - 1 - start] the engine's, when every sample carries them
    groups: list[list[int]] | None = None  # rows with identical context, forwarded as one (shared_prefix.py)

    @property
    def n_sequences(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.loss_mask.sum().item())


def collate(samples: Sequence[TrainingSample], pad_id: int, device: torch.device,
            shared_prefix: bool = True) -> MicroBatch:
    """Right-pad into tensors; positions before the shortest context never predict a completion
    token, so the lm_head/loss only sees positions from there on."""
    length = max(len(s.context_ids) + len(s.completion_ids) for s in samples)
    start = max(min(len(s.context_ids) for s in samples) - 1, 0)
    n = len(samples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    loss_mask = torch.zeros((n, length - 1), dtype=torch.float32)
    carried = all(s.sampling_logprobs is not None for s in samples)
    sampling = torch.zeros((n, length - 1), dtype=torch.float32) if carried else None
    for i, s in enumerate(samples):
        ids = s.context_ids + s.completion_ids
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        first = len(s.context_ids) - 1  # position predicting completion_ids[0]
        loss_mask[i, first : first + len(s.completion_ids)] = 1.0
        if sampling is not None:
            check_sampling_logprobs(s)
            sampling[i, first : first + len(s.completion_ids)] = torch.tensor(s.sampling_logprobs, dtype=torch.float32)
    return MicroBatch(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        start=start,
        target_ids=input_ids[:, start + 1 :].to(device),
        loss_mask=loss_mask[:, start:].to(device),
        advantages=torch.tensor([s.advantage for s in samples], dtype=torch.float32, device=device),
        sampling_logp=None if sampling is None else sampling[:, start:].to(device),
        groups=context_groups([s.context_ids for s in samples]) if shared_prefix else None,
    )


def check_sampling_logprobs(sample: TrainingSample, needed_by: str = "") -> None:
    """A ValueError unless the sample carries the engine's log-prob of every completion token."""
    have = sample.sampling_logprobs
    if have is None or len(have) != len(sample.completion_ids):
        got = "none" if have is None else f"{len(have)}"
        reason = f"{needed_by} needs" if needed_by else "sampling_logprobs must hold"
        raise ValueError(f"{reason} the engine's log-prob of every completion token: a sample has {got} "
                         f"for {len(sample.completion_ids)} completion tokens")


def last_hidden(model: nn.Module, batch: MicroBatch) -> torch.Tensor:
    """[B, L - 1 - start, H]: the decoder's output at the scored positions (the lm_head is the loss's).
    Samples sharing a context run it once (shared_prefix.py) where the model can; the same hidden states."""
    if shares_work(model, batch.groups):
        hidden = shared_prefix_hidden(model, batch.input_ids, batch.attention_mask, batch.start, batch.groups)
        if hidden is not None:
            return hidden
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
        sampling = {"sampling_logp": batch.sampling_logp} if loss_kwargs.get("sampling_correction") else {}
        return fused_linear_grpo_loss(
            last_hidden(self.policy, batch), head.weight, batch.target_ids, batch.advantages, batch.loss_mask,
            old_logp=batch.old_logp, ref_logp=batch.ref_logp, bias=head.bias, **sampling, **loss_kwargs,
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
    batch = collate([TrainingSample([pad_id, pad_id], [pad_id], 0.0, [0.0])], pad_id, device)
    batch.loss_mask.zero_()
    return batch


@dataclass
class MicroBatchPlan:
    """One micro-batch as TRL cuts the batch, and the part of it that is run."""

    run: list[TrainingSample]              # its sequences that move the policy (moves_policy)
    n_sequences: int                       # all its sequences, skipped ones included
    n_tokens: int                          # all their completion tokens


def plan_micro_batches(samples: Sequence[TrainingSample], micro_batch_size: int, beta: float) -> list[MicroBatchPlan]:
    chunks = [samples[i : i + micro_batch_size] for i in range(0, len(samples), micro_batch_size)]
    return [MicroBatchPlan([s for s in c if moves_policy(s, beta)], len(c), sum(len(s.completion_ids) for s in c))
            for c in chunks]


def loss_scale(loss_type: str, run: MicroBatch, plan: MicroBatchPlan, world: int, n_sequences: int,
               n_micro: int) -> float:
    """Factor that turns the kernel's loss over `run` into its share of the whole batch's loss."""
    if loss_type in ("grpo", "dr_grpo"):
        return run.n_sequences * world / n_sequences
    if loss_type == "bnpo":
        return run.n_tokens / plan.n_tokens * world / n_micro
    return 1.0  # dapo, cispo: normalised through num_items_in_batch


def grpo_update(
    module: nn.Module,                     # PolicyLoss, possibly wrapped by DDP / FSDP2
    model: nn.Module,                      # the bare policy (parameters, for clipping)
    optimizer: torch.optim.Optimizer,
    samples: Sequence[TrainingSample],     # this rank's samples, flat groups included (may be empty)
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
    sampling_correction: str | None = None,  # weight tokens by the trainer/engine ratio (TRL's modes)
    sampling_cap: float = 3.0,             # the correction's cap on that ratio
    importance_sampling_level: str = "token",  # "sequence": GSPO's ratio per sequence
    backend: str = "auto",
    shared_prefix: bool = True,            # forward a context its samples share once (shared_prefix.py)
    timer: PhaseTimer | None = None,       # the optimizer step is timed as "optimizer"
) -> dict[str, float]:
    """num_iterations optimizer steps on this batch; returns global metrics (same on every rank)."""
    device = next(model.parameters()).device
    needed_by = ("loss.old_logp=engine" if old_logp_source == "engine" else
                 f"loss.sampling_correction={sampling_correction}" if sampling_correction else "")
    if needed_by:
        for s in samples:
            check_sampling_logprobs(s, needed_by)
    plans = plan_micro_batches(samples, micro_batch_size, beta)
    runs = [(collate(p.run, pad_id, device, shared_prefix), p) for p in plans if p.run]
    if old_logp_source == "engine":
        for batch, _ in runs:
            batch.old_logp = batch.sampling_logp
    local = torch.tensor([len(samples), sum(p.n_tokens for p in plans), len(plans), sum(len(p.run) for p in plans),
                          sum(b.n_tokens for b, _ in runs)], dtype=torch.float64)
    n_sequences, n_tokens, n_micro, n_run_sequences, n_run_tokens = (int(x) for x in dist.all_reduce_sum(local).tolist())
    counts = {"trained_sequences": float(n_run_sequences), "skipped_sequences": float(n_sequences - n_run_sequences)}
    if n_run_tokens == 0:
        return {"updated": 0.0, **counts}
    n_rounds = int(dist.all_reduce_max(torch.tensor([len(runs)], dtype=torch.float64)).item())
    if beta > 0:
        if ref_model is None:
            raise ValueError("loss.beta > 0 needs a reference model")
        for batch, _ in runs:
            batch.ref_logp = sequence_logprobs(ref_model, batch, temperature, backend)
    filler = filler_batch(pad_id, device)
    loss_kwargs = dict(beta=beta, eps_low=eps_low, eps_high=eps_high, temperature=temperature, loss_type=loss_type,
                       max_completion_length=max_completion_length, backend=backend,
                       importance_sampling_level=importance_sampling_level)
    if sampling_correction:
        loss_kwargs.update(sampling_correction=sampling_correction, sampling_cap=sampling_cap)
    if loss_type in ("dapo", "cispo"):
        loss_kwargs["num_items_in_batch"] = n_tokens / dist.world_size

    # this rank's share of the loss, then token-weighted sums of kl, clip fractions, ratio, entropy
    totals = torch.zeros(6, dtype=torch.float64)
    mismatch = SamplingMismatch()
    logp_sum = torch.zeros((), dtype=torch.float64, device=device)  # trained tokens, first pass: the supervised NLL
    grad_norms = []
    for iteration in range(num_iterations):
        optimizer.zero_grad(set_to_none=True)
        for i in range(n_rounds):
            batch, plan = runs[i] if i < len(runs) else (None, None)
            run = batch if batch is not None else filler
            last = i == n_rounds - 1
            with contextlib.nullcontext() if last else dist.no_sync(module):
                loss, metrics = module(run, loss_kwargs)
                scale = loss_scale(loss_type, batch, plan, dist.world_size, n_sequences, n_micro) if batch else 0.0
                (loss * scale).backward()
            if batch is None:
                continue
            if iteration == 0:
                # The first pass runs before any step: its log-probs are the old policy's.
                mismatch.add(metrics, batch)
                logp_sum += (metrics["logp"].detach().double() * batch.loss_mask).sum()
                if num_iterations > 1 and batch.old_logp is None:
                    batch.old_logp = metrics["logp"].detach().float()
            k = batch.n_tokens
            totals += torch.tensor([loss.item() * scale / dist.world_size, metrics["kl_mean"].item() * k,
                                    metrics["clip_frac_low"].item() * k, metrics["clip_frac_high"].item() * k,
                                    metrics["ratio_mean"].item() * k, metrics["entropy_mean"].item() * k],
                                   dtype=torch.float64)
        with timed(timer, "optimizer"):
            limit = max_grad_norm if max_grad_norm > 0 else float("inf")
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
            grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
            optimizer.step()
    reduced = dist.all_reduce_sum(torch.cat([totals, logp_sum.cpu().reshape(1)]))  # one collective for both
    totals, logp_total = reduced[:6] / num_iterations, float(reduced[6])
    return {
        "updated": 1.0,
        "loss": float(totals[0]),
        "kl": float(totals[1] / n_run_tokens),
        "clip_frac_low": float(totals[2] / n_run_tokens),
        "clip_frac_high": float(totals[3] / n_run_tokens),
        "ratio_mean": float(totals[4] / n_run_tokens),
        "entropy": float(totals[5] / n_run_tokens),  # per-token entropy of the policy: a falling one warns of collapse
        "logp_mean": logp_total / n_run_tokens,  # per trained token, under the policy before the step
        "grad_norm": sum(grad_norms) / len(grad_norms),
        **counts,
        "trained_tokens": float(n_run_tokens),
        "batch_sequences": float(n_sequences),
        "batch_tokens": float(n_tokens),
        **mismatch.summary(dist),
    }


class SamplingMismatch:
    """Sampler-trainer mismatch over the trained tokens of the first pass (the policy before the
    step): |trainer's log-prob - engine's|, and the sampling correction's weight (1 when off)."""

    def __init__(self):
        self.sums = torch.zeros(5, dtype=torch.float64)  # |delta| sum, its tokens, weight sum, clipped sum, tokens
        self.max = torch.zeros(1, dtype=torch.float64)

    def add(self, metrics: dict, batch: MicroBatch) -> None:
        k = batch.n_tokens
        self.sums[2:] += torch.tensor([metrics["is_weight_mean"].item() * k, metrics["is_clipped_frac"].item() * k, k],
                                      dtype=torch.float64)
        if batch.sampling_logp is None:
            return
        delta = (metrics["logp"].detach().double() - batch.sampling_logp.double()).abs() * batch.loss_mask
        self.sums[:2] += torch.tensor([float(delta.sum()), k], dtype=torch.float64)
        self.max = torch.maximum(self.max, delta.max().cpu().reshape(1))

    def summary(self, dist: DistContext) -> dict[str, float]:
        """The |delta logp| keys only when every trained token came with the engine's log-prob."""
        sums, top = dist.all_reduce_sum(self.sums), dist.all_reduce_max(self.max)
        diff_sum, diff_tokens, weight_sum, clipped_sum, tokens = sums.tolist()
        out = {"sampling_weight_mean": weight_sum / tokens, "sampling_clipped_frac": clipped_sum / tokens}
        if diff_tokens == tokens:
            out.update(sampling_logp_diff_mean=diff_sum / tokens, sampling_logp_diff_max=float(top[0]))
        return out
