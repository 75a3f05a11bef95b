"""The GRPO update: TRL's objective on batches with flat groups, gradient accumulation and mu > 1,
against independent oracles."""

from __future__ import annotations

import random
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_helpers import VOCAB, RecordGrads, naive_loss, random_samples, tiny_policy

from r3fast.advantages import group_advantages
from r3fast.episode import TrainingSample
from r3fast.train.config import load_config
from r3fast.train.distributed import DistContext
from r3fast.train.update import (
    PolicyLoss,
    collate,
    grpo_update,
    moves_policy,
    sequence_logprobs,
)


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
        s.sampling_logprobs = row[first : first + len(s.completion_ids)].tolist()
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
    samples[1].sampling_logprobs = samples[1].sampling_logprobs[:-1]
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


# -- the objective is TRL's GRPOTrainer's, flat groups included ---------------------------------------
#
# The oracle runs TRL's step: the whole generation batch (flat groups too) is cut into micro-batches of
# per_device_train_batch_size, each one's loss is TRL's `_compute_loss`, and gradients accumulate over
# them. `trl_compute_loss` is that method re-written in plain torch from TRL 1.16's source (the
# loss-relevant part); `test_matches_trl_compute_loss_itself` runs TRL's own method when TRL is installed.

GROUP = 4


def group_samples(model, rewards_per_group, seed=0, temperature=0.7, noise=0.3):
    """Samples of groups of GROUP with TRL-style advantages, and engine log-probs = the trainer's + noise."""
    rng = random.Random(seed)
    rewards = [r for group in rewards_per_group for r in group]
    group_ids = [g for g, group in enumerate(rewards_per_group) for _ in group]
    advantages = group_advantages(rewards, group_ids).advantages
    samples = []
    for advantage in advantages:
        context = [rng.randrange(3, VOCAB) for _ in range(rng.randint(2, 7))]
        completion = [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 6))]
        with torch.no_grad():
            trainer = sequence_token_logps(model, context, completion, temperature)
        sampling = [float(x) + rng.gauss(0.0, noise) for x in trainer]
        samples.append(TrainingSample(context, completion, advantage, sampling))
    return samples


def sequence_token_logps(model, context, completion, temperature):
    """log-probs of `completion` after `context`, from one unpadded HF forward."""
    ids = torch.tensor([context + completion])
    logits = model(input_ids=ids).logits[0, len(context) - 1 : -1] / temperature
    return torch.log_softmax(logits.double(), -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def trl_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, temperature):
    """TRL's `_get_per_token_logps_and_entropies` contract ([B, logits_to_keep], completion right-padded),
    one unpadded forward per row, so that no padding convention is shared with r3fast's collate."""
    logps = torch.zeros(input_ids.shape[0], logits_to_keep, dtype=torch.float64)
    rows = []
    for i in range(input_ids.shape[0]):
        prompt = [int(t) for t, m in zip(input_ids[i, :-logits_to_keep], attention_mask[i, :-logits_to_keep], strict=True) if m]
        completion = [int(t) for t, m in zip(input_ids[i, -logits_to_keep:], attention_mask[i, -logits_to_keep:], strict=True) if m]
        rows.append(sequence_token_logps(model, prompt, completion, temperature))
    logps = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    logps = torch.cat([logps, logps.new_zeros(logps.shape[0], logits_to_keep - logps.shape[1])], 1)
    return logps, torch.zeros_like(logps), None


