"""The reflect-retry pipeline: exact token boundaries of episodes under several chat templates,
group bookkeeping, advantages and the failure dataset."""

from __future__ import annotations

import copy
import json
import zlib

import pytest
from stand_in_task import StandInTask

from r3fast.episode import Episode
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


class WordTask(StandInTask):
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
    """Returns fixed texts' tokens (and records prompts and sampling params), so episodes can be checked
    against known tokens."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.prompts, self.params = tokenizer, reply, [], []

    def generate(self, prompt_token_ids, params):
        self.prompts += [list(p) for p in prompt_token_ids]
        self.params.append(params)
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
        # the loss mask (collate: the one mask builder) covers the reflection, decoded back to its text
        masked = loss_targets(episode)
        assert masked == episode.completion_ids
        assert tokenizer.decode(masked, skip_special_tokens=True) == episode.reflection_text
        assert len(episode.sampling_logprobs) == len(episode.completion_ids) > 0


def loss_targets(sample) -> list[int]:
    """The target tokens the loss mask covers when `sample` is trained alone."""
    import torch

    from r3fast.train.update import collate

    batch = collate([sample], pad_id=0, device=torch.device("cpu"), shared_prefix=False)
    return batch.target_ids[0][batch.loss_mask[0].bool()].tolist()


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
        assert e.completion_ids == tokenizer.encode(reflections[result.episodes.index(e) % 3], add_special_tokens=False)
        assert loss_targets(e) == e.completion_ids
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
        (text,) = e.retry_texts  # k = 1
        assert e.reward == (1.0 if task.verify(None, text) else 0.0) and e.retry_verdicts == [e.reward == 1.0]
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
    # flat groups stay in the episodes (the trainer's normaliser counts them), with advantage exactly 0
    assert all(e.advantage == 0.0 for e in result.episodes if e.group_id in result.flat_groups)
    assert sum(result.retry_codes.values()) == len(result.episodes)
    assert sum(result.first_codes.values()) == 7
    assert result.stats["reflection"].generated_tokens == sum(len(e.completion_ids) for e in result.episodes)


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


# -- graded rewards: k retries per reflection ---------------------------------------------------


class TaggedPasses(WordTask):
    """A text passes when it holds PASS: scripted retries decide every verdict."""

    def verify(self, instance, text):
        return "PASS" in text


def test_k_retries_reward_is_the_fraction_that_pass(tiny_model):
    _, tokenizer = tiny_model
    k, group_size = 4, 3
    failed = 2
    retry_passes = [0, 1, 4, 2, 3, 4]  # for the failed * G reflections, in order: how many of the k retries pass

    # prompts 0-1: first attempts (all fail); 2-3: reflections; then one prompt per reflection, whose
    # sample s passes when s < retry_passes[reflection]
    def reply(prompt, s):
        return "fail" if prompt < 2 * failed else ("PASS" if s < retry_passes[prompt - 2 * failed] else "no")
    engine = ScriptedEngine(tokenizer, reply)
    config = ReflectConfig(group_size=group_size, retries_per_reflection=k, retry_temperature=0.7)
    result = reflect_retry(engine, tokenizer, TaggedPasses(), instances(failed), config)
    assert [len(e.retry_texts) for e in result.episodes] == [k] * failed * group_size
    for e, passes in zip(result.episodes, retry_passes, strict=True):
        assert e.retry_verdicts == [s < passes for s in range(k)]
        assert e.reward == passes / k  # the oracle: the pass fraction of the scripted retries
        assert e.rescued == (passes > 0)
        assert len(e.retry_ids) == k and e.retry_ids[0] == tokenizer.encode(e.retry_texts[0], add_special_tokens=False)
    # the k retries are one request with n = k per reflection (engines share its prefill)
    assert len(engine.prompts) == failed + failed + failed * group_size
    assert sum(result.retry_codes.values()) == failed * group_size * k
    assert result.retry_passed_groups == 2
    # the loss still covers the reflection tokens only
    for e in result.episodes:
        assert loss_targets(e) == e.completion_ids
    # group 0's rewards (0, 1/4, 1) are mixed, so its advantages follow its rewards
    group = [e for e in result.episodes if e.group_id == 0]
    assert group[0].advantage < group[1].advantage < group[2].advantage


def test_episodes_survive_a_json_round_trip(tiny_model):
    _, tokenizer = tiny_model
    engine = ScriptedEngine(tokenizer, lambda call, s: "PASS" if call >= 2 and s == 0 else "no")
    config = ReflectConfig(group_size=2, retries_per_reflection=3, retry_temperature=1.0)
    result = reflect_retry(engine, tokenizer, TaggedPasses(), instances(1), config)
    for e in result.episodes:
        again = Episode.from_dict(json.loads(json.dumps(e.to_dict())))
        assert again == e and again.reward == 1 / 3


@pytest.mark.parametrize("kwargs, name", [
    ({"retries_per_reflection": 0}, "retries_per_reflection"),
    ({"retry_temperature": -0.5}, "retry_temperature"),
    ({"reflection_temperature": -1.0}, "reflection_temperature"),
])
def test_bad_reflect_config_values_name_the_field(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must be >= "):
        ReflectConfig(**kwargs)


# -- the control: a retry without reflection ------------------------------------------------------


@pytest.mark.parametrize("layout, request_text", [
    ("fresh", "Wrong: {feedback}. Why?"),
    ("fresh", "What went wrong?"),
    ("continue", "Wrong: {feedback}. Why?"),
])
def test_the_controls_prompt_holds_the_failed_attempt_and_not_the_reflection(tiny_model, layout, request_text):
    _, tokenizer = tiny_model
    prompts = ReflectionPrompts(retry_layout=layout, reflection_request=request_text)
    task = WordTask()
    task.verify = lambda instance, text: False
    task.explain = lambda instance, text: Verdict("WRONG", "FEEDBACK-TEXT")
    replies = {0: "ATTEMPT-TEXT", 1: "REFLECTION-TEXT"}
    engine = ScriptedEngine(tokenizer, lambda call, s: replies.get(call, "retry"))
    config = ReflectConfig(group_size=1, prompts=prompts)
    result = reflect_retry(engine, tokenizer, task, instances(1), config, control=True)
    (e,), (control,) = result.episodes, result.control
    assert control.reflection is None and control.attempt is result.attempts[0]
    assert engine.prompts[-1] == control.prompt_ids  # the control's request is the last one made
    control_text = tokenizer.decode(control.prompt_ids)
    retry_text = tokenizer.decode(e.retry_context_ids)
    assert "REFLECTION-TEXT" in retry_text and "REFLECTION-TEXT" not in control_text
    assert "ATTEMPT-TEXT" in control_text
    assert control_text.count("Say the word apple") == 1 + (layout == "continue")  # the task restated once more
    assert ("FEEDBACK-TEXT" in control_text) == ("{feedback}" in request_text)
    assert control_text.endswith(GENERATION_PROMPTS["smollm2"])
    # the control is the retry with the reflection removed: built by the same function
    expected = chat_ids(tokenizer, retry_messages(result.attempts[0], prompts, None))
    assert control.prompt_ids == expected
    if layout == "continue":  # the chat with the failed attempt and a retry request, no reflection turn
        assert request_text.split(":")[0] not in control_text


def test_the_control_samples_like_the_retry_with_as_many_tries_as_a_group(tiny_model):
    _, tokenizer = tiny_model
    engine = ScriptedEngine(tokenizer, lambda prompt, s: "PASS" if prompt == 5 and s == 5 else "no")  # 5: the control
    config = ReflectConfig(group_size=3, retries_per_reflection=2, retry_temperature=0.7, top_p=0.9)
    result = reflect_retry(engine, tokenizer, TaggedPasses(), instances(1), config, control=True)
    retry, control = engine.params[2], engine.params[3]
    assert (control.temperature, control.top_p, control.max_new_tokens) == (retry.temperature, retry.top_p,
                                                                              retry.max_new_tokens)
    assert (retry.n, control.n) == (2, 6)
    assert result.control_passed == 1 and result.retry_passed_groups == 0
    assert result.paired_rescues() == {(False, True): 1}
    assert result.stats["control"].generated_tokens > 0


def test_no_quote_retry_leaves_the_failed_answer_out(tiny_model):
    _, tokenizer = tiny_model
    prompts = ReflectionPrompts(retry_layout="fresh", quote_attempt=False)
    task = WordTask()
    task.verify = lambda instance, text: False
    engine = ScriptedEngine(tokenizer, lambda call, s: {0: "ATTEMPT-TEXT", 1: "REFLECTION-TEXT"}.get(call, "x"))
    result = reflect_retry(engine, tokenizer, task, instances(1), ReflectConfig(group_size=1, prompts=prompts),
                           control=True)
    retry_text = tokenizer.decode(result.episodes[0].retry_context_ids)
    assert "REFLECTION-TEXT" in retry_text and "ATTEMPT-TEXT" not in retry_text
    # without the quote and without feedback the control is the task prompt again: a resample
    assert result.control[0].prompt_ids == result.attempts[0].prompt_ids
    with pytest.raises(ValueError, match="quote_attempt=False needs retry_layout='fresh'"):
        ReflectionPrompts(quote_attempt=False)


def test_reflection_requests_by_name():
    from r3fast.prompts import DIAGNOSIS_REFLECTION_REQUEST

    assert ReflectionPrompts(reflection_request="diagnose").reflection_request == DIAGNOSIS_REFLECTION_REQUEST
    assert "{feedback}" in DIAGNOSIS_REFLECTION_REQUEST


@pytest.mark.parametrize("mode", ["ban", "stop"])
def test_answer_tags_reach_the_reflections_sampling(tiny_model, mode):
    from r3fast.reflect import reflection_tag_options

    _, tokenizer = tiny_model
    config = ReflectConfig(group_size=2, **reflection_tag_options(mode, "countdown-easy"))
    task = WordTask()
    task.verify = lambda instance, text: False
    engine = ScriptedEngine(tokenizer, lambda call, s: "x")
    reflect_retry(engine, tokenizer, task, instances(1), config)
    attempt, reflection, retry = engine.params
    tags = ("<answer>", "</answer>")
    assert (reflection.bad_words, reflection.stop) == ((tags, ()) if mode == "ban" else ((), tags))
    assert attempt.bad_words == retry.bad_words == () and attempt.stop == retry.stop == ()
    with pytest.raises(ValueError, match="must be one of"):
        reflection_tag_options("forbid", "countdown-easy")
