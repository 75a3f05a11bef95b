"""Bad input to the fused GRPO loss fails early with a ValueError naming the argument."""

from __future__ import annotations

import re

import pytest
import torch
from r3fast.kernels import fused_linear_grpo_loss, grpo_loss, resolve_backend, selective_logprobs

B, T, H, V = 2, 3, 4, 11


def good():
    g = torch.Generator().manual_seed(0)
    return {
        "hidden": torch.randn(B, T, H, generator=g, requires_grad=True),
        "weight": torch.randn(V, H, generator=g, requires_grad=True),
        "target_ids": torch.randint(0, V, (B, T), generator=g),
        "advantages": torch.randn(B, generator=g),
        "mask": torch.ones(B, T, dtype=torch.bool),
    }


def call(**changes):
    args = good()
    kwargs = {k: changes.pop(k) for k in list(changes) if k not in args}
    args.update(changes)
    return fused_linear_grpo_loss(args["hidden"], args["weight"], args["target_ids"], args["advantages"],
                                  args["mask"], **kwargs)


BAD = {
    "hidden_1d": (dict(hidden=torch.randn(H)), "hidden"),
    "hidden_int": (dict(hidden=torch.ones(B, T, H, dtype=torch.int64)), "hidden"),
    "weight_wrong_H": (dict(weight=torch.randn(V, H + 1)), "weight"),
    "weight_dtype_mismatch": (dict(weight=torch.randn(V, H, dtype=torch.float64)), "weight"),
    "target_float": (dict(target_ids=torch.zeros(B, T)), "target_ids"),
    "target_shape": (dict(target_ids=torch.zeros(B, T + 1, dtype=torch.long)), "target_ids"),
    "target_out_of_vocab": (dict(target_ids=torch.full((B, T), V, dtype=torch.long)), "target_ids"),
    "target_negative": (dict(target_ids=torch.full((B, T), -1, dtype=torch.long)), "target_ids"),
    "advantages_shape": (dict(advantages=torch.randn(B + 1)), "advantages"),
    "advantages_int": (dict(advantages=torch.ones(B, dtype=torch.long)), "advantages"),
    "mask_shape": (dict(mask=torch.ones(B, T + 1)), "mask"),
    "old_logp_shape": (dict(old_logp=torch.zeros(B)), "old_logp"),
    "ref_logp_int": (dict(ref_logp=torch.zeros(B, T, dtype=torch.long), beta=0.1), "ref_logp"),
    "beta_without_ref": (dict(beta=0.04), "ref_logp"),
    "beta_negative": (dict(beta=-1.0), "beta"),
    "unknown_loss_type": (dict(loss_type="ppo"), "loss_type"),
    "bad_backend": (dict(backend="cuda"), "backend"),
    "temperature_zero": (dict(temperature=0.0), "temperature"),
    "eps_low_one": (dict(eps_low=1.0), "eps_low"),
    "eps_high_negative": (dict(eps_high=-0.1), "eps_high"),
    "max_completion_length_zero": (dict(max_completion_length=0, loss_type="dr_grpo"), "max_completion_length"),
    "num_items_negative": (dict(num_items_in_batch=-3, loss_type="dapo"), "num_items_in_batch"),
    "bias_shape": (dict(bias=torch.zeros(V + 1)), "bias"),
    "sampling_logp_without_correction": (dict(sampling_logp=torch.zeros(B, T)), "sampling_correction"),
    "correction_without_sampling_logp": (dict(sampling_correction="token_mask"), "sampling_logp"),
    "unknown_correction": (dict(sampling_logp=torch.zeros(B, T), sampling_correction="token_clip"),
                           "sampling_correction"),
    "sampling_logp_shape": (dict(sampling_logp=torch.zeros(B), sampling_correction="sequence_mask"), "sampling_logp"),
    "sampling_logp_int": (dict(sampling_logp=torch.zeros(B, T, dtype=torch.long),
                               sampling_correction="sequence_mask"), "sampling_logp"),
    "cap_one": (dict(sampling_logp=torch.zeros(B, T), sampling_correction="token_truncate", sampling_cap=1.0),
                "sampling_cap"),
    "cap_nan": (dict(sampling_logp=torch.zeros(B, T), sampling_correction="token_truncate",
                     sampling_cap=float("nan")), "sampling_cap"),
    "unknown_level": (dict(importance_sampling_level="group"), "importance_sampling_level"),
    "quantile_zero": (dict(top_entropy_quantile=0.0), "top_entropy_quantile"),
    "quantile_above_one": (dict(top_entropy_quantile=1.5), "top_entropy_quantile"),
    "kl_bias_correction_not_bool": (dict(kl_bias_correction="yes"), "kl_bias_correction"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_names_the_argument(name):
    changes, argument = BAD[name]
    with pytest.raises(ValueError, match=re.escape(argument)):
        call(**changes)


def test_grpo_loss_and_selective_logprobs_check_their_inputs():
    args = good()
    with pytest.raises(ValueError, match="target_ids"):
        grpo_loss(torch.randn(B, T, V), args["target_ids"][:, :-1], args["advantages"], args["mask"])
    with pytest.raises(ValueError, match="logits"):
        grpo_loss(torch.randn(V), args["target_ids"], args["advantages"], args["mask"])
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(torch.randn(B, T, V), args["target_ids"], args["advantages"], args["mask"], loss_type="x")
    with pytest.raises(ValueError, match="sampling_cap"):
        grpo_loss(torch.randn(B, T, V), args["target_ids"], args["advantages"], args["mask"],
                  sampling_logp=torch.zeros(B, T), sampling_correction="sequence_truncate", sampling_cap=0.5)
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        grpo_loss(torch.randn(B, T, V), args["target_ids"], args["advantages"], args["mask"], top_entropy_quantile=-1)
    with pytest.raises(ValueError, match="temperature"):
        selective_logprobs(args["hidden"], args["weight"], args["target_ids"], temperature=-1.0)
    with pytest.raises(ValueError, match="weight"):
        selective_logprobs(args["hidden"], args["weight"].T, args["target_ids"])


def test_resolve_backend():
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("jax", "cpu")


def test_triton_is_never_chosen_for_float64(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("auto", "cuda", torch.float64) == "torch"
    with pytest.raises(ValueError, match="backend='triton'"):
        resolve_backend("triton", "cpu", torch.float64)


def test_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend='triton'"):
        call(backend="triton")
