"""The shared-prefix forward gives the unshared computation's loss and gradients, up to rounding.

The oracle is the plain forward (collate(..., shared_prefix=False)): every sequence whole, one row
each, which tests/test_train_update.py checks against TRL's loss from full logits.
"""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_helpers import VOCAB

from r3fast.episode import TrainingSample
from r3fast.train import shared_prefix
from r3fast.train.config import load_config
from r3fast.train.distributed import DistContext
from r3fast.train.update import (
    PolicyLoss,
    collate,
    grpo_update,
    last_hidden,
    sequence_logprobs,
)

CPU = torch.device("cpu")
LOSS_KWARGS = dict(beta=0.0, eps_low=0.2, eps_high=0.2, temperature=0.7, max_completion_length=8)


def policy(attention: str = "eager", tied: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=tied, pad_token_id=0, attn_implementation=attention)
    return LlamaForCausalLM(config).float().eval()


def grouped_samples(shapes, seed: int = 0, shared_starts: bool = True) -> list[TrainingSample]:
    """shapes: (context length, [completion lengths]) per group; samples group-major, like the trainer's.
    With shared_starts, some completions of a group begin with the same tokens (a longer common prefix)."""
    rng = random.Random(seed)
    out = []
    for context_length, completion_lengths in shapes:
        context = [rng.randrange(3, VOCAB) for _ in range(context_length)]
        opening = [rng.randrange(3, VOCAB) for _ in range(max(completion_lengths))]
        for n in completion_lengths:
            same = rng.randint(0, n) if shared_starts else 0
            completion = opening[:same] + [rng.randrange(3, VOCAB) for _ in range(n - same)]
            out.append(TrainingSample(context, completion, rng.uniform(-1.5, 1.5)))
    return out


def loss_and_grads(model, batch, loss_type: str = "grpo"):
    model.zero_grad(set_to_none=True)
    loss, metrics = PolicyLoss(model)(batch, {**LOSS_KWARGS, "loss_type": loss_type})
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_grads_close(shared, unshared):
    scale = max(g.abs().max().item() for g in unshared.values())
    for name, grad in unshared.items():
        torch.testing.assert_close(shared[name], grad, rtol=1e-5, atol=1e-6 * scale, msg=name)


def assert_same_update(model, samples, loss_type: str = "grpo"):
    shared = collate(samples, 0, CPU)
    assert any(len(g) > 1 for g in shared.groups)
    loss_s, grads_s = loss_and_grads(model, shared, loss_type)
    loss_u, grads_u = loss_and_grads(model, collate(samples, 0, CPU, shared_prefix=False), loss_type)
    torch.testing.assert_close(loss_s, loss_u, rtol=1e-5, atol=1e-7)
    assert_grads_close(grads_s, grads_u)


def decoder_rows(model, batch) -> list[int]:
    """Batch sizes the decoder was called with while computing last_hidden(model, batch)."""
    rows = []
    hook = model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        last_hidden(model, batch)
    finally:
        hook.remove()
    return rows


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("tied", [True, False])
def test_mixed_groups_equal_unshared(attention, tied):
    # groups of 3, 1 and 4; prefixes of 7, 4 and 2 tokens; completions of 1 to 5 tokens
    samples = grouped_samples([(7, [3, 1, 5]), (4, [2]), (2, [1, 4, 4, 2])])
    model = policy(attention, tied)
    batch = collate(samples, 0, CPU)
    assert batch.groups == [[0, 1, 2], [3], [4, 5, 6, 7]]
    assert decoder_rows(model, batch) == [3]  # one packed row per group
    assert_same_update(model, samples)


def other_architecture(name: str):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
    if name == "qwen2":  # biased q/k/v projections
        return Qwen2ForCausalLM(Qwen2Config(**shape, attn_implementation="sdpa")).float().eval()
    if name == "mistral":  # a sliding window (4096) longer than any packed row
        return MistralForCausalLM(MistralConfig(**shape, attn_implementation="eager")).float().eval()
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128,  # learned
                                      bos_token_id=1, eos_token_id=2, attn_implementation="eager")).float().eval()


@pytest.mark.parametrize("architecture", ["qwen2", "mistral", "gpt2"])
def test_other_architectures_equal_unshared(architecture):
    samples = grouped_samples([(5, [2, 4, 1]), (3, [3, 3])], seed=7)
    model = other_architecture(architecture)
    assert decoder_rows(model, collate(samples, 0, CPU)) == [2]
    assert_same_update(model, samples)


