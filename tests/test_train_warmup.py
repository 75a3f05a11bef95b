"""The first-try GRPO stage: G sampled attempts per task become samples whose advantages are the
group-normalised rewards of the verifier, and whose context is exactly the templated task prompt."""

from __future__ import annotations

import zlib

import pytest
from stand_in_task import StandInTask

from r3fast.advantages import group_advantages
from r3fast.prompts import chat_ids
from r3fast.rollout.base import SamplingParams
from r3fast.rollout.hf import HFEngine
from r3fast.tasks.base import Instance, Prompt
from r3fast.train.warmup import warmup_batch


class CoinTask(StandInTask):
    """Passes an answer by a fixed hash of its text: some groups mixed, some flat."""

    name = "coin"

    def prompt(self, instance):
        text = f"Say {instance.data['word']}."
        return Prompt(messages=[{"role": "user", "content": text}], tools=None, task_text=text)

    def verify(self, instance, text):
        return zlib.crc32(text.encode()) % 2 == 0



def test_samples_carry_group_advantages_of_the_verifier_rewards(tiny_model):
    model, tokenizer = tiny_model
    task = CoinTask()
    instances = [Instance(f"w{i}", {"word": w}) for i, w in enumerate(["apple", "river", "stone", "cloud", "ember"])]
    params = SamplingParams(max_new_tokens=4, temperature=1.0, n=4, seed=5)
    batch = warmup_batch(HFEngine(model, tokenizer, batch_size=8), tokenizer, task, instances, params)

    rewards = [s.reward for s in batch.samples]
    assert batch.groups == 5 and len(rewards) == 20
    group_ids = [g for g in range(5) for _ in range(4)]
    expected = group_advantages(rewards, group_ids)
    assert batch.flat_groups == len(expected.flat_groups)
    # every attempt is a sample (flat groups count in the loss's normalisation), with an exact 0 there
    assert [s.advantage for s in batch.samples] == pytest.approx(expected.advantages)
    assert all(s.advantage == 0.0 for s, g in zip(batch.samples, group_ids, strict=True) if g in expected.flat_groups)
    contexts = {g: chat_ids(tokenizer, task.prompt(instances[g]).messages) for g in range(5)}
    assert [s.context_ids for s in batch.samples] == [contexts[g] for g in group_ids]
    assert [s.group_id for s in batch.samples] == group_ids
    # a sample's reward is the verifier's verdict on the decoded completion
    for s, reward, a in zip(batch.samples, rewards, expected.advantages, strict=True):
        passed = task.verify(None, tokenizer.decode(s.completion_ids, skip_special_tokens=True))
        assert reward == (1.0 if passed else 0.0)
        assert a == 0.0 or (a > 0) == passed
        assert len(s.sampling_logprobs) == len(s.completion_ids)
    assert 0 < batch.flat_groups < 5  # the seed gives both kinds of group


@pytest.mark.parametrize("n, temperature", [(1, 1.0), (4, 0.0)])
def test_a_group_needs_several_sampled_attempts(tiny_model, n, temperature):
    model, tokenizer = tiny_model
    with pytest.raises(ValueError, match="needs n >= 2 sampled attempts"):
        warmup_batch(HFEngine(model, tokenizer), tokenizer, CoinTask(), [Instance("a", {"word": "x"})],
                        SamplingParams(max_new_tokens=2, temperature=temperature, n=n))