def trl_inputs(model, ref_model, samples, cfg, num_items_in_batch):
    """One TRL micro-batch: left-padded prompts, right-padded completions, advantages, reference and
    old log-probs, and the sampling correction's ratio as `_generate_and_score_completions` builds it."""
    width = max(len(s.context_ids) for s in samples)
    length = max(len(s.completion_ids) for s in samples)
    pad = lambda xs, n, left: [0] * (n - len(xs)) + xs if left else xs + [0] * (n - len(xs))  # noqa: E731
    inputs = {
        "prompt_ids": torch.tensor([pad(s.context_ids, width, True) for s in samples]),
        "prompt_mask": torch.tensor([pad([1] * len(s.context_ids), width, True) for s in samples]),
        "completion_ids": torch.tensor([pad(s.completion_ids, length, False) for s in samples]),
        "completion_mask": torch.tensor([pad([1] * len(s.completion_ids), length, False) for s in samples]),
        "advantages": torch.tensor([s.advantage for s in samples], dtype=torch.float64),
        "num_items_in_batch": torch.tensor(float(num_items_in_batch)),
    }
    mask = inputs["completion_mask"].double()
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        old, _, _ = trl_logps_and_entropies(model, ids, attention, length, cfg["temperature"])
        if cfg["beta"] > 0:
            inputs["ref_per_token_logps"], _, _ = trl_logps_and_entropies(ref_model, ids, attention, length,
                                                                          cfg["temperature"])
    mode = cfg["sampling_correction"]
    if mode:
        sampling = torch.tensor([pad(s.sampling_logprobs, length, False) for s in samples], dtype=torch.float64)
        diff = (old - sampling) * mask
        if mode.startswith("sequence"):
            diff = diff.sum(-1, keepdim=True)
        ratio = torch.exp(diff)
        if mode.endswith("truncate"):
            ratio = ratio.clamp(max=cfg["sampling_cap"])
        else:
            ratio = ratio.masked_fill(ratio > cfg["sampling_cap"], 0.0)
        inputs["old_per_token_logps"] = old
        inputs["importance_sampling_ratio"] = ratio
    return inputs


