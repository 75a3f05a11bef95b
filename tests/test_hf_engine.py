"""HFEngine against independent oracles: an uncached argmax loop, a teacher-forced forward pass,
the softmax it samples from, and the text of its own greedy output (for stop strings)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r3fast.rollout import RolloutEngine
from r3fast.rollout.base import SamplingParams
from r3fast.rollout.hf import HFEngine, cut_at_stop, sample_next

TEXTS = ["What is 2+3?", "Write a short poem about the sea, please.", "Hi", "Using 3 and 5, make 8. Think first."]


@pytest.fixture(scope="module")
def prompts(tiny_model):
    _, tokenizer = tiny_model
    return [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]


def engine(tiny_model, batch_size=2):
    model, tokenizer = tiny_model
    return HFEngine(model, tokenizer, batch_size=batch_size)


def argmax_loop(model, prompt, steps, eos_ids):
    """Greedy decoding the slow way: the whole sequence through the model at every step, no cache."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            out.append(token)
            ids.append(token)
            if token in eos_ids:
                break
    return out


def teacher_forced_logprobs(model, prompt, completion, temperature):
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + list(completion)])).logits[0].float()
    if temperature > 0:
        logits = logits / temperature
    lp = torch.log_softmax(logits, -1)[len(prompt) - 1 : -1]
    return lp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_is_a_rollout_engine(tiny_model):
    assert isinstance(engine(tiny_model), RolloutEngine)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_greedy_equals_argmax_loop(tiny_model, prompts, batch_size):
    model, _ = tiny_model
    eng = engine(tiny_model, batch_size)
    outs = eng.generate(prompts, SamplingParams(max_new_tokens=12, temperature=0))
    for prompt, (completion,) in zip(prompts, outs, strict=True):
        assert completion.token_ids == argmax_loop(model, prompt, 12, eng.eos_ids)
        assert completion.finish_reason == "length"


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_logprobs_equal_teacher_forced_forward(tiny_model, prompts, temperature):
    model, _ = tiny_model
    outs = engine(tiny_model, 3).generate(prompts, SamplingParams(max_new_tokens=10, temperature=temperature, n=2, seed=3))
    for prompt, samples in zip(prompts, outs, strict=True):
        for c in samples:
            expected = teacher_forced_logprobs(model, prompt, c.token_ids, temperature)
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_n_samples_per_prompt_in_input_order(tiny_model, prompts):
    outs = engine(tiny_model, 4).generate(prompts, SamplingParams(max_new_tokens=6, temperature=1.0, n=3, seed=0))
    assert [len(o) for o in outs] == [3] * len(prompts)
    assert all(c.prompt_index == i for i, o in enumerate(outs) for c in o)
    assert all(len(c.token_ids) == len(c.logprobs) == 6 for o in outs for c in o)
    assert len({tuple(c.token_ids) for c in outs[1]}) > 1  # sampled, not copies


def test_seeds_reproduce(tiny_model, prompts):
    eng = engine(tiny_model, 2)
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=11)
    first = [[c.token_ids for c in o] for o in eng.generate(prompts, params)]
    again = [[c.token_ids for c in o] for o in eng.generate(prompts, params)]
    other = [[c.token_ids for c in o] for o in eng.generate(prompts, SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=12))]
    assert first == again
    assert first != other


def test_stop_string_ends_generation_and_is_kept(tiny_model, prompts):
    _, tokenizer = tiny_model
    eng = engine(tiny_model, 2)
    (full,) = eng.generate(prompts[:1], SamplingParams(max_new_tokens=16, temperature=0))[0]
    # a stop string that first appears in the middle of the greedy text
    stop = tokenizer.decode(full.token_ids[5:7]).strip()[:4]
    assert stop and stop in full.text
    (cut,) = eng.generate(prompts[:1], SamplingParams(max_new_tokens=16, temperature=0, stop=(stop, "never-there")))[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop) + len(stop)]
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
    # the shortest prefix of tokens holding the stop string: one token fewer would not
    assert stop in tokenizer.decode(cut.token_ids) and stop not in tokenizer.decode(cut.token_ids[:-1])
    assert len(cut.logprobs) == len(cut.token_ids)


def test_eos_ends_generation(tiny_model, prompts):
    eng = engine(tiny_model, 2)
    (full,) = eng.generate(prompts[:1], SamplingParams(max_new_tokens=12, temperature=0))[0]
    eng.eos_ids = {full.token_ids[4]}  # pretend the fifth greedy token is the end of the turn
    (short,) = eng.generate(prompts[:1], SamplingParams(max_new_tokens=12, temperature=0))[0]
    first = full.token_ids.index(full.token_ids[4])
    assert short.token_ids == full.token_ids[: first + 1]  # the eos token is kept, generation stops there
    assert short.finish_reason == "stop"


def test_update_weights_in_place(tiny_model, prompts):
    model, tokenizer = tiny_model
    from r3fast.models import load

    fresh, _ = load("tiny-random")
    eng = HFEngine(fresh, tokenizer, batch_size=2)
    params = SamplingParams(max_new_tokens=8, temperature=0)
    before = [o[0].token_ids for o in eng.generate(prompts, params)]
    perturbed = {name: t + 0.05 * torch.randn_like(t) for name, t in model.state_dict().items() if "layers.1" in name}
    eng.update_weights(perturbed.items())
    for name, t in perturbed.items():
        assert torch.equal(fresh.state_dict()[name], t)
    after = [o[0].token_ids for o in eng.generate(prompts, params)]
    assert after != before
    eng.update_weights(model.state_dict().items())  # back to the original weights
    assert [o[0].token_ids for o in eng.generate(prompts, params)] == before
    with pytest.raises(ValueError, match="no tensor named 'nope'"):
        eng.update_weights([("nope", torch.zeros(1))])
    with pytest.raises(ValueError, match="has shape"):
        eng.update_weights([("model.norm.weight", torch.zeros(3))])


