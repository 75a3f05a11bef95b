"""Prompt templates: demonstrations answer in the exact format the verifier accepts, few-shot
turns are laid out as configured, rotation is deterministic, tools reach the template once."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from r3fast.prompts import (
    COUNTDOWN_DEMOS,
    FUNCTION_CALLING_DEMOS,
    CountdownDemo,
    PromptConfig,
    chat_template_inputs,
    fill,
    render_calls,
    select_demos,
    template_takes_tools,
)
from r3fast.tasks import Instance, get_task
from r3fast.tasks.countdown import countdown_instance
from r3fast.tasks.countdown import countdown_prompt as _countdown_prompt
from r3fast.tasks.function_calling import function_calling_prompt as _function_calling_prompt
from r3fast.verify import check_countdown, check_function_calls


def countdown_prompt(numbers, target, instance_id, config):
    return _countdown_prompt(Instance(instance_id, {"numbers": numbers, "target": target}), config)


def function_calling_prompt(query, tools, instance_id, config):
    return _function_calling_prompt(Instance(instance_id, {"query": query, "tools": tools, "answers": []}), config)


def test_fill_replaces_named_placeholders_once_and_leaves_json_alone():
    assert fill('{"name": 1} {x} and {x}', x="{y}") == '{"name": 1} {y} and {y}'  # one pass: {y} stays
    with pytest.raises(ValueError, match=r"lacks the placeholder\(s\) \{target\}"):
        fill("use {numbers}", numbers=[1], target=2)


@pytest.mark.parametrize("demo", COUNTDOWN_DEMOS, ids=lambda d: d.expression)
def test_countdown_demonstrations_pass_the_verifier(demo):
    config = PromptConfig()
    assert check_countdown(fill(config.countdown_answer, expression=demo.expression), list(demo.numbers), demo.target)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_countdown_demonstrations_of_each_size_rotate_operators(size):
    pool = [d for d in COUNTDOWN_DEMOS if len(d.numbers) == size]
    assert len(pool) >= 2
    operators = [{op for op in "+-*/" if op in d.expression} for d in pool]
    assert set().union(*operators) == set("+-*/")


@pytest.mark.parametrize("numbers", [[7, 3], [1, 2, 3], [4, 5, 6, 7], [1, 2, 3, 4, 5]])
def test_demonstrations_match_the_task_size_when_the_pool_allows(numbers):
    ids = [countdown_instance(numbers, k).id for k in range(40)]
    sizes = {len(countdown_prompt(numbers, 1, i, PromptConfig()).messages[0]["content"].split("]")[0].split(","))
             for i in ids}
    # five numbers: no demo that size, so the whole pool serves
    assert sizes == ({len(numbers)} if len(numbers) <= 4 else {2, 3, 4})
    unmatched = {countdown_prompt(numbers, 1, i, PromptConfig(match_demo_size=False)).messages[1]["content"] for i in ids}
    assert len(unmatched) > 4  # drawn from demos of every size


@pytest.mark.parametrize("fmt", ["json", "tool_call"])
@pytest.mark.parametrize("demo", FUNCTION_CALLING_DEMOS, ids=lambda d: d.query[:20])
def test_function_calling_demonstrations_pass_the_verifier(demo, fmt):
    assert check_function_calls(render_calls(demo.calls, fmt), list(demo.calls))
    names = {t["name"] for t in demo.tools}
    assert {c["name"] for c in demo.calls} <= names


def test_default_countdown_prompt_is_one_shot():
    inst = countdown_instance([7, 3], 21)
    prompt = get_task("countdown").prompt(inst)
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["user", "assistant", "user"]
    (demo,) = [d for d in COUNTDOWN_DEMOS if prompt.messages[1]["content"] == f"<answer> {d.expression} </answer>"]
    assert len(demo.numbers) == 2  # a demonstration the size of the task
    assert f"Numbers: {list(demo.numbers)}\nTarget: {demo.target}\n" in prompt.messages[0]["content"]
    last = prompt.messages[-1]["content"]
    assert last == prompt.task_text
    assert "[7, 3]" in last and "21" in last and "<answer>" in last and "</answer>" in last
    assert prompt.tools is None


@pytest.mark.parametrize("num_demos", [0, 1, 3])
def test_number_of_demonstrations_and_system_turn(num_demos):
    config = PromptConfig(num_demos=num_demos, system="Be brief.", rotate_demos=False, match_demo_size=False)
    prompt = countdown_prompt([1, 2], 3, "cd-x", config)
    assert prompt.messages[0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in prompt.messages[1:]] == ["user", "assistant"] * num_demos + ["user"]
    answers = [m["content"] for m in prompt.messages if m["role"] == "assistant"]
    assert answers == [f"<answer> {d.expression} </answer>" for d in COUNTDOWN_DEMOS[:num_demos]]


def test_rotation_is_deterministic_per_instance_and_covers_the_pool():
    config = PromptConfig(rotate_demos=True)
    ids = [countdown_instance([i, i + 1], 2 * i + 1).id for i in range(1, 200)]
    first_demo = [countdown_prompt([1, 2], 3, i, config).messages[1]["content"] for i in ids]
    assert first_demo == [countdown_prompt([1, 2], 3, i, config).messages[1]["content"] for i in ids]
    counts = Counter(first_demo)
    pool = [d for d in COUNTDOWN_DEMOS if len(d.numbers) == 2]  # the demos the size of [1, 2]
    assert len(counts) == len(pool)
    assert min(counts.values()) > len(ids) / len(pool) / 3  # spread, not stuck on one
    # Without rotation, always the first of them.
    fixed = PromptConfig(rotate_demos=False)
    assert {countdown_prompt([1, 2], 3, i, fixed).messages[1]["content"] for i in ids} == {f"<answer> {pool[0].expression} </answer>"}


def test_select_demos_windows():
    pool = list("abcd")
    assert select_demos(pool, 2, "id", rotate=False) == ["a", "b"]
    rotated = select_demos(pool, 3, "some-id", rotate=True)
    start = pool.index(rotated[0])
    assert rotated == [pool[(start + k) % 4] for k in range(3)]
    assert select_demos(pool, 0, "id", rotate=True) == []
    with pytest.raises(ValueError, match="pool holds 4"):
        select_demos(pool, 5, "id", rotate=False)


def test_tool_call_format_changes_instruction_and_demos():
    tools = [FUNCTION_CALLING_DEMOS[0].tools[0]]
    plain = function_calling_prompt("What time is it in Oslo?", tools, "fc-x",
                                    PromptConfig(rotate_demos=False, tool_call_format="json"))
    tagged = function_calling_prompt("What time is it in Oslo?", tools, "fc-x", PromptConfig(tool_call_format="tool_call"))
    assert json.loads(plain.messages[1]["content"]) == list(FUNCTION_CALLING_DEMOS[0].calls)
    assert tagged.messages[1]["content"].startswith("<tool_call>\n")
    assert "<tool_call>" in tagged.task_text and "<tool_call>" not in plain.task_text
    assert plain.task_text.endswith("Request: What time is it in Oslo?")
    # A custom instruction with JSON braces in it needs no escaping.
    custom = PromptConfig(function_calling_instruction='Use {"name", "arguments"}. Q: {query}')
    assert function_calling_prompt("hi?", tools, "fc-x", custom).task_text == 'Use {"name", "arguments"}. Q: hi?'


def test_chat_template_inputs_moves_tools_out_of_the_user_turn_only_when_supported():
    tools = [FUNCTION_CALLING_DEMOS[0].tools[0]]
    prompt = function_calling_prompt("What time is it in Oslo?", tools, "fc-x", PromptConfig())
    messages, passed = chat_template_inputs(prompt, takes_tools=True)
    assert passed == [{"type": "function", "function": tools[0]}]
    assert messages[-1]["content"] == prompt.task_text
    assert messages[:-1] == prompt.messages[:-1]  # demos keep their inline tools
    assert prompt.tools_text not in messages[-1]["content"]
    assert chat_template_inputs(prompt, takes_tools=False) == (prompt.messages, None)
    countdown = countdown_prompt([1, 2], 3, "cd-x", PromptConfig())
    assert chat_template_inputs(countdown, takes_tools=True) == (countdown.messages, None)


def test_template_takes_tools():
    qwen_like = "{%- if tools %}{{- '<tools>' }}{%- for tool in tools %}{{ tool | tojson }}{%- endfor %}{%- endif %}"
    smollm2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
               "{{ '<|im_start|>system\\nYou are a helpful AI assistant<|im_end|>\\n' }}{% endif %}"
               "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
    assert template_takes_tools(qwen_like)
    assert not template_takes_tools(smollm2)
    assert not template_takes_tools(None)


def test_prompt_config_validation_and_from_dict():
    with pytest.raises(ValueError, match="num_demos"):
        PromptConfig(num_demos=-1)
    with pytest.raises(ValueError, match="tool_call_format"):
        PromptConfig(tool_call_format="xml")
    config = PromptConfig.from_dict({
        "num_demos": 1,
        "countdown_demos": [{"numbers": [2, 2], "target": 4, "expression": "2 + 2"}],
    })
    assert config.countdown_demos == (CountdownDemo((2, 2), 4, "2 + 2"),)
    with pytest.raises(ValueError, match="unknown prompt config key"):
        PromptConfig.from_dict({"num_shots": 2})
    with pytest.raises(ValueError, match="unknown option"):
        get_task("countdown", num_shots=2)
    assert get_task("countdown", num_demos=0).prompt(countdown_instance([1, 2], 3)).messages[0]["role"] == "user"


def test_every_control_request_restates_the_task_without_a_reflection():
    from r3fast.prompts import CONTROL_REQUESTS, RETRY_LAYOUTS, ReflectionPrompts

    for (layout, quote, feedback), template in CONTROL_REQUESTS.items():
        assert layout in RETRY_LAYOUTS and "{task}" in template and "{reflection}" not in template
        assert ("{attempt}" in template) == (layout == "fresh" and quote)  # continue: the chat holds the attempt
        assert ("{feedback}" in template) == feedback
        request = "Wrong: {feedback}. Why?" if feedback else "Why?"
        prompts = ReflectionPrompts(retry_layout=layout, quote_attempt=quote, reflection_request=request)
        assert prompts.control_template == template
    # every valid protocol has its control
    assert {(layout, True) for layout in RETRY_LAYOUTS} | {("fresh", False)} == {k[:2] for k in CONTROL_REQUESTS}