def trl_compute_loss(model, inputs, cfg, accumulation_steps):
    """TRL 1.16 GRPOTrainer._compute_loss, token-level ratios, no entropy mask/bonus, in plain torch."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    keep = inputs["completion_ids"].shape[1]
    logps, _, _ = trl_logps_and_entropies(model, ids, attention, keep, cfg["temperature"])
    mask = inputs["completion_mask"].double()
    advantages = inputs["advantages"].unsqueeze(1)
    old = inputs.get("old_per_token_logps", logps.detach())
    coef_1 = torch.exp(logps - old)
    coef_2 = coef_1.clamp(1 - cfg["eps_low"], 1 + cfg["eps_high"])
    per_token = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if cfg["sampling_correction"]:
        per_token = per_token * inputs["importance_sampling_ratio"]
    if cfg["beta"] != 0:
        ref = inputs["ref_per_token_logps"]
        per_token = per_token + cfg["beta"] * (torch.exp(ref - logps) - (ref - logps) - 1)
    loss_type = cfg["loss_type"]
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation_steps
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0) / accumulation_steps
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.shape[0] * cfg["max_completion_length"]) / accumulation_steps
    # dapo: num_items_in_batch / num_processes * gradient_accumulation_steps / steps_per_generation (= 1 here)
    return (per_token * mask).sum() / inputs["num_items_in_batch"].clamp(min=1.0)


def trl_step_gradient(model, ref_model, samples, cfg, compute_loss=trl_compute_loss):
    """Gradient TRL accumulates over one generation batch cut into micro-batches."""
    size = cfg["micro_batch_size"]
    chunks = [samples[i : i + size] for i in range(0, len(samples), size)]
    num_items = sum(len(s.completion_ids) for s in samples)
    model.zero_grad(set_to_none=True)
    for chunk in chunks:
        compute_loss(model, trl_inputs(model, ref_model, chunk, cfg, num_items), cfg, len(chunks)).backward()
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def r3fast_step_gradient(model, ref_model, samples, cfg):
    optimizer = RecordGrads(model.parameters())
    stats = update(model, optimizer, samples, loss_type=cfg["loss_type"], beta=cfg["beta"], eps_low=cfg["eps_low"],
                   eps_high=cfg["eps_high"], micro_batch_size=cfg["micro_batch_size"],
                   temperature=cfg["temperature"], max_completion_length=cfg["max_completion_length"],
                   ref_model=ref_model, importance_sampling_level=cfg["importance_sampling_level"],
                   **correction_kwargs(cfg))
    (grads,) = optimizer.steps
    return grads, stats


def correction_kwargs(cfg):
    if not cfg["sampling_correction"]:
        return {}
    return {"sampling_correction": cfg["sampling_correction"], "sampling_cap": cfg["sampling_cap"]}


def trl_config(**overrides):
    cfg = dict(loss_type="grpo", beta=0.0, eps_low=0.2, eps_high=0.28, temperature=0.7, micro_batch_size=3,
               max_completion_length=8, sampling_correction=None, sampling_cap=3.0, importance_sampling_level="token")
    cfg.update(overrides)
    return cfg


# 3 groups of 4, the middle one flat: micro-batches of 3 straddle the groups, one is all flat.
FLAT_MIDDLE = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]]


def assert_grads_close(got, expected):
    # fp64 model, but HF's RMSNorm computes in fp32: batches of other shapes round differently.
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)
    assert any(e.abs().sum() > 0 for e in expected)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_gradient_equals_trls_on_a_batch_with_a_flat_group(loss_type, beta):
    model, ref = tiny_policy(seed=2), tiny_policy(seed=3)
    samples = group_samples(model, FLAT_MIDDLE)
    cfg = trl_config(loss_type=loss_type, beta=beta)
    got, stats = r3fast_step_gradient(model, ref, samples, cfg)
    assert_grads_close(got, trl_step_gradient(model, ref, samples, cfg))
    # beta = 0: the flat group's 4 sequences are skipped, not dropped; beta > 0: they run for their KL term
    assert stats["trained_sequences"] == (12 if beta else 8) and stats["skipped_sequences"] == (0 if beta else 4)
    assert stats["batch_sequences"] == 12


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_sampling_correction_equals_trls(mode):
    model, ref = tiny_policy(seed=2), tiny_policy(seed=3)
    samples = group_samples(model, FLAT_MIDDLE, noise=0.4)
    cfg = trl_config(loss_type="dapo", beta=0.05, sampling_correction=mode, sampling_cap=1.5)
    got, stats = r3fast_step_gradient(model, ref, samples, cfg)
    assert_grads_close(got, trl_step_gradient(model, ref, samples, cfg))
    # the logged mismatch: |trainer - engine| over the trained tokens, and TRL's weights over them
    whole = trl_inputs(model, ref, samples, cfg, 0)
    mask = whole["completion_mask"].bool()
    diff = (whole["old_per_token_logps"] - torch.tensor(
        [s.sampling_logprobs + [0.0] * (mask.shape[1] - len(s.sampling_logprobs)) for s in samples]))[mask].abs()
    weight = whole["importance_sampling_ratio"].expand(mask.shape)[mask]
    clipped = weight == 0 if mode.endswith("mask") else weight == cfg["sampling_cap"]
    assert stats["sampling_logp_diff_mean"] == pytest.approx(float(diff.mean()), rel=1e-5)
    assert stats["sampling_logp_diff_max"] == pytest.approx(float(diff.max()), rel=1e-5)
    assert stats["sampling_weight_mean"] == pytest.approx(float(weight.mean()), rel=1e-5)
    assert stats["sampling_clipped_frac"] == pytest.approx(float(clipped.double().mean()), rel=1e-5)
    assert 0 < stats["sampling_clipped_frac"] < 1  # the cap of 1.5 bites on some tokens, not all


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.lists(st.lists(st.sampled_from([0.0, 1.0]), min_size=GROUP, max_size=GROUP), min_size=3, max_size=3),
       loss_type=st.sampled_from(["grpo", "bnpo", "dr_grpo", "dapo"]), micro_batch_size=st.sampled_from([2, 3, 4, 6]),
       beta=st.sampled_from([0.0, 0.05]), seed=st.integers(0, 2**16),
       correction=st.sampled_from([None, "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]))
def test_any_mix_of_flat_and_mixed_groups_gives_trls_gradient(groups, loss_type, micro_batch_size, beta, seed,
                                                              correction):
    model, ref = tiny_policy(seed=2), tiny_policy(seed=3)
    samples = group_samples(model, groups, seed=seed)
    cfg = trl_config(loss_type=loss_type, beta=beta, micro_batch_size=micro_batch_size,
                     sampling_correction=correction, sampling_cap=1.5)
    expected = trl_step_gradient(model, ref, samples, cfg)
    if not any(e.abs().sum() > 0 for e in expected):  # every group flat and beta = 0: nothing to train
        assert update(model, RecordGrads(model.parameters()), samples, **correction_kwargs(cfg))["updated"] == 0.0
        return
    got, _ = r3fast_step_gradient(model, ref, samples, cfg)
    assert_grads_close(got, expected)


def test_skipping_is_decided_by_advantage_beta_and_tokens_only():
    s = TrainingSample([5, 6], [7], 0.0)
    assert not moves_policy(s, beta=0.0) and moves_policy(s, beta=0.01)
    assert moves_policy(TrainingSample([5, 6], [7], -0.5), beta=0.0)
    assert not moves_policy(TrainingSample([5, 6], [], 1.0), beta=0.01)  # no token: no loss at all


@pytest.mark.parametrize("loss_type, level", [("grpo", "token"), ("bnpo", "token"), ("dr_grpo", "token"),
                                              ("dapo", "token"), ("cispo", "token"), ("grpo", "sequence")])
@pytest.mark.parametrize("beta, mode", [(0.0, None), (0.05, "sequence_mask")])
def test_matches_trl_compute_loss_itself(loss_type, level, beta, mode):
    """TRL's own GRPOTrainer._compute_loss, run on a stand-in trainer that holds just what it reads."""
    trl = pytest.importorskip("trl")
    from trl import GRPOTrainer

    cfg = trl_config(loss_type=loss_type, beta=beta, sampling_correction=mode, sampling_cap=1.5,
                     importance_sampling_level=level)
    model, ref = tiny_policy(seed=2), tiny_policy(seed=3)
    samples = group_samples(model, FLAT_MIDDLE, noise=0.4)

    def compute_loss(model, inputs, cfg, accumulation_steps):
        trainer = SimpleNamespace(
            loss_type=cfg["loss_type"], beta=cfg["beta"], epsilon_low=cfg["eps_low"], epsilon_high=cfg["eps_high"],
            importance_sampling_level=cfg["importance_sampling_level"], top_entropy_quantile=1.0, off_policy_mask_threshold=None,
            use_vllm=True, vllm_importance_sampling_correction=bool(cfg["sampling_correction"]),
            aux_loss_enabled=False, _entropy_bonus_enabled=False, model=SimpleNamespace(training=True),
            current_gradient_accumulation_steps=accumulation_steps, max_completion_length=cfg["max_completion_length"],
            args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=accumulation_steps),
            accelerator=SimpleNamespace(num_processes=1, gather=lambda x: x, reduce=lambda x, reduction: x),
            _metrics=defaultdict(lambda: defaultdict(list)),
            _get_per_token_logps_and_entropies=lambda m, ids, att, keep, **_: trl_logps_and_entropies(
                m, ids, att, keep, cfg["temperature"]),
        )
        return GRPOTrainer._compute_loss(trainer, model, inputs)

    expected = trl_step_gradient(model, ref, samples, cfg, compute_loss)
    if loss_type != "cispo" and level == "token":  # the plain-torch oracle writes only TRL's token-level losses
        torch.testing.assert_close(expected, trl_step_gradient(model, ref, samples, cfg), rtol=1e-9, atol=1e-12,
                                   msg=f"the plain-torch oracle drifted from TRL {trl.__version__}")
    got, _ = r3fast_step_gradient(model, ref, samples, cfg)
    assert_grads_close(got, expected)