def test_bad_input(tiny_model):
    eng = engine(tiny_model)
    with pytest.raises(ValueError, match=r"prompt_token_ids\[1\]"):
        eng.generate([[1, 2], []], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match=r"prompt_token_ids\[0\]"):
        eng.generate(["hello"], SamplingParams(max_new_tokens=2))
    with pytest.raises(ValueError, match="batch_size"):
        HFEngine(*tiny_model, batch_size=0)
    eng.sleep()
    eng.wake_up()  # no-ops, but part of the protocol


def test_sampling_follows_the_tempered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    tokens, lp = sample_next(logits, SamplingParams(temperature=0.5), g)
    expected = torch.softmax(logits[0] / 0.5, -1)
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)
    torch.testing.assert_close(lp, expected.log()[tokens])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=12), st.floats(0.05, 0.95), st.integers(0, 2**31))
def test_top_p_samples_only_from_the_nucleus(values, top_p, seed):
    logits = torch.tensor([values]).repeat(64, 1)
    tokens, _ = sample_next(logits, SamplingParams(temperature=1.0, top_p=top_p), torch.Generator().manual_seed(seed))
    probs = torch.softmax(torch.tensor(values), -1)
    order = probs.argsort(descending=True)
    mass_before = probs[order].cumsum(0) - probs[order]
    # The smallest prefix reaching top_p (with float slack at the boundary); tokens tied with its last
    # member are equally valid, since the order among equal probabilities is arbitrary.
    size = int((mass_before < top_p + 1e-5).sum())
    threshold = probs[order][size - 1]
    nucleus = set((probs >= threshold - 1e-6).nonzero().flatten().tolist())
    assert set(tokens.tolist()) <= nucleus


def test_cut_at_stop():
    assert cut_at_stop("a </answer> b </x>", ["</x>", "</answer>"]) == "a </answer>"
    assert cut_at_stop("nothing here", ["</answer>"]) is None


def test_sampled_rows_share_their_prompt_prefill(tiny_model, prompts):
    """n samples of a prompt run its prefill once: the model sees each prompt token once, not n times."""
    model, _ = tiny_model
    seen = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        outs = engine(tiny_model, 6).generate(prompts, SamplingParams(max_new_tokens=3, temperature=1.0, n=3, seed=0))
    finally:
        hook.remove()
    prefills = [shape for shape in seen if shape[1] > 1]
    # 6 rows per batch at n=3: two prompts per prefill, each prompt prefilled exactly once
    assert sorted(rows for rows, _ in prefills) == [2, 2]
    # the step after each prefill decodes n rows per prompt
    after = [seen[k + 1][0] for k, shape in enumerate(seen) if shape[1] > 1]
    assert after == [6, 6]
    assert [len(o) for o in outs] == [3] * len(prompts)
    assert all(len(c.token_ids) == 3 for o in outs for c in o)


def masked_argmax_loop(model, prompt, steps, eos_ids, banned_sequences):
    """argmax_loop where a token is skipped whenever the output would then end with a banned sequence."""
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1].clone()
            for seq in banned_sequences:  # only the sequence's last token can complete it
                if (out + [seq[-1]])[-len(seq):] == list(seq):
                    logits[seq[-1]] = float("-inf")
            token = int(logits.argmax())
            out.append(token)
            ids.append(token)
            if token in eos_ids:
                break
    return out


def contains(tokens, seq):
    return any(tokens[i:i + len(seq)] == list(seq) for i in range(len(tokens) - len(seq) + 1))


def test_bad_words_are_never_generated(tiny_model, prompts):
    model, tokenizer = tiny_model
    eng = engine(tiny_model, batch_size=4)
    steps = 12
    plain = eng.generate(prompts, SamplingParams(max_new_tokens=steps, temperature=0))
    # a word the model writes greedily, two tokens long, so the ban has to follow what was generated
    word = next(w for c in plain for i in range(steps - 1)
                if len(tokenizer.encode(w := tokenizer.decode(c[0].token_ids[i:i + 2]), add_special_tokens=False)) >= 2
                and contains(c[0].token_ids, tokenizer.encode(w, add_special_tokens=False)))
    sequences = [tokenizer.encode(t, add_special_tokens=False) for t in (word, " " + word.lstrip())]
    banned = eng.generate(prompts, SamplingParams(max_new_tokens=steps, temperature=0, bad_words=(word,)))
    for prompt, (completion,) in zip(prompts, banned, strict=True):
        assert completion.token_ids == masked_argmax_loop(model, prompt, steps, eng.eos_ids, sequences)
        assert not any(contains(completion.token_ids, seq) for seq in sequences)
    assert [c[0].token_ids for c in banned] != [c[0].token_ids for c in plain]
    # sampled: many draws, none holds the word's tokens; log-probs are those of the banned distribution
    sampled = eng.generate(prompts, SamplingParams(max_new_tokens=steps, temperature=1.5, n=6, seed=3, bad_words=(word,)))
    for completions in sampled:
        for c in completions:
            assert not any(contains(c.token_ids, seq) for seq in sequences)
            assert all(lp <= 0 and lp > float("-inf") for lp in c.logprobs)


def test_bad_words_must_be_strings():
    with pytest.raises(ValueError, match="bad_words must be a sequence of non-empty strings"):
        SamplingParams(bad_words="<answer>")
    with pytest.raises(ValueError, match="bad_words"):
        SamplingParams(bad_words=("",))
