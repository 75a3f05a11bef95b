"""The torch path of the fused GRPO loss against the naive reference: values and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from r3fast.kernels import LOSS_TYPES, fused_linear_grpo_loss, grpo_loss, selective_logprobs
from r3fast.kernels.reference import reference_entropy, reference_grpo_loss, reference_grpo_loss_from_logits


def make_case(B=3, T=7, H=12, V=53, dtype=torch.float32, seed=0, old=True, ref=True, bias=False, zero_row=1):
    """Logits of a realistic scale (logp around -log V), masks with holes and one empty row."""
    g = torch.Generator().manual_seed(seed)
    case = {
        "hidden": torch.randn(B, T, H, generator=g).to(dtype).requires_grad_(),
        "weight": (torch.randn(V, H, generator=g) / H**0.5).to(dtype).requires_grad_(),
        "target_ids": torch.randint(0, V, (B, T), generator=g),
        "advantages": torch.randn(B, generator=g),
        "mask": torch.rand(B, T, generator=g) > 0.3,
    }
    if zero_row is not None and B > zero_row:
        case["mask"][zero_row] = False
    around = -torch.log(torch.tensor(float(V)))
    kwargs = {}
    if old:  # off-policy enough that both clip bounds are hit
        kwargs["old_logp"] = around + 0.6 * torch.randn(B, T, generator=g)
    if ref:
        kwargs["ref_logp"] = around + 0.3 * torch.randn(B, T, generator=g)
        kwargs["beta"] = 0.05
    if bias:
        kwargs["bias"] = (0.5 * torch.randn(V, generator=g)).to(dtype).requires_grad_()
    return case, kwargs


def run(fn, case, kwargs, **extra):
    """(loss, metrics, grads of hidden/weight/bias) with fresh .grad fields."""
    params = [case["hidden"], case["weight"]] + ([kwargs["bias"]] if "bias" in kwargs else [])
    for p in params:
        p.grad = None
    loss, metrics = fn(case["hidden"], case["weight"], case["target_ids"], case["advantages"], case["mask"],
                       **kwargs, **extra)
    loss.backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return loss.detach(), metrics, grads


def assert_close_to_reference(case, kwargs, rtol=1e-5, atol=1e-6, **extra):
    loss, metrics, grads = run(fused_linear_grpo_loss, case, kwargs, backend="torch", **extra)
    # The oracle runs in float64: in fp32 its own rounding (the KL gradient 1 - exp(ref - logp) cancels
    # when ref is close to logp) can exceed the tolerance where the fused path is the more exact one.
    ref_loss, ref_metrics, ref_grads = run(
        lambda *a, **k: _ref_with_metrics(*a, **k), *_in_float64(case, kwargs), **extra
    )
    torch.testing.assert_close(loss.float(), ref_loss.float(), rtol=rtol, atol=atol)
    for name, got, want in zip(("hidden", "weight", "bias")[: len(grads)], grads, ref_grads, strict=True):
        scale = want.float().abs().max().clamp(min=1e-12)
        torch.testing.assert_close(got.float() / scale, want.float() / scale, rtol=rtol, atol=atol,
                                   msg=lambda m, n=name: f"grad of {n}: {m}")
    m = case["mask"] != 0
    torch.testing.assert_close(metrics["logp"][m].float(), ref_metrics[m].float(), rtol=rtol, atol=atol * 10)
    assert torch.all(metrics["logp"][~m] == 0)
    return metrics


def _in_float64(case, kwargs):
    def widen(t):
        if not (torch.is_tensor(t) and t.is_floating_point()):
            return t
        return t.detach().double().requires_grad_(t.requires_grad)

    return {k: widen(v) for k, v in case.items()}, {k: widen(v) for k, v in kwargs.items()}


def _ref_with_metrics(*args, **kwargs):
    kwargs.pop("backend", None)
    return reference_grpo_loss(*args, **kwargs)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("old", [False, True], ids=["on_policy", "old_logp"])
@pytest.mark.parametrize("ref", [False, True], ids=["no_kl", "kl"])
def test_matches_reference_for_every_loss_type(loss_type, old, ref):
    case, kwargs = make_case(old=old, ref=ref, seed=hash((loss_type, old, ref)) % 1000)
    assert_close_to_reference(case, kwargs, loss_type=loss_type)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_bias_temperature_and_normaliser_arguments(loss_type):
    case, kwargs = make_case(bias=True, seed=3)
    assert_close_to_reference(case, kwargs, loss_type=loss_type, temperature=0.7, eps_high=0.28,
                              max_completion_length=11, num_items_in_batch=17)


def test_per_token_advantages_and_float_mask():
    case, kwargs = make_case(seed=4)
    case["advantages"] = torch.randn(case["target_ids"].shape)
    case["mask"] = case["mask"].float()
    assert_close_to_reference(case, kwargs, loss_type="grpo")


def test_bfloat16_inputs_accumulate_in_fp32():
    case, kwargs = make_case(dtype=torch.bfloat16, bias=True, seed=5)
    # The reference multiplies the same bf16 values in fp32; the fused path rounds the chunk's
    # logit gradient to bf16 before the hidden-gradient matmul and returns bf16 gradients.
    assert_close_to_reference(case, kwargs, rtol=2e-2, atol=2e-2, loss_type="bnpo")


@pytest.mark.parametrize("shape", [(1, 1, 5, 3), (2, 3, 1, 1), (1, 257, 9, 31), (4, 2, 7, 1009)],
                         ids=["N=1", "V=1,H=1", "many_chunks", "V_prime"])
def test_odd_sizes(shape, monkeypatch):
    from r3fast.kernels import torch_fused

    monkeypatch.setattr(torch_fused, "CHUNK_BYTES", 4 * 64 * 31)  # 64-row chunks at V=31: many chunks
    B, T, H, V = shape
    case, kwargs = make_case(B=B, T=T, H=H, V=V, zero_row=None, seed=6)
    case["mask"] = torch.ones(B, T, dtype=torch.bool)
    assert_close_to_reference(case, kwargs, loss_type="grpo")


def test_flat_tokens_are_one_sequence():
    case, kwargs = make_case(B=1, T=9, seed=7, zero_row=None)
    flat = {
        "hidden": case["hidden"].detach()[0].requires_grad_(),
        "weight": case["weight"],
        "target_ids": case["target_ids"][0],
        "advantages": case["advantages"].expand(9).clone(),
        "mask": case["mask"][0],
    }
    flat_kwargs = {k: (v[0] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    for loss_type in LOSS_TYPES:
        a = run(fused_linear_grpo_loss, flat, flat_kwargs, loss_type=loss_type)
        b = run(fused_linear_grpo_loss, case, kwargs, loss_type=loss_type)
        torch.testing.assert_close(a[0], b[0])
        torch.testing.assert_close(a[2][0], b[2][0][0])


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_all_zero_mask_gives_zero_loss_and_grads(loss_type):
    case, kwargs = make_case(bias=True, seed=8)
    case["mask"] = torch.zeros_like(case["mask"])
    loss, metrics, grads = run(fused_linear_grpo_loss, case, kwargs, loss_type=loss_type)
    assert loss.item() == 0.0
    for g in grads:
        assert torch.all(g == 0)
    for name, value in metrics.items():
        assert torch.isfinite(value).all(), name


def test_masked_tokens_do_not_influence_anything():
    case, kwargs = make_case(bias=True, seed=9)
    loss, metrics, grads = run(fused_linear_grpo_loss, case, kwargs)
    poisoned = dict(case)
    hidden = case["hidden"].detach().clone()
    hidden[~case["mask"]] = 1e4  # would overflow any softmax that looked at them
    poisoned["hidden"] = hidden.requires_grad_()
    ptargets = case["target_ids"].clone()
    ptargets[~case["mask"]] = 0
    poisoned["target_ids"] = ptargets
    loss2, _, grads2 = run(fused_linear_grpo_loss, poisoned, kwargs)
    torch.testing.assert_close(loss, loss2)
    for g, g2 in zip(grads[1:], grads2[1:], strict=True):
        torch.testing.assert_close(g, g2)
    assert torch.all(grads2[0][~case["mask"]] == 0)


def test_backward_scales_by_the_incoming_gradient():
    case, kwargs = make_case(bias=True, seed=10)
    _, _, grads = run(fused_linear_grpo_loss, case, kwargs)
    _, _, scaled = run(lambda *a, **k: tuple([fused_linear_grpo_loss(*a, **k)[0] * -2.5, {}]), case, kwargs)
    for g, s in zip(grads, scaled, strict=True):
        torch.testing.assert_close(s, -2.5 * g)


def test_frozen_weight_and_hidden_only_get_what_they_need():
    case, kwargs = make_case(seed=11)
    weight = case["weight"].detach()
    loss, _ = fused_linear_grpo_loss(case["hidden"], weight, case["target_ids"], case["advantages"],
                                     case["mask"], **kwargs)
    (gh,) = torch.autograd.grad(loss, case["hidden"])
    ref, _ = reference_grpo_loss(case["hidden"], weight, case["target_ids"], case["advantages"], case["mask"],
                                 **kwargs)
    (rh,) = torch.autograd.grad(ref, case["hidden"])
    torch.testing.assert_close(gh, rh, rtol=1e-5, atol=1e-7)


def test_metrics_match_their_definitions():
    case, kwargs = make_case(seed=12, B=4, T=16)
    case["advantages"] = torch.randn(4, 16, generator=torch.Generator().manual_seed(12))
    _, metrics = fused_linear_grpo_loss(case["hidden"], case["weight"], case["target_ids"], case["advantages"],
                                        case["mask"], eps_low=0.1, eps_high=0.15, **kwargs)
    _, logp = reference_grpo_loss(case["hidden"], case["weight"], case["target_ids"], case["advantages"],
                                  case["mask"], **kwargs)
    m = case["mask"]
    adv = case["advantages"]
    ratio = torch.exp(logp - kwargs["old_logp"])
    delta = kwargs["ref_logp"] - logp
    kl = torch.exp(delta) - delta - 1
    low = ((ratio < 0.9) & (adv < 0))[m].float().mean()
    high = ((ratio > 1.15) & (adv > 0))[m].float().mean()
    assert 0 < low < 1 and 0 < high < 1  # the case exercises both clip bounds
    torch.testing.assert_close(metrics["clip_frac_low"], low)
    torch.testing.assert_close(metrics["clip_frac_high"], high)
    torch.testing.assert_close(metrics["ratio_mean"], ratio[m].mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["kl_mean"], kl[m].mean(), rtol=1e-5, atol=1e-6)
    assert not any(v.requires_grad for v in metrics.values())


def test_gradcheck_float64():
    case, kwargs = make_case(B=2, T=3, H=4, V=7, dtype=torch.float64, bias=True, seed=13)
    kwargs = {k: (v.double() if isinstance(v, torch.Tensor) and not v.requires_grad else v) for k, v in kwargs.items()}
    bias = kwargs.pop("bias")

    def f(hidden, weight, bias):
        return fused_linear_grpo_loss(hidden, weight, case["target_ids"], case["advantages"].double(),
                                      case["mask"], bias=bias, temperature=0.8, loss_type="grpo", **kwargs)[0]

    assert torch.autograd.gradcheck(f, (case["hidden"], case["weight"], bias), eps=1e-6, atol=1e-7)


def test_gradcheck_grpo_loss_from_logits_float64():
    g = torch.Generator().manual_seed(14)
    logits = torch.randn(2, 3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 6, (2, 3), generator=g)
    old = torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.5 - 1.8
    ref = torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.5 - 1.8
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([0.7, -1.1], dtype=torch.float64)

    def f(x):
        return grpo_loss(x, target, adv, mask, old_logp=old, ref_logp=ref, beta=0.1, temperature=1.3,
                         loss_type="dapo")[0]

    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_grpo_loss_from_logits_matches_reference(loss_type):
    g = torch.Generator().manual_seed(15)
    logits = torch.randn(3, 5, 29, generator=g, requires_grad=True)
    target = torch.randint(0, 29, (3, 5), generator=g)
    mask = torch.rand(3, 5, generator=g) > 0.4
    adv = torch.randn(3, generator=g)
    old = torch.randn(3, 5, generator=g) * 0.5 - 3.5
    ref = torch.randn(3, 5, generator=g) * 0.3 - 3.5
    kw = dict(old_logp=old, ref_logp=ref, beta=0.04, loss_type=loss_type, max_completion_length=8)
    loss, metrics = grpo_loss(logits, target, adv, mask, temperature=0.9, **kw)
    (grad,) = torch.autograd.grad(loss, logits)
    ref_loss, ref_logp = reference_grpo_loss_from_logits(logits / 0.9, target, adv, mask, **kw)
    (ref_grad,) = torch.autograd.grad(ref_loss, logits)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(metrics["logp"][mask], ref_logp[mask], rtol=1e-5, atol=1e-6)


def test_selective_logprobs_matches_log_softmax_and_trl():
    case, _ = make_case(B=2, T=300, H=16, V=97, bias=True, seed=16)
    bias = (torch.randn(97) * 0.3)
    got = selective_logprobs(case["hidden"], case["weight"], case["target_ids"], temperature=0.6, bias=bias)
    logits = (case["hidden"] @ case["weight"].T + bias).detach() / 0.6
    want = torch.log_softmax(logits, -1).gather(-1, case["target_ids"].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not got.requires_grad
    trl_utils = pytest.importorskip("trl.trainer.utils")
    torch.testing.assert_close(got, trl_utils.selective_log_softmax(logits, case["target_ids"]), rtol=1e-5,
                               atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    B=st.integers(1, 4), T=st.integers(1, 9), H=st.integers(1, 9), V=st.integers(1, 40),
    loss_type=st.sampled_from(LOSS_TYPES), seed=st.integers(0, 2**16),
    mask_p=st.sampled_from([0.0, 0.3, 0.8, 1.0]), adv_scale=st.sampled_from([0.0, 1.0, 5.0]),
    old=st.booleans(), ref=st.booleans(),
)
def test_property_matches_reference(B, T, H, V, loss_type, seed, mask_p, adv_scale, old, ref):
    case, kwargs = make_case(B=B, T=T, H=H, V=V, seed=seed, old=old, ref=ref, zero_row=None)
    g = torch.Generator().manual_seed(seed + 1)
    case["mask"] = torch.rand(B, T, generator=g) < mask_p
    case["advantages"] = adv_scale * torch.randn(B, generator=g)
    # With zero advantages the gradient is the KL term's alone, beta * (1 - exp(ref - logp)): it
    # cancels when ref is close to logp, so fp32 rounding of logp is large against its size.
    atol = 1e-4 if adv_scale == 0.0 else 1e-6
    assert_close_to_reference(case, kwargs, atol=atol, loss_type=loss_type)


def test_repeated_backward_through_a_retained_graph():
    case, kwargs = make_case(bias=True, seed=17)
    params = [case["hidden"], case["weight"], kwargs["bias"]]
    loss, _ = fused_linear_grpo_loss(case["hidden"], case["weight"], case["target_ids"], case["advantages"],
                                     case["mask"], **kwargs)
    quarter = torch.autograd.grad(loss / 4, params, retain_graph=True)
    kept = [g.clone() for g in quarter]
    full = torch.autograd.grad(loss, params, retain_graph=True)
    negative = torch.autograd.grad(-3 * loss, params)
    for q, k, f, n in zip(quarter, kept, full, negative, strict=True):
        torch.testing.assert_close(q, k, rtol=0, atol=0)  # earlier results are not touched
        torch.testing.assert_close(f, 4 * q)
        torch.testing.assert_close(n, -3 * f)


# ---- sampler-trainer mismatch correction, GSPO, CISPO, entropy ----

CORRECTIONS = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def add_sampling_logp(case, kwargs, correction, seed, noise=0.3, cap=1.5):
    """Sampler log-probs a little off the trainer's own (old_logp, or the policy's logp on-policy), far
    enough that the cap is passed by some tokens or sequences and not by others."""
    with torch.no_grad():
        _, own = reference_grpo_loss(case["hidden"], case["weight"], case["target_ids"], case["advantages"],
                                     case["mask"], bias=kwargs.get("bias"))
    own = kwargs.get("old_logp", own)
    g = torch.Generator().manual_seed(seed)
    kwargs = dict(kwargs, sampling_logp=own - noise * torch.randn(own.shape, generator=g), sampling_correction=correction,
                  sampling_cap=cap)
    return kwargs


def entropy_oracle(case, kwargs, temperature=1.0):
    logits = case["hidden"].detach() @ case["weight"].detach().T
    if "bias" in kwargs:
        logits = logits + kwargs["bias"].detach()
    return reference_entropy(logits / temperature).float()


@pytest.mark.parametrize("correction", CORRECTIONS)
@pytest.mark.parametrize("old", [False, True], ids=["on_policy", "old_logp"])
def test_sampling_correction_matches_reference(correction, old):
    case, kwargs = make_case(old=old, ref=False, B=4, seed=20)
    kwargs = add_sampling_logp(case, kwargs, correction, seed=34, noise=0.5)
    metrics = assert_close_to_reference(case, kwargs, loss_type="grpo")
    m = case["mask"]
    own = kwargs.get("old_logp", metrics["logp"])
    log_ratio = torch.where(m, own - kwargs["sampling_logp"], torch.zeros_like(own))
    if correction.startswith("sequence"):
        log_ratio = log_ratio.sum(-1, keepdim=True).expand_as(own)
    ratio = log_ratio.exp()
    passed = ratio > 1.5
    assert 0 < passed[m].float().mean() < 1  # the case passes the cap for some tokens, not all
    weight = ratio.clamp(max=1.5) if correction.endswith("truncate") else torch.where(passed, 0.0, ratio)
    torch.testing.assert_close(metrics["is_weight_mean"], weight[m].mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["is_clipped_frac"], passed[m].float().mean())


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("old", [False, True], ids=["on_policy", "old_logp"])
def test_sequence_level_ratio_matches_reference(loss_type, old):
    case, kwargs = make_case(old=old, ref=True, bias=True, seed=22)
    case["advantages"] = torch.tensor([1.3, -0.4, -2.0])
    metrics = assert_close_to_reference(case, kwargs, loss_type=loss_type, importance_sampling_level="sequence",
                                        temperature=0.8)
    m = case["mask"].float()
    if old:
        seq = (((metrics["logp"] - kwargs["old_logp"]) * m).sum(-1) / m.sum(-1).clamp(min=1)).exp()
        want = (seq[:, None] * m).sum() / m.sum()
        torch.testing.assert_close(metrics["ratio_mean"], want, rtol=1e-5, atol=1e-6)
    else:
        assert metrics["ratio_mean"].item() == 1.0


@pytest.mark.parametrize("quantile", [0.2, 0.5])
@pytest.mark.parametrize("beta", [0.0, 0.05], ids=["no_kl", "kl"])
def test_top_entropy_quantile_matches_reference(quantile, beta):
    case, kwargs = make_case(old=True, ref=True, bias=True, B=4, T=9, seed=23)
    kwargs["beta"] = beta
    metrics = assert_close_to_reference(case, kwargs, loss_type="bnpo", top_entropy_quantile=quantile)
    m = case["mask"]
    torch.testing.assert_close(metrics["entropy"][m], entropy_oracle(case, kwargs)[m], rtol=1e-5, atol=1e-5)
    assert torch.all(metrics["entropy"][~m] == 0) and not metrics["entropy"].requires_grad


def test_entropy_quantile_keeps_the_top_share_and_skips_the_rest():
    """q = 0.25 keeps the quarter of masked tokens with the highest entropy; without KL the others get
    no gradient at all, as if they were masked out."""
    case, kwargs = make_case(old=False, ref=False, B=2, T=16, seed=24, zero_row=None)  # on-policy: nothing clips
    case["mask"] = torch.ones(2, 16, dtype=torch.bool)
    ent = entropy_oracle(case, kwargs)
    keep = ent >= torch.quantile(ent.flatten(), 0.75)
    _, _, grads = run(fused_linear_grpo_loss, case, kwargs, loss_type="dapo", top_entropy_quantile=0.25,
                      num_items_in_batch=32)
    assert keep.sum().item() == 8
    assert torch.all(grads[0][~keep] == 0) and torch.all(grads[0][keep].abs().sum(-1) > 0)
    masked = dict(case, mask=keep)
    _, _, want = run(fused_linear_grpo_loss, masked, kwargs, loss_type="dapo", num_items_in_batch=32)
    for g, w in zip(grads, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("correction", CORRECTIONS)
def test_everything_combined_matches_reference(loss_type, correction):
    """GSPO + sampling correction + KL (ratio-weighted for the sequence_* modes) + entropy quantile,
    off-policy, with bias and temperature."""
    case, kwargs = make_case(old=True, ref=True, bias=True, B=4, seed=25)
    kwargs = add_sampling_logp(case, kwargs, correction, seed=26)
    assert_close_to_reference(case, kwargs, loss_type=loss_type, importance_sampling_level="sequence",
                              top_entropy_quantile=0.6, temperature=0.9, eps_high=0.28,
                              kl_bias_correction=correction.startswith("sequence"))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("old", [False, True], ids=["on_policy", "old_logp"])
def test_kl_bias_correction_matches_reference(loss_type, level, old):
    case, kwargs = make_case(old=old, ref=True, seed=35)
    assert_close_to_reference(case, kwargs, loss_type=loss_type, importance_sampling_level=level,
                              kl_bias_correction=True, eps_high=1.5 if loss_type == "cispo" else 0.2)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_cispo_matches_reference_and_logs_its_clip(level):
    case, kwargs = make_case(old=True, ref=True, seed=27)
    metrics = assert_close_to_reference(case, kwargs, loss_type="cispo", eps_high=1.2, importance_sampling_level=level)
    if level == "token":
        m = case["mask"]
        ratio = (metrics["logp"] - kwargs["old_logp"]).exp()
        adv = case["advantages"][:, None].expand_as(ratio)
        torch.testing.assert_close(metrics["clip_frac_high"], ((ratio > 1.2) & (adv > 0))[m].float().mean())
        assert metrics["clip_frac_low"].item() == 0.0


@pytest.mark.parametrize("options", [
    dict(importance_sampling_level="sequence"),
    dict(sampling_correction="sequence_mask", top_entropy_quantile=0.5),
    dict(sampling_correction="token_truncate", loss_type="cispo", eps_high=2.0),
], ids=["gspo", "seq_mask+entropy", "cispo+tis"])
def test_grpo_loss_from_logits_with_options_matches_reference(options):
    g = torch.Generator().manual_seed(28)
    logits = torch.randn(3, 6, 29, generator=g, requires_grad=True)
    target = torch.randint(0, 29, (3, 6), generator=g)
    mask = torch.rand(3, 6, generator=g) > 0.3
    adv = torch.randn(3, generator=g)
    old = torch.randn(3, 6, generator=g) * 0.5 - 3.5
    ref = torch.randn(3, 6, generator=g) * 0.3 - 3.5
    kw = dict(old_logp=old, ref_logp=ref, beta=0.04, **options)
    if "sampling_correction" in options:
        kw.update(sampling_logp=old - 0.3 * torch.randn(3, 6, generator=g), sampling_cap=1.5)
    loss, metrics = grpo_loss(logits, target, adv, mask, temperature=0.9, **kw)
    (grad,) = torch.autograd.grad(loss, logits)
    ref_loss, ref_logp = reference_grpo_loss_from_logits(logits / 0.9, target, adv, mask, **kw)
    (ref_grad,) = torch.autograd.grad(ref_loss, logits)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(metrics["entropy"][mask], reference_entropy(logits.detach() / 0.9)[mask].float(),
                               rtol=1e-5, atol=1e-5)


def test_gradcheck_sequence_level_with_correction_float64():
    case, kwargs = make_case(B=2, T=3, H=4, V=7, dtype=torch.float64, bias=True, seed=29)
    kwargs = {k: (v.double() if isinstance(v, torch.Tensor) and not v.requires_grad else v) for k, v in kwargs.items()}
    bias = kwargs.pop("bias")
    sampling = kwargs["old_logp"] - 0.2

    def f(hidden, weight, bias):
        return fused_linear_grpo_loss(hidden, weight, case["target_ids"], case["advantages"].double(), case["mask"],
                                      bias=bias, temperature=0.8, importance_sampling_level="sequence",
                                      sampling_logp=sampling, sampling_correction="sequence_truncate",
                                      eps_high=0.5, **kwargs)[0]

    assert torch.autograd.gradcheck(f, (case["hidden"], case["weight"], bias), eps=1e-6, atol=1e-7)


def test_all_zero_mask_with_every_option():
    case, kwargs = make_case(bias=True, seed=30)
    kwargs = add_sampling_logp(case, kwargs, "sequence_mask", seed=31)
    case["mask"] = torch.zeros_like(case["mask"])
    loss, metrics, grads = run(fused_linear_grpo_loss, case, kwargs, loss_type="cispo",
                               importance_sampling_level="sequence", top_entropy_quantile=0.3)
    assert loss.item() == 0.0 and all(torch.all(g == 0) for g in grads)
    for name, value in metrics.items():
        assert torch.isfinite(value).all(), name


def test_missing_sampler_logprobs_count_as_no_mismatch():
    case, kwargs = make_case(old=True, ref=False, seed=32)
    kwargs = add_sampling_logp(case, kwargs, "sequence_mask", seed=33, noise=0.05, cap=3.0)
    holes = kwargs["sampling_logp"].clone()
    holes[:, ::2] = float("nan")
    filled = torch.where(holes.isnan(), kwargs["old_logp"], holes)  # a zero difference, as TRL does
    a = run(fused_linear_grpo_loss, case, dict(kwargs, sampling_logp=holes))
    b = run(fused_linear_grpo_loss, case, dict(kwargs, sampling_logp=filled))
    torch.testing.assert_close(a[0], b[0])
    for x, y in zip(a[2], b[2], strict=True):
        torch.testing.assert_close(x, y)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 4), T=st.integers(1, 8), V=st.integers(2, 30), loss_type=st.sampled_from(LOSS_TYPES),
    level=st.sampled_from(["token", "sequence"]), correction=st.sampled_from((None, *CORRECTIONS)),
    quantile=st.sampled_from([1.0, 0.7, 0.3]), old=st.booleans(), ref=st.booleans(), seed=st.integers(0, 2**16),
    mask_p=st.sampled_from([0.0, 0.5, 1.0]), kl_bias=st.booleans(),
)
def test_property_options_match_reference(B, T, V, loss_type, level, correction, quantile, old, ref, seed, mask_p,
                                          kl_bias):
    case, kwargs = make_case(B=B, T=T, H=5, V=V, seed=seed, old=old, ref=ref, zero_row=None)
    case["mask"] = torch.rand(B, T, generator=torch.Generator().manual_seed(seed + 1)) < mask_p
    if correction is not None:
        kwargs = add_sampling_logp(case, kwargs, correction, seed=seed + 2)
    assert_close_to_reference(case, kwargs, loss_type=loss_type, importance_sampling_level=level,
                              top_entropy_quantile=quantile, eps_high=1.5 if loss_type == "cispo" else 0.2,
                              kl_bias_correction=kl_bias)


# ---- TRL's own GRPOTrainer._compute_loss as the oracle ----


def _trl_loss(grpo_trainer, trl_utils, logits_fn, batch, *, loss_type, level, correction, cap, quantile, beta,
              kl_bias, eps_low, eps_high, temperature):
    """TRL 1.16's _compute_loss on a one-process trainer stand-in whose model forward is logits_fn.

    The sampler weight ("importance_sampling_ratio") is an input of _compute_loss, made in
    _generate_and_score_completions; it is built here by the formula TRL writes there (no clip_min)."""
    from collections import defaultdict
    from types import MethodType, SimpleNamespace

    def logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **_):
        logits = logits_fn() / temperature
        return trl_utils.selective_log_softmax(logits, batch["target_ids"]), trl_utils.entropy_from_logits(logits), None

    accelerator = SimpleNamespace(
        pad_across_processes=lambda t, dim=0, pad_index=0: t, gather=lambda t: t, gather_for_metrics=lambda t: t,
        reduce=lambda t, reduction="sum": t, num_processes=1, sync_gradients=True,
    )
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=logps_and_entropies, aux_loss_enabled=False, accelerator=accelerator,
        top_entropy_quantile=quantile, off_policy_mask_threshold=None, importance_sampling_level=level, beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=kl_bias, delta=None, steps_per_generation=1),
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=correction is not None,
        vllm_importance_sampling_correction=correction is not None, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=batch["mask"].shape[1],
        _entropy_bonus_enabled=False, _metrics={"train": defaultdict(list)},
    )
    trainer.get_high_entropy_mask = MethodType(grpo_trainer.GRPOTrainer.get_high_entropy_mask, trainer)
    mask = batch["mask"].long()
    inputs = {
        "prompt_ids": batch["target_ids"][:, :1], "prompt_mask": torch.ones_like(mask[:, :1]),
        "completion_ids": batch["target_ids"], "completion_mask": mask, "advantages": batch["advantages"],
        "num_items_in_batch": mask.sum().float(),
    }
    if batch.get("old_logp") is not None:
        inputs["old_per_token_logps"] = batch["old_logp"]
    if beta:
        inputs["ref_per_token_logps"] = batch["ref_logp"]
    if correction is not None:
        with torch.no_grad():
            own = batch.get("old_logp")
            if own is None:
                own, _, _ = logps_and_entropies(None, None, None, None)
            diff = torch.nan_to_num((own - batch["sampling_logp"]) * mask, nan=0.0)
            if correction.startswith("sequence"):
                diff = diff.sum(-1, keepdim=True)
            ratio = torch.exp(diff)
            if correction.endswith("truncate"):
                ratio = ratio.clamp(max=cap)
            else:
                ratio = ratio.masked_fill(ratio > cap, 0.0)
        inputs["importance_sampling_ratio"] = ratio
    return grpo_trainer.GRPOTrainer._compute_loss(trainer, None, inputs)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_matches_trl_compute_loss(loss_type, level):
    """Loss and gradients (hidden, weight) equal TRL's on a batch with a flat-advantage sequence, for
    every sampling correction, with and without the entropy quantile, KL (plain and TRL 1.16's
    default ratio-weighted one) and old_logp."""
    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    trl_utils = pytest.importorskip("trl.trainer.utils")
    eps_high = 3.0 if loss_type == "cispo" else 0.28
    settings = [(1.0, 0.04, False), (0.4, 0.0, True), (0.4, 0.04, True)]  # (quantile, beta, old_logp given)
    for i, (correction, (quantile, beta, old)) in enumerate(
        (c, settings[(k + j) % 3]) for k, c in enumerate((None, *CORRECTIONS)) for j in range(2)
    ):
        kl_bias = i % 4 >= 2
        case, kwargs = make_case(B=4, T=6, H=8, V=31, old=old, ref=beta > 0, seed=40 + i)
        case["advantages"][2] = 0.0  # a flat group: its sequences still carry KL and count in the mean
        case["mask"][:, 0] = True
        kwargs["beta"] = beta
        if correction is not None:
            kwargs = add_sampling_logp(case, kwargs, correction, seed=41 + i, noise=0.4)
        params = [case["hidden"], case["weight"]]
        loss, _ = fused_linear_grpo_loss(case["hidden"], case["weight"], case["target_ids"], case["advantages"],
                                         case["mask"], loss_type=loss_type, importance_sampling_level=level,
                                         top_entropy_quantile=quantile, eps_high=eps_high, temperature=0.9,
                                         kl_bias_correction=kl_bias, **kwargs)
        grads = torch.autograd.grad(loss, params)
        batch = dict(case, **kwargs)
        want = _trl_loss(grpo_trainer, trl_utils, lambda c=case: c["hidden"] @ c["weight"].T, batch,
                         loss_type=loss_type, level=level, correction=correction, cap=kwargs.get("sampling_cap"),
                         quantile=quantile, beta=beta, kl_bias=kl_bias, eps_low=0.2, eps_high=eps_high,
                         temperature=0.9)
        want_grads = torch.autograd.grad(want, params)
        what = f"{correction=} {quantile=} {beta=} {kl_bias=} {old=}"
        torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6, msg=lambda m, w=what: f"loss, {w}: {m}")
        for got, ref in zip(grads, want_grads, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6, msg=lambda m, w=what: f"grad, {w}: {m}")