# -- the loss.sampling_* keys: checked when the config loads, before any model ----------------------


def test_sampling_keys_default_off_on_cpu_and_on_in_gpu_presets():
    assert load_config(preset="countdown-cpu").loss.sampling_correction is None
    for preset in ("countdown-qwen2.5-1.5b", "fncall-qwen2-1.5b"):
        loss = load_config(preset=preset).loss
        assert (loss.sampling_correction, loss.sampling_cap) == ("sequence_mask", 3.0)


@pytest.mark.parametrize("overrides, message", [
    (["loss.sampling_correction=sequence"], "'loss.sampling_correction' must be one of null, token_truncate"),
    (["loss.sampling_correction=token_mask", "loss.sampling_cap=1.0"], "'loss.sampling_cap' must be > 1"),
    (["loss.sampling_correction=token_mask", "loss.old_logp=engine"], "'loss.sampling_correction' needs loss.old_logp"),
])
def test_bad_sampling_keys_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(preset="countdown-cpu", overrides=overrides)


def test_a_correction_needs_the_engine_logprob_of_every_token():
    model = tiny_policy()
    samples = random_samples(3, with_old=True)
    samples[2].sampling_logprobs = None
    with pytest.raises(ValueError, match="loss.sampling_correction=token_mask needs the engine's log-prob"):
        update(model, RecordGrads(model.parameters()), samples, sampling_correction="token_mask")


