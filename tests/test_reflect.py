"""The reflect-retry pipeline: exact token boundaries of episodes under several chat templates,
group bookkeeping, advantages and the failure dataset."""

from __future__ import annotations

import copy
import json
import zlib
from dataclasses import dataclass

import pytest

from r3fast.failures import failures_as_attempts, mine_failures, read_failures, write_failures
from r3fast.prompts import ReflectionPrompts
from r3fast.reflect import (
    ReflectConfig,
    chat_ids,
    first_attempts,
    reflect_retry,
    reflection_messages,
    retry_messages,
)
from r3fast.rollout.base import Completion, SamplingParams
from r3fast.rollout.hf import HFEngine
from r3fast.tasks.base import Instance, Prompt
from r3fast.verify import Verdict

# Written like the real templates: newlines inside string literals, so `{%-` trimming cannot eat them.
QWEN2_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\nYou may call these tools:' }}{%- for tool in tools %}"
    "{{- '\\n' + (tool | tojson) }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are Qwen, a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
GENERATION_PROMPTS = {
    "smollm2": "<|im_start|>assistant\n",
    "qwen2": "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
}


@dataclass(frozen=True)
class Code:
    code: str


class WordTask:
    """Say a word. Passes are a deterministic coin flip on the text, so groups get mixed rewards."""

    name = "word"

    def __init__(self, first_pass_every: int = 0):
        self.first_pass_every = first_pass_every

    def prompt(self, instance):
        task_text = f"Say the word {instance.data['word']} between <answer> tags."
        return Prompt(messages=[{"role": "user", "content": task_text}], tools=None, task_text=task_text)

    def verify(self, instance, text):
        if "Say the word" in text:  # never: marks that the context did not leak into the answer
            return False
        return zlib.crc32(text.encode()) % 3 == 0

    def explain(self, instance, text):
        return Code("PASS" if self.verify(instance, text) else "WRONG")


def instances(n):
    words = ["apple", "river", "stone", "cloud", "ember", "frost", "grain"]
    return [Instance(f"w{i}", {"word": words[i % len(words)]}) for i in range(n)]


def with_template(tokenizer, name):
    if name == "smollm2":
        return tokenizer
    clone = copy.deepcopy(tokenizer)
    clone.chat_template = QWEN2_TEMPLATE if name == "qwen2" else LLAMA3_TEMPLATE
    return clone


