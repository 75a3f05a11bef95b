"""Feedback on failed function calls: it names what is wrong (known answers per verdict code), agrees
with the verifier, and never gives a gold argument value away (property tests with hypothesis)."""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r3fast.prompts import render_calls
from r3fast.tasks import get_task
from r3fast.tasks.fncall_generator import generate_function_calling
from r3fast.verify import explain_function_calls
from r3fast.verify.feedback import function_call_feedback

WEATHER = {"name": "get_weather", "description": "Weather.", "parameters": {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer"},
                   "place": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                             "required": ["lat", "lon"]},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["city"]}}
TIME = {"name": "get_time", "description": "Time.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TOOLS = [WEATHER, TIME]
GOLD = [{"name": "get_weather", "arguments": {"city": "Lisbon", "unit": "celsius", "days": 3,
                                             "place": {"lat": 38.7, "lon": -9.1}, "tags": ["rain", "wind"]}}]


def call(**arguments) -> str:
    return render_calls([{"name": "get_weather", "arguments": {**GOLD[0]["arguments"], **arguments}}], "tool_call")


def feedback(output: str, gold=GOLD, tools=TOOLS, fmt="tool_call") -> str:
    return function_call_feedback(output, explain_function_calls(output, gold).code, gold, tools, fmt)


def without(key: str) -> str:
    args = {k: v for k, v in GOLD[0]["arguments"].items() if k != key}
    return render_calls([{"name": "get_weather", "arguments": args}], "tool_call")


@pytest.mark.parametrize(("output", "expected"), [
    ("", "the output is empty; write each call as <tool_call>"),
    ("<tool_call>{}", "a <tool_call> block is not closed with </tool_call>"),
    (call() + " hope this helps", "there is text after a </tool_call>"),
    ("```json\n[]", "the ``` block is not closed"),
    ("Sure, here it is", "the output starts with text, not JSON"),
    ("<tool_call> </tool_call>", "the call is empty"),
    ('<tool_call>{"name": "get_weather", "arguments": {"city": "x",}}</tool_call>',
     "the call is not valid JSON at character 51: expecting property name enclosed in double quotes"),
    ('<tool_call>{"name": "get_weather", "arguments": {}} {}</tool_call>', "has more text after its JSON value"),
    ('{"name": "get_weather", "arguments": {"days": NaN}}', "NaN is not JSON"),
    ('<tool_call>{"name": "get_weather", "arguments": {"days": 1, "days": 2}}</tool_call>',
     "repeats the key `days` in one object"),
    ('<tool_call>[{"name": "get_weather", "arguments": {}}]</tool_call>', "a <tool_call> block holds one call object"),
    ('<tool_call>{"name": "get_weather"}</tool_call>', 'the call object has no "arguments"'),
    ('<tool_call>{"name": "get_weather", "arguments": "city"}</tool_call>', '"arguments" must be an object, got a string'),
    ('<tool_call>{"name": 3, "arguments": {}}</tool_call>', '"name" must be a string, got a integer'),
    ('<tool_call>{"name": "get_wether", "arguments": {}}</tool_call>',
     "unknown function `get_wether`: it is not one of the tools offered; the request needs a call to `get_weather`"),
    ('<tool_call>{"name": "get_time", "arguments": {"city": "Lisbon"}}</tool_call>',
     "`get_time` is not a tool this request needs"),
    (without("city"), "missing required argument `city`"),
    (without("unit"), "missing argument `unit`, which the request states"),
    (call(days="3"), "argument `days` has the wrong type: expected integer, got string"),
    (call(days=4.5), "argument `days` has the wrong type: expected integer, got number"),
    (call(unit="kelvin"), "argument `unit` is not one of the values its schema's enum allows"),
    (call(city="Porto"), "argument `city` has the wrong value"),
    (call(place={"lat": 1.0}), "missing required argument `place.lon`"),
    (call(place={"lat": "north", "lon": -9.1}), "argument `place.lat` has the wrong type: expected number"),
    (call(tags=["rain"]), "argument `tags` has 1 items; the request lists a different number"),
    (call(tags=["rain", 5]), "item 2 of argument `tags` has the wrong type: expected string, got integer"),
    (call(tags=["wind", "rain"]), "argument `tags` has the wrong items"),
    (call(colour="red"), "`colour` is not an argument the schema has"),
    (render_calls(GOLD * 2, "tool_call"), "expected 1 call, got 2; an extra call to `get_weather`"),
])
def test_feedback_names_the_fault(output, expected):
    assert explain_function_calls(output, GOLD).code != "PASS"
    assert expected in feedback(output)


@pytest.mark.parametrize(("output", "code", "expected"), [
    ("<tool_call>nope</tool_call> junk", "INVALID_JSON", "the call starts with text, not JSON"),
    ('<tool_call>[1]</tool_call><tool_call>{"a"', "BAD_CALL", "found a JSON list where a call object belongs"),
    (call() + "<tool_call>{", "BAD_FORMAT", "a <tool_call> block is not closed"),
])
def test_blocks_before_a_layout_fault_decide_first_in_verifier_reference_and_feedback(output, code, expected):
    from r3fast.verify.reference import function_calls_verdict

    assert explain_function_calls(output, GOLD).code == function_calls_verdict(output, GOLD) == code
    assert expected in feedback(output)


def test_feedback_follows_the_asked_format_and_passes_say_so():
    assert "one JSON list of calls" in feedback("", fmt="json")
    assert feedback(render_calls(GOLD, "json")) == "the calls are right"
    assert feedback(b"\xff") == "the output is not valid UTF-8 text"
    with pytest.raises(ValueError, match="tool_call_format must be one of"):
        function_call_feedback("", "BAD_FORMAT", GOLD, TOOLS, "xml")


def test_an_echoed_name_that_holds_a_gold_value_is_not_repeated():
    reason = feedback('<tool_call>{"name": "Lisbon_weather", "arguments": {}}</tool_call>')
    assert "Lisbon" not in reason and "unknown function a function" in reason


def test_the_task_explains_with_this_feedback():
    task = get_task("fncall-synthetic")
    inst = generate_function_calling(1, seed=0)[0]
    verdict = task.explain(inst, "")
    assert verdict.code == "BAD_FORMAT" and verdict.reason.startswith("the output is empty")


# ------------------------------------------------------------------------------- no gold value leaks

# Numbers the feedback writes about the output and the gold's shape, never a gold value.
STRUCTURAL = re.compile(r"at character \d+|\d+ calls?\b|call \d+|item \d+|has \d+ items|\b128 levels")


def gold_texts(value) -> set[str]:
    """str and JSON forms of every gold value (nested ones too) at least 2 characters long."""
    if isinstance(value, dict):
        return set().union(*map(gold_texts, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(gold_texts, value)) if value else set()
    if isinstance(value, bool):
        return set()  # written as a phrase, and "true"/"false" are words the feedback may use
    return {t for t in (str(value), json.dumps(value)) if len(t) >= 2}


def leaks(reason: str, secrets: set[str]) -> list[str]:
    """The gold values `reason` contains: as whole tokens (a value 'low' may sit in 'allowed', 5.5 in
    55.5: neither states the value), after the structural numbers are set aside."""
    reason = STRUCTURAL.sub(" ", reason)
    return [s for s in secrets if re.search(rf"(?<![\w.-]){re.escape(s)}(?![\w]|\.\d)", reason)]


def mutate(gold: list[dict], data: st.DataObject) -> str:
    """A wrong output: the gold with random faults, written in a random format."""
    calls = copy.deepcopy(gold)
    faults = data.draw(st.lists(st.sampled_from(
        ["drop_arg", "retype_arg", "shift_number", "rename_tool", "extra_call", "drop_call", "extra_arg",
         "break_json", "prose", "swap_values"]), min_size=1, max_size=3))
    for fault in faults:
        target = calls[data.draw(st.integers(0, len(calls) - 1))] if calls else None
        args = target["arguments"] if target else {}
        key = data.draw(st.sampled_from(sorted(args))) if args else None
        if fault == "drop_arg" and key:
            del args[key]
        elif fault == "retype_arg" and key:
            args[key] = json.dumps(args[key]) if not isinstance(args[key], str) else len(args[key])
        elif fault == "shift_number" and key and isinstance(args[key], (int, float)) and not isinstance(args[key], bool):
            args[key] = args[key] + data.draw(st.integers(1, 3))
        elif fault == "rename_tool" and target:
            target["name"] = target["name"] + data.draw(st.sampled_from(["x", "_v2", "s"]))
        elif fault == "extra_call" and target:
            calls.append(copy.deepcopy(target))
        elif fault == "drop_call" and len(calls) > 1:
            calls.pop()
        elif fault == "extra_arg" and target:
            args[data.draw(st.sampled_from(["verbose", "page", "city"]))] = data.draw(st.integers(0, 99))
        elif fault == "swap_values" and len(args) > 1:
            keys = sorted(args)
            args[keys[0]], args[keys[1]] = args[keys[1]], args[keys[0]]
    text = render_calls(calls, data.draw(st.sampled_from(["tool_call", "json"])))
    if "break_json" in faults:
        cut = data.draw(st.integers(0, max(0, len(text) - 1)))
        text = text[:cut] + data.draw(st.sampled_from([",", "}", "'", ""])) + text[cut + 1:]
    if "prose" in faults:
        text = "Here are the calls: " + text
    return text


INSTANCES = generate_function_calling(400, seed=21)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(INSTANCES) - 1), st.data())
def test_no_feedback_contains_a_gold_value(index, data):
    inst = INSTANCES[index]
    gold = inst.data["answers"]
    output = mutate(gold, data)
    verdict = explain_function_calls(output, gold)
    reason = function_call_feedback(output, verdict.code, gold, inst.data["tools"])
    secrets = set().union(*(gold_texts(c["arguments"]) for c in gold))
    assert not leaks(reason, secrets), (output, reason)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(INSTANCES) - 1), st.data())
