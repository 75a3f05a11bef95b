"""The GRPO update: direction of learning, gradient accumulation and mu > 1 against independent oracles."""

from __future__ import annotations

import pytest
import torch
from train_helpers import RecordGrads, naive_loss, random_samples, tiny_policy

from r3fast.train.distributed import DistContext
from r3fast.train.update import PolicyLoss, collate, grpo_update, sequence_logprobs


def update(model, optimizer, samples, **overrides):
    kwargs = dict(loss_type="grpo", beta=0.0, eps_low=0.2, eps_high=0.2, num_iterations=1, micro_batch_size=4,
                  old_logp_source="trainer", temperature=1.0, max_completion_length=8, max_grad_norm=0.0,
                  pad_id=0, dist=DistContext())
    kwargs.update(overrides)
    return grpo_update(PolicyLoss(model), model, optimizer, samples, **kwargs)


def oracle_grads(model, samples, loss_type, micro_batch_size, max_completion_length=8):
    """Gradient of the big-batch loss; for bnpo, TRL's mean over micro-batches of token means."""
    model.zero_grad(set_to_none=True)
    if loss_type == "bnpo":
        chunks = [samples[i : i + micro_batch_size] for i in range(0, len(samples), micro_batch_size)]
        loss = sum(naive_loss(model, c, loss_type, max_completion_length) for c in chunks) / len(chunks)
    else:
        loss = naive_loss(model, samples, loss_type, max_completion_length)
    loss.backward()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_accumulated_gradient_equals_big_batch(loss_type):
    model = tiny_policy()
    samples = random_samples(7)  # 7 = 3 micro-batches of 3, 3, 1: uneven on purpose
    expected = oracle_grads(model, samples, loss_type, micro_batch_size=3)
    optimizer = RecordGrads(model.parameters())
    update(model, optimizer, samples, loss_type=loss_type, micro_batch_size=3)
    (got,) = optimizer.steps
    # fp64 model, but HF's RMSNorm computes in fp32: batches of other shapes round differently.
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in got)


def test_update_moves_logprobs_in_the_direction_of_the_advantage():
    model = tiny_policy(dtype=torch.float32)
    samples = [s for s in random_samples(10, seed=3) if s.advantage != 0]
    batch = collate(samples, 0, torch.device("cpu"))

    def mean_logp():
        logp = sequence_logprobs(model, batch, 1.0)
        return logp.sum(-1) / batch.loss_mask.sum(-1)

    before = mean_logp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(3):
        stats = update(model, optimizer, samples, max_grad_norm=1.0)
    change = mean_logp() - before
    positive = batch.advantages > 0
    assert stats["updated"] == 1.0 and stats["trained_sequences"] == len(samples)
    assert (change[positive] > 0).all(), change
    assert (change[~positive] < 0).all(), change


def test_mu_two_equals_two_updates_with_the_first_policy_as_old_logp():
    samples = random_samples(6, seed=5)
    a = tiny_policy(seed=1)
    b = tiny_policy(seed=1)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.5)
    stats = update(a, opt_a, samples, num_iterations=2, micro_batch_size=4, eps_low=0.02, eps_high=0.02)
    # Oracle: old log-probs taken from the untouched policy, then two plain updates.
    batch = collate(samples, 0, torch.device("cpu"))
    old = sequence_logprobs(b, batch, 1.0)
    for s, row, first in zip(samples, old, (len(s.context_ids) - 1 - batch.start for s in samples), strict=True):
        s.old_logprobs = row[first : first + len(s.completion_ids)].tolist()
    opt_b = torch.optim.SGD(b.parameters(), lr=0.5)
    update(b, opt_b, samples, num_iterations=1, micro_batch_size=4, old_logp_source="engine")
    update(b, opt_b, samples, num_iterations=1, micro_batch_size=4, old_logp_source="engine",
           eps_low=0.02, eps_high=0.02)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)
    assert stats["clip_frac_low"] + stats["clip_frac_high"] > 0  # the second pass really was off-policy


def test_engine_old_logprobs_must_cover_every_completion_token():
    model = tiny_policy()
    samples = random_samples(2, with_old=True)
    samples[1].old_logprobs = samples[1].old_logprobs[:-1] + [] if len(samples[1].old_logprobs) > 1 else []
    with pytest.raises(ValueError, match="old_logp=engine"):
        update(model, RecordGrads(model.parameters()), samples, old_logp_source="engine")


def test_kl_term_uses_the_reference_and_no_samples_means_no_update():
    model = tiny_policy()
    ref = tiny_policy(seed=9)
    stats = update(model, RecordGrads(model.parameters()), random_samples(4), beta=0.1, ref_model=ref)
    assert stats["kl"] > 0
    with pytest.raises(ValueError, match="reference model"):
        update(model, RecordGrads(model.parameters()), random_samples(4), beta=0.1)
    assert update(model, RecordGrads(model.parameters()), [])["updated"] == 0.0