class ScriptedEngine:
    """Returns fixed texts' tokens (and records prompts), so episodes can be checked against known tokens."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.prompts = tokenizer, reply, []

    def generate(self, prompt_token_ids, params):
        self.prompts += [list(p) for p in prompt_token_ids]
        out = []
        for i, _ in enumerate(prompt_token_ids):
            samples = []
            for s in range(params.n):
                text = self.reply(len(self.prompts) - len(prompt_token_ids) + i, s)
                ids = self.tokenizer.encode(text, add_special_tokens=False)
                samples.append(Completion(ids, [-1.0] * len(ids), text, "stop", i))
            out.append(samples)
        return out

    def update_weights(self, named_tensors):
        pass

    def sleep(self, level=1):
        pass

    def wake_up(self, tags=None):
        pass


@pytest.mark.parametrize("template, batch_size", [("smollm2", 1), ("smollm2", 5), ("qwen2", 2), ("llama3", 4)])
def test_reflection_mask_covers_exactly_the_reflection(tiny_model, template, batch_size):
    model, base_tokenizer = tiny_model
    tokenizer = with_template(base_tokenizer, template)
    engine = HFEngine(model, tokenizer, batch_size=batch_size)
    config = ReflectConfig(group_size=3, attempt_max_new_tokens=4, reflection_max_new_tokens=5, seed=1)
    result = reflect_retry(engine, tokenizer, WordTask(), instances(3), config)
    assert len(result.episodes) == 3 * result.failed
    for episode in result.episodes:
        attempt = next(a for a in result.attempts if a.instance.id == episode.instance_id)
        # the context is the conversation up to the reflection's generation prompt, templated
        expected_context = chat_ids(tokenizer, reflection_messages(attempt, config.prompts))
        assert episode.context_ids == expected_context
        context_text = tokenizer.decode(episode.context_ids)
        assert context_text.endswith(GENERATION_PROMPTS[template])
        assert config.prompts.reflection_request in context_text
        # the masked tokens are the reflection, decoded back to its text (special tokens aside)
        masked = [t for t, m in zip(episode.input_ids, episode.reflection_mask, strict=True) if m]
        assert masked == episode.reflection_ids
        assert tokenizer.decode(masked, skip_special_tokens=True) == episode.reflection_text
        assert len(episode.reflection_logprobs) == len(episode.reflection_ids) > 0
        assert episode.target_mask == episode.reflection_mask[1:]
        assert len(episode.input_ids) == len(episode.reflection_mask)


@pytest.mark.parametrize("template", ["smollm2", "qwen2", "llama3"])
def test_episode_tokens_are_the_sampled_tokens_not_a_retokenisation(tiny_model, template):
    _, base_tokenizer = tiny_model
    tokenizer = with_template(base_tokenizer, template)
    # a reflection whose text would tokenise differently if merged with the prompt's last characters
    reflections = ["\n\nI used the wrong word.", " I  should say it plainly.", "Next time: <answer> word </answer>."]
    engine = ScriptedEngine(tokenizer, lambda call, s: reflections[s] if 2 <= call < 4 else "no")
    config = ReflectConfig(group_size=3)
    result = reflect_retry(engine, tokenizer, WordTask(), instances(2), config)
    reflection_prompts = engine.prompts[2:4]  # calls 0-1: attempts, 2-3: reflections, then retries
    for e in result.episodes:
        assert e.context_ids == reflection_prompts[e.group_id]
        assert e.reflection_ids == tokenizer.encode(reflections[result.episodes.index(e) % 3], add_special_tokens=False)
        assert e.input_ids == e.context_ids + e.reflection_ids
    # the retry restates the task after the reflection
    for e in result.episodes:
        retry_text = tokenizer.decode(e.retry_context_ids)
        assert retry_text.index(e.reflection_text.strip()) < retry_text.rindex("Say the word")
        assert retry_text.endswith(GENERATION_PROMPTS[template])


def test_groups_rewards_and_advantages(tiny_model):
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer, batch_size=8)
    config = ReflectConfig(group_size=4, attempt_max_new_tokens=5, reflection_max_new_tokens=5, reflection_temperature=1.0)
    result = reflect_retry(engine, tokenizer, WordTask(), instances(7), config)
    task = WordTask()
    assert result.first_try_passed == sum(task.verify(a.instance, a.completion.text) for a in result.attempts)
    groups = {}
    for e in result.episodes:
        assert e.reward == (1.0 if task.verify(None, e.retry_text) else 0.0) and e.retry_verdict == (e.reward == 1.0)
        assert not e.first_verdict
        groups.setdefault(e.group_id, []).append(e)
    assert all(len(g) == 4 for g in groups.values())
    assert len(groups) == result.failed
    for gid, group in groups.items():
        rewards = [e.reward for e in group]
        mean = sum(rewards) / 4
        assert sum(e.advantage for e in group) == pytest.approx(0.0, abs=1e-9)
        assert (gid in result.flat_groups) == (len(set(rewards)) == 1)
        for e in group:
            assert (e.advantage > 0) == (e.reward > mean)
    trained = result.training_episodes()
    assert {e.group_id for e in trained} == set(groups) - set(result.flat_groups)
    assert sum(result.retry_codes.values()) == len(result.episodes)
    assert sum(result.first_codes.values()) == 7
    assert result.stats["reflection"].generated_tokens == sum(len(e.reflection_ids) for e in result.episodes)


def test_only_failures_reflect():
    class Passes(WordTask):
        def verify(self, instance, text):
            return instance.id in ("w0", "w2")

    from transformers import AutoTokenizer

    from r3fast.models import materialize

    tokenizer = AutoTokenizer.from_pretrained(materialize("tiny-random"))
    engine = ScriptedEngine(tokenizer, lambda call, s: f"reply {call} {s}")
    result = reflect_retry(engine, tokenizer, Passes(), instances(4), ReflectConfig(group_size=2))
    assert result.first_try_passed == 2
    assert sorted({e.instance_id for e in result.episodes}) == ["w1", "w3"]
    assert len(result.episodes) == 4


def test_failure_dataset_round_trip(tiny_model, tmp_path):
    model, tokenizer = tiny_model
    engine = HFEngine(model, tokenizer, batch_size=4)
    params = SamplingParams(max_new_tokens=4, temperature=0)
    attempts = first_attempts(engine, tokenizer, WordTask(), instances(6), params)
    failed = [a for a in attempts if not a.passed]
    assert [a.instance.id for a in mine_failures(engine, tokenizer, WordTask(), instances(6), params)] == [
        a.instance.id for a in failed
    ]
    path = tmp_path / "failures.jsonl"
    assert write_failures(path, "word", attempts) == len(failed)
    loaded = read_failures(path, task="word")
    assert [(f.instance, f.attempt, f.verdict) for f in loaded] == [(a.instance, a.completion.text, a.code) for a in failed]
    # stored failures feed the loop like fresh attempts
    again = failures_as_attempts(loaded, WordTask(), tokenizer)
    assert [a.prompt_ids for a in again] == [a.prompt_ids for a in failed]
    result = reflect_retry(engine, tokenizer, WordTask(), [], ReflectConfig(group_size=2, reflection_max_new_tokens=3,
                                                                            attempt_max_new_tokens=3), attempts=again)
    assert len(result.episodes) == 2 * len(failed)


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"task": "word", "id": "a", "data": {}}', r"missing key\(s\) \['attempt', 'verdict'\]"),
        ('{"task": "word", "id": 3, "data": {}, "attempt": "", "verdict": "X"}', "'id' must be a string"),
        ('{"task": "word", "id": "a", "data": [], "attempt": "", "verdict": "X"}', "'data' must be an object"),
        ('{"task": "other", "id": "a", "data": {}, "attempt": "", "verdict": "X"}', "row is from task 'other', expected 'word'"),
    ],
)
def test_malformed_failure_rows_name_file_and_line(tmp_path, line, message):
    good = json.dumps({"task": "word", "id": "ok", "data": {}, "attempt": "x", "verdict": "WRONG"})
    path = tmp_path / "f.jsonl"
    path.write_text(good + "\n\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"f\.jsonl:3: {message}"):
        read_failures(path, task="word")


def test_missing_failure_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_failures(tmp_path / "missing.jsonl")


def test_reflection_and_retry_turns_follow_the_config(tiny_model):
    _, tokenizer = tiny_model
    prompts = ReflectionPrompts(reflection_request="What went wrong?", retry_request="Again: {task}")
    engine = ScriptedEngine(tokenizer, lambda call, s: "a reflection")
    task = WordTask()
    task.verify = lambda instance, text: False
    result = reflect_retry(engine, tokenizer, task, instances(1), ReflectConfig(group_size=1, prompts=prompts))
    (e,) = result.episodes
    assert tokenizer.decode(e.context_ids).endswith("What went wrong?<|im_end|>\n<|im_start|>assistant\n")
    assert "Again: Say the word apple" in tokenizer.decode(e.retry_context_ids)
    assert retry_messages  # the message builders are public for trainers that template themselves


def test_reflection_request_can_quote_the_verifiers_feedback(tiny_model):
    _, tokenizer = tiny_model
    prompts = ReflectionPrompts(reflection_request="Wrong: {feedback}. Why?")
    task = WordTask()
    task.verify = lambda instance, text: False
    task.explain = lambda instance, text: Verdict("WRONG", f"{len(text)} characters is not a word")
    engine = ScriptedEngine(tokenizer, lambda call, s: "a reflection" if call else "xyz")
    result = reflect_retry(engine, tokenizer, task, instances(1), ReflectConfig(group_size=1, prompts=prompts))
    (e,) = result.episodes
    assert tokenizer.decode(e.context_ids).endswith("Wrong: 3 characters is not a word. Why?<|im_end|>\n<|im_start|>assistant\n")


def test_chat_template_required(tiny_model):
    _, tokenizer = tiny_model
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        chat_ids(bare, [{"role": "user", "content": "hi"}])


def test_tools_reach_templates_that_take_them(tiny_model):
    """With a tools-aware template the schemas go through `tools=` into every turn's context, once."""
    from r3fast.tasks import get_task, load_instances

    _, base_tokenizer = tiny_model
    task = get_task("fncall-synthetic")
    (instance,) = load_instances("fncall-synthetic", n=1, seed=0)
    name = task.prompt(instance).tools[0]["function"]["name"]
    for template, in_system in (("qwen2", True), ("smollm2", False)):
        tokenizer = with_template(base_tokenizer, template)
        engine = ScriptedEngine(tokenizer, lambda call, s: "not a call")
        result = reflect_retry(engine, tokenizer, task, [instance], ReflectConfig(group_size=1))
        (e,) = result.episodes
        for ids in (result.attempts[0].prompt_ids, e.context_ids, e.retry_context_ids):
            text = tokenizer.decode(ids)
            system = text.split("<|im_start|>user")[0]
            assert (f'"name": "{name}"' in system) == in_system
            assert text.count(f'"name": "{name}"') == 1  # the retry restates the request, not the tools