def test_feedback_does_not_depend_on_gold_values_the_output_also_misses(index, data):
    """Change a gold string value that the output does not hold to another it does not hold either:
    the feedback stays the same, so it carries nothing about that value beyond 'wrong'."""
    inst = INSTANCES[index]
    gold = inst.data["answers"]
    output = mutate(gold, data)
    other = copy.deepcopy(gold)
    strings = [(c, k) for c in other for k, v in c["arguments"].items() if isinstance(v, str) and "enum" not in
               next(t for t in inst.data["tools"] if t["name"] == c["name"])["parameters"]["properties"][k]]
    strings = [(c, k) for c, k in strings if json.dumps(c["arguments"][k], ensure_ascii=False) not in output]
    if not strings:
        return  # the output holds every such value: changing one would make a right value wrong
    c, k = data.draw(st.sampled_from(strings))
    c["arguments"][k] = "Zq" + c["arguments"][k] + "Zq"  # held by no output
    before = function_call_feedback(output, explain_function_calls(output, gold).code, gold, inst.data["tools"])
    after = function_call_feedback(output, explain_function_calls(output, other).code, other, inst.data["tools"])
    assert before == after, (output, before, after)


def test_the_leak_oracle_finds_values_as_tokens_and_ignores_positions():
    assert leaks("argument `city` should be Lisbon", {"Lisbon"}) == ["Lisbon"]
    assert leaks("expected 57 here", {"57"}) == ["57"]
    assert leaks("not valid JSON at character 57: x", {"57"}) == []
    assert leaks("values its schema allows", {"low"}) == []
    assert leaks("argument `a` is 155.5", {"55.5"}) == []
