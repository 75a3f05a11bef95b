"""Small shared pieces of the trainer tests: a tiny in-process policy and random samples."""

from __future__ import annotations

import random

import torch

from r3fast.episode import TrainingSample
from r3fast.train.update import collate

VOCAB = 64


def tiny_policy(seed: int = 0, dtype: torch.dtype = torch.float64, tied: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=tied, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         attn_implementation="eager")
    return LlamaForCausalLM(config).to(dtype).eval()


def random_samples(n: int, seed: int = 0, with_old: bool = False) -> list[TrainingSample]:
    """Contexts and completions of varied lengths; advantages of both signs, some zero."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        context = [rng.randrange(3, VOCAB) for _ in range(rng.randint(2, 9))]
        completion = [rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 7))]
        advantage = [1.0, -1.0, 0.5, -0.75, 0.0][i % 5] * rng.uniform(0.5, 1.5)
        old = [rng.uniform(-6.0, -3.0) for _ in completion] if with_old else None
        out.append(TrainingSample(context, completion, advantage, old))
    return out


class RecordGrads(torch.optim.Optimizer):
    """An optimizer that changes nothing and keeps a copy of the gradients of each step."""

    def __init__(self, params):
        super().__init__(params, {})
        self.steps: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        self.steps.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                           for group in self.param_groups for p in group["params"]])


def naive_loss(model, samples, loss_type, max_completion_length, temperature=1.0):
    """TRL's GRPO loss on one batch, on-policy, from full logits of the HF forward (the oracle)."""
    batch = collate(samples, 0, torch.device("cpu"))
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, batch.start : -1]
    logp = torch.log_softmax(logits / temperature, -1).gather(-1, batch.target_ids[..., None]).squeeze(-1)
    ratio = torch.exp(logp - logp.detach())
    per_token = -ratio * batch.advantages[:, None]
    m = batch.loss_mask.to(logp.dtype)
    if loss_type == "grpo":
        return ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return (per_token * m).sum() / m.sum()
    if loss_type == "dr_grpo":
        return (per_token * m).sum() / (len(samples) * max_completion_length)
    return (per_token * m).sum() / m.sum()  # dapo over the whole batch: the global token mean
