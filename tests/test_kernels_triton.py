"""The Triton kernels against the naive reference: through the CPU interpreter, and on CUDA if present.

TRITON_INTERPRET must be set before any @triton.jit runs, and other tests in the same pytest
process may have imported triton already, so without it this module re-runs itself in a child
pytest with TRITON_INTERPRET=1, where the interpreter tests below are collected.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from r3fast.kernels import LOSS_TYPES, fused_linear_grpo_loss, selective_logprobs
from r3fast.kernels.reference import reference_entropy, reference_grpo_loss

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def make_case(B, T, H, V, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    around = -torch.log(torch.tensor(float(V)))
    tensors = {
        "hidden": torch.randn(B, T, H, generator=g),
        "weight": torch.randn(V, H, generator=g) / H**0.5,
        "bias": 0.5 * torch.randn(V, generator=g),
        "target_ids": torch.randint(0, V, (B, T), generator=g),
        "advantages": torch.randn(B, generator=g),
        "mask": torch.rand(B, T, generator=g) > 0.25,
        "old_logp": around + 0.6 * torch.randn(B, T, generator=g),
        "ref_logp": around + 0.3 * torch.randn(B, T, generator=g),
    }
    out = {k: v.to(device) for k, v in tensors.items()}
    for k in ("hidden", "weight", "bias"):
        out[k] = out[k].to(dtype).requires_grad_()
    return out


def loss_and_grads(fn, c, use_bias, **kwargs):
    params = [c["hidden"], c["weight"]] + ([c["bias"]] if use_bias else [])
    loss, extra = fn(c["hidden"], c["weight"], c["target_ids"], c["advantages"], c["mask"],
                     bias=c["bias"] if use_bias else None, **kwargs)
    grads = torch.autograd.grad(loss, params)
    logp = extra["logp"] if isinstance(extra, dict) else extra
    return loss.detach(), logp, grads


def reference(*args, backend=None, **kwargs):
    return reference_grpo_loss(*args, **kwargs)


def check_against_reference(c, use_bias=True, rtol=1e-5, atol=1e-6, **kwargs):
    loss, logp, grads = loss_and_grads(fused_linear_grpo_loss, c, use_bias, backend="triton", **kwargs)
    ref_loss, ref_logp, ref_grads = loss_and_grads(reference, c, use_bias, **kwargs)
    torch.testing.assert_close(loss.float().cpu(), ref_loss.float().cpu(), rtol=rtol, atol=atol)
    for got, want in zip(grads, ref_grads, strict=True):
        scale = want.float().abs().max().clamp(min=1e-12)
        torch.testing.assert_close((got.float() / scale).cpu(), (want.float() / scale).cpu(), rtol=rtol, atol=atol)
    m = c["mask"]
    torch.testing.assert_close(logp[m].float().cpu(), ref_logp[m].float().cpu(), rtol=rtol, atol=10 * atol)


if not INTERPRETED:

    def test_triton_kernels_under_the_interpreter():
        pytest.importorskip("triton")
        env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        child = subprocess.run(
            [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
            env=env, capture_output=True, text=True, timeout=900,
        )
        assert child.returncode == 0, child.stdout[-6000:] + child.stderr[-3000:]
        assert " passed" in child.stdout and "skipped" not in child.stdout.splitlines()[-1], child.stdout[-2000:]

    @pytest.mark.gpu
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_triton_on_cuda_matches_reference(dtype):
        c = make_case(B=4, T=300, H=256, V=5003, dtype=dtype, device="cuda")
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
        for loss_type in LOSS_TYPES:
            check_against_reference(c, loss_type=loss_type, beta=0.04, ref_logp=c["ref_logp"],
                                    old_logp=c["old_logp"], temperature=0.9, **tol)
        sampling = c["old_logp"] - 0.3 * torch.randn(c["old_logp"].shape, device="cuda")
        check_against_reference(c, loss_type="grpo", beta=0.04, ref_logp=c["ref_logp"], old_logp=c["old_logp"],
                                importance_sampling_level="sequence", sampling_logp=sampling,
                                sampling_correction="sequence_mask", top_entropy_quantile=0.3, **tol)

else:

    @pytest.mark.parametrize("loss_type", LOSS_TYPES)
    def test_interpreted_matches_reference_off_policy_with_kl_bias_temperature(loss_type):
        c = make_case(B=3, T=13, H=20, V=45, seed=1)
        check_against_reference(c, loss_type=loss_type, old_logp=c["old_logp"], ref_logp=c["ref_logp"],
                                beta=0.05, temperature=0.7)

    def test_interpreted_on_policy_without_bias():
        c = make_case(B=2, T=40, H=16, V=33, seed=2)  # 80 tokens: three chunks of 32
        check_against_reference(c, use_bias=False, loss_type="bnpo")

    @pytest.mark.parametrize("shape", [(1, 1, 5, 3), (1, 3, 17, 1), (2, 5, 3, 50)], ids=["N=1", "V=1", "H=3"])
    def test_interpreted_odd_sizes(shape):
        c = make_case(*shape, seed=3)
        c["mask"][:] = True
        check_against_reference(c, loss_type="grpo", old_logp=c["old_logp"])

    def test_interpreted_bfloat16():
        c = make_case(B=2, T=9, H=24, V=40, dtype=torch.bfloat16, seed=4)
        check_against_reference(c, loss_type="dapo", old_logp=c["old_logp"], rtol=2e-2, atol=2e-2)

    def test_interpreted_all_zero_mask():
        c = make_case(B=2, T=5, H=8, V=21, seed=5)
        c["mask"][:] = False
        loss, logp, grads = loss_and_grads(fused_linear_grpo_loss, c, True, backend="triton")
        assert loss.item() == 0.0 and all(torch.all(g == 0) for g in grads)

    def test_interpreted_frozen_weight_with_trainable_bias():
        c = make_case(B=2, T=6, H=8, V=37, seed=6)
        weight = c["weight"].detach()
        args = (c["hidden"], weight, c["target_ids"], c["advantages"], c["mask"])
        loss, _ = fused_linear_grpo_loss(*args, bias=c["bias"], old_logp=c["old_logp"], backend="triton")
        got = torch.autograd.grad(loss, [c["hidden"], c["bias"]])
        ref, _ = reference_grpo_loss(*args, bias=c["bias"], old_logp=c["old_logp"])
        want = torch.autograd.grad(ref, [c["hidden"], c["bias"]])
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("options", [
        dict(loss_type="grpo", importance_sampling_level="sequence", sampling_correction="sequence_mask",
             top_entropy_quantile=0.5, beta=0.05),
        dict(loss_type="cispo", eps_high=2.0, sampling_correction="token_truncate"),
    ], ids=["gspo+seq_mask+entropy+kl", "cispo+tis_on_policy"])
    def test_interpreted_options_match_reference(options):
        c = make_case(B=3, T=11, H=12, V=37, seed=8)
        g = torch.Generator().manual_seed(9)
        old = c["old_logp"] if options["loss_type"] == "grpo" else None
        sampling = c["old_logp"] - 0.4 * torch.randn(c["old_logp"].shape, generator=g)
        check_against_reference(c, old_logp=old, ref_logp=c["ref_logp"], sampling_logp=sampling, sampling_cap=1.5,
                                temperature=0.8, **options)
        _, metrics = fused_linear_grpo_loss(c["hidden"], c["weight"], c["target_ids"], c["advantages"], c["mask"],
                                            bias=c["bias"], temperature=0.8, backend="triton")
        logits = (c["hidden"] @ c["weight"].T + c["bias"]).detach() / 0.8
        m = c["mask"]
        torch.testing.assert_close(metrics["entropy"][m], reference_entropy(logits)[m].float(), rtol=1e-5, atol=1e-5)

    def test_interpreted_selective_logprobs():
        c = make_case(B=3, T=20, H=12, V=70, seed=7)
        got = selective_logprobs(c["hidden"], c["weight"], c["target_ids"], 0.8, bias=c["bias"], backend="triton")
        logits = (c["hidden"] @ c["weight"].T + c["bias"]).detach() / 0.8
        want = torch.log_softmax(logits, -1).gather(-1, c["target_ids"].unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