# -- two gloo ranks, one of them holding only flat groups ---------------------------------------------

# Rank 0 gets the two mixed groups, rank 1 the two flat ones: with beta = 0 it runs only fillers, yet
# its sequences and tokens count in the normalisation, as TRL's would.
TWO_RANK_GROUPS = [[1, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
TWO_RANK_CASES = [("grpo", 0.0, None), ("bnpo", 0.05, None), ("dapo", 0.0, "sequence_mask")]


def two_rank_worker(rank, world, init_file, out_path):
    import torch.distributed as tdist

    from r3fast.train.distributed import wrap_policy

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        grads = {}
        for loss_type, beta, mode in TWO_RANK_CASES:
            model, ref = tiny_policy(seed=2), tiny_policy(seed=3)
            samples = group_samples(model, TWO_RANK_GROUPS)
            mine = samples[:8] if rank == 0 else samples[8:]
            dist = DistContext(rank=rank, world_size=world, strategy="ddp")
            optimizer = RecordGrads(model.parameters())
            grpo_update(wrap_policy(PolicyLoss(model), model, dist), model, optimizer, mine, loss_type=loss_type,
                        beta=beta, eps_low=0.2, eps_high=0.28, num_iterations=1, micro_batch_size=4,
                        old_logp_source="trainer", temperature=0.7, max_completion_length=8, max_grad_norm=0.0,
                        pad_id=0, dist=dist, ref_model=ref,
                        **({"sampling_correction": mode, "sampling_cap": 1.5} if mode else {}))
            grads[(loss_type, beta, mode)] = optimizer.steps[0]
        if rank == 0:
            torch.save(grads, out_path)
    finally:
        tdist.destroy_process_group()


def test_two_ranks_one_with_only_flat_groups_give_trls_gradient(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(two_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "grads.pt")), nprocs=2, join=True)
    distributed = torch.load(tmp_path / "grads.pt")
    for loss_type, beta, mode in TWO_RANK_CASES:
        model, ref = tiny_policy(seed=2), tiny_policy(seed=3)
        samples = group_samples(model, TWO_RANK_GROUPS)
        # TRL on 2 ranks x 2 micro-batches of 4 = one process accumulating the 4 micro-batches
        cfg = trl_config(loss_type=loss_type, beta=beta, micro_batch_size=4, sampling_correction=mode,
                         sampling_cap=1.5)
        assert_grads_close(distributed[(loss_type, beta, mode)], trl_step_gradient(model, ref, samples, cfg))