def test_identical_completions_and_length_one_suffixes():
    # two samples identical to the end, and completions of one token: suffixes of length 0 and 1
    context = [5, 9, 11, 4, 7]
    samples = [TrainingSample(context, [8, 3], 1.0), TrainingSample(context, [8, 3], -0.5),
               TrainingSample(context, [8], 0.7), TrainingSample(context, [12], -1.2)]
    assert_same_update(policy(), samples)


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 12), st.lists(st.integers(1, 6), min_size=1, max_size=5)),
                       min_size=1, max_size=3).filter(lambda s: any(len(c) > 1 for _, c in s)),
       seed=st.integers(0, 2**16), loss_type=st.sampled_from(["grpo", "bnpo", "dr_grpo", "dapo"]),
       attention=st.sampled_from(["eager", "sdpa"]))
def test_any_grouping_equals_unshared(shapes, seed, loss_type, attention):
    assert_same_update(policy(attention, seed=seed % 3), grouped_samples(shapes, seed), loss_type)


def left_padded(batch):
    """The same sequences, padded on the left: (input_ids, attention_mask, first real column per row)."""
    ids, mask = batch.input_ids.clone(), batch.attention_mask.clone()
    pads = (mask == 0).sum(1)
    for b in range(ids.shape[0]):
        ids[b], mask[b] = ids[b].roll(int(pads[b])), mask[b].roll(int(pads[b]))
    return ids, mask, pads


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_left_and_right_padding_give_each_token_its_own_hidden_state(attention):
    samples = grouped_samples([(6, [2, 5, 1]), (3, [4, 3])], seed=3)
    model = policy(attention)
    right = collate(samples, 0, CPU, shared_prefix=False)
    with torch.no_grad():  # start 0: every input column, context included
        plain = model.get_decoder()(input_ids=right.input_ids, attention_mask=right.attention_mask).last_hidden_state
        from_right = shared_prefix.shared_prefix_hidden(model, right.input_ids, right.attention_mask, 0,
                                                        collate(samples, 0, CPU).groups)
        ids, mask, pads = left_padded(right)
        from_left = shared_prefix.shared_prefix_hidden(model, ids, mask, 0, collate(samples, 0, CPU).groups)
    for b, s in enumerate(samples):
        n = len(s.context_ids) + len(s.completion_ids) - 1  # inputs: every token but the last
        p = int(pads[b])
        torch.testing.assert_close(from_right[b, :n], plain[b, :n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(from_left[b, p : p + n], plain[b, :n], rtol=1e-5, atol=1e-5)
        assert not from_right[b, n:].any() and not from_left[b, :p].any()  # no input there


def real_prompt_samples(tokenizer, task_name: str) -> list[TrainingSample]:
    """First-try groups (the task prompt) and R3 groups (prompt, failed attempt, reflection request)
    of two instances, through the tokenizer's chat template, with answer-like completions."""
    from r3fast.prompts import ReflectionPrompts, chat_template_inputs, reflection_turn, template_takes_tools
    from r3fast.reflect import chat_ids
    from r3fast.tasks import get_task, load_instances
    from r3fast.tasks.function_calling import function_calling_instance

    task = get_task(task_name)
    weather = {"name": "get_weather", "description": "Current weather of a city.",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    instances = (load_instances(task_name, n=2, seed=5) if task_name.startswith("countdown") else
                 [function_calling_instance(f"What is the weather in {city}?", [weather],
                                            [{"name": "get_weather", "arguments": {"city": city}}])
                  for city in ("Oslo", "Lima")])
    takes_tools = template_takes_tools(getattr(tokenizer, "chat_template", None))
    answers = ["<answer> 3 + 4 </answer>", "<answer> 3 * 4 </answer>", "I think", "<answer>"]
    samples = []
    for instance in instances:
        messages, tools = chat_template_inputs(task.prompt(instance), takes_tools)
        reflection = [*messages, {"role": "assistant", "content": answers[0]},
                      reflection_turn(ReflectionPrompts(), "the result is 7, not the target")]
        for context in (chat_ids(tokenizer, messages, tools), chat_ids(tokenizer, reflection, tools)):
            for j, text in enumerate(answers):
                samples.append(TrainingSample(context, tokenizer.encode(text, add_special_tokens=False),
                                              (-1.0) ** j * (j + 1) / 4))
    return samples


@pytest.mark.parametrize("task_name", ["countdown-easy", "function_calling"])
def test_real_prompts_through_the_chat_template(tiny_model, task_name):
    model, tokenizer = tiny_model
    samples = real_prompt_samples(tokenizer, task_name)
    assert min(len(s.context_ids) for s in samples) > 50
    for chunk in (samples[:8], samples[8:]):  # micro-batches of 8: one first-try and one R3 group each
        batch = collate(chunk, tokenizer.pad_token_id, CPU)
        assert [len(g) for g in batch.groups] == [4, 4]
        assert decoder_rows(model, batch) == [2]
        loss_s, grads_s = loss_and_grads(model, batch)
        loss_u, grads_u = loss_and_grads(model, collate(chunk, tokenizer.pad_token_id, CPU, shared_prefix=False))
        torch.testing.assert_close(loss_s, loss_u, rtol=1e-5, atol=1e-7)
        assert_grads_close(grads_s, grads_u)
    model.zero_grad(set_to_none=True)


def train_five_steps(shared: bool, **options):
    model = policy()
    ref = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    samples = grouped_samples([(9, [4, 2, 6, 3]), (5, [3, 5, 1, 2]), (7, [2, 2])], seed=11)
    for step in range(5):
        grpo_update(PolicyLoss(model), model, optimizer, samples[step % 3 :], loss_type="grpo",
                    eps_low=0.2, eps_high=0.28, micro_batch_size=6, old_logp_source="trainer", temperature=0.7,
                    max_completion_length=8, max_grad_norm=1.0, pad_id=0, dist=DistContext(), ref_model=ref,
                    shared_prefix=shared, **options)
    return model.state_dict()


@pytest.mark.parametrize("options", [dict(beta=0.0, num_iterations=1), dict(beta=0.05, num_iterations=2)],
                         ids=["plain", "kl-and-two-iterations"])
def test_five_training_steps_give_the_same_weights(options):
    shared, unshared = train_five_steps(True, **options), train_five_steps(False, **options)
    start = policy().state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in shared.items())
    for name, value in unshared.items():
        torch.testing.assert_close(shared[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_old_and_reference_logprobs_use_the_shared_forward():
    samples = grouped_samples([(8, [3, 5, 2]), (4, [4, 1])], seed=2)
    model = policy("sdpa")
    shared, unshared = collate(samples, 0, CPU), collate(samples, 0, CPU, shared_prefix=False)
    assert decoder_rows(model, shared) == [2]
    torch.testing.assert_close(sequence_logprobs(model, shared, 0.7), sequence_logprobs(model, unshared, 0.7),
                               rtol=1e-5, atol=1e-5)


def test_a_backend_without_custom_masks_falls_back_and_says_so_once(monkeypatch):
    model = policy()
    monkeypatch.setattr(model.config, "_attn_implementation", "flash_attention_2")
    monkeypatch.setattr(shared_prefix, "_warned", set())
    groups = [[0, 1], [2]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not shared_prefix.shares_work(model, groups)
        assert not shared_prefix.shares_work(model, groups)
    assert len(caught) == 1 and "flash_attention_2" in str(caught[0].message)
    monkeypatch.setattr(model.config, "_attn_implementation", "sdpa")
    assert shared_prefix.shares_work(model, groups)
    assert not shared_prefix.shares_work(model, [[0], [1]])  # nothing shared: the plain forward
    assert not shared_prefix.shares_work(model, None)


def test_a_packed_row_longer_than_the_sliding_window_falls_back(monkeypatch):
    samples = grouped_samples([(6, [3, 3, 3])])
    model = policy()
    monkeypatch.setattr(model.config, "sliding_window", 5, raising=False)
    monkeypatch.setattr(shared_prefix, "_warned", set())
    batch = collate(samples, 0, CPU)
    with pytest.warns(UserWarning, match="sliding window"):
        assert decoder_rows(model, batch) == [3]  # every sequence whole
    assert_same_update(model, samples)


def test_bad_inputs_are_named():
    ids = torch.tensor([[5, 6, 7], [5, 6, 8]])
    with pytest.raises(ValueError, match="attention_mask row 1"):
        shared_prefix.pack(ids, torch.tensor([[1, 1, 1], [1, 0, 1]]), 0, [[0, 1]])
    with pytest.raises(ValueError, match="groups must hold each"):
        shared_prefix.pack(ids, torch.ones_like(ids), 0, [[0]])


def test_context_groups_and_the_config_switch():
    assert shared_prefix.context_groups([[1, 2], [3], [1, 2], [3], [4]]) == [[0, 2], [1, 3], [4]]
    assert load_config(preset="countdown-cpu").loss.shared_prefix is True
    assert load_config(preset="countdown-cpu", overrides=["loss.shared_prefix=false"]).loss.shared_prefix is False
    with pytest.raises(ValueError, match="loss.shared_prefix"):
        load_config(preset="countdown-cpu", overrides=["loss.shared_prefix=sometimes"])