def test_fresh_retry_layout_quotes_attempt_and_reflection_in_the_task_prompt(tiny_model):
    _, tokenizer = tiny_model
    prompts = ReflectionPrompts(retry_layout="fresh")
    replies = {0: "first try"}  # call 0: the attempt; then the reflection, then the retry
    engine = ScriptedEngine(tokenizer, lambda call, s: replies.get(call, "a reflection" if call == 1 else "retry"))
    task = WordTask()
    task.verify = lambda instance, text: False
    result = reflect_retry(engine, tokenizer, task, instances(1), ReflectConfig(group_size=1, prompts=prompts))
    (e,) = result.episodes
    task_text = task.prompt(instances(1)[0]).task_text
    expected = chat_ids(tokenizer, [{"role": "user", "content": (
        f"Your previous answer first try was wrong. Your note on it: a reflection\n\n{task_text}")}])
    assert e.retry_context_ids == expected
    # the reflection itself is still asked for after the attempt, in the continued chat
    assert tokenizer.decode(e.context_ids).endswith(prompts.reflection_request + "<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("kwargs, message", [
    ({"retry_layout": "sideways"}, "retry_layout must be one of"),
    ({"retry_request": "Try again."}, r"\{task\} placeholder"),
    ({"retry_request": "{reflection} {task}"}, "belong to the fresh retry layout"),
])
def test_bad_reflection_prompts_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReflectionPrompts(**kwargs)
