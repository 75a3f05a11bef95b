"""Function-call verifier: known answers, and the C++ core against the Python reference on generated inputs."""

import json

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from verify_strategies import (
    GOLD,
    SETTINGS,
    examples,
    function_calls_near_miss,
    function_calls_passing,
    function_calls_random,
)

from r3fast.verify import check_function_calls, explain_function_calls, explain_function_calls_batch
from r3fast.verify.reference import function_calls_verdict

ONE = '{"name": "now", "arguments": {}}'
WEATHER = '{"name": "get_weather", "arguments": {"days": 3, "city": "Paris"}}'
WEATHER_ESCAPED = WEATHER.replace("Paris", "Pa\\u0072is")
WEATHER_SURROGATE = WEATHER.replace("Paris", "\\ud800")
WEATHER_TWICE = WEATHER.replace('{"days"', '{"city": "Rome", "days"')

KNOWN = [
    (f"[{WEATHER}, {ONE}]", "PASS"),
    (f"[{ONE}, {WEATHER}]", "PASS"),  # call order does not matter
    (f" \n```json\n[{ONE},{WEATHER}]\n```\n", "PASS"),
    (f"```[{ONE},{WEATHER}]```", "PASS"),
    (f"<tool_call>\n{WEATHER}\n</tool_call>\n<tool_call>{ONE}</tool_call>", "PASS"),
    (f"[{WEATHER.replace('3', '3.0')}, {ONE}]", "PASS"),
    (f"[{WEATHER.replace('3', '30e-1')}, {ONE}]", "PASS"),
    (f"[{WEATHER_ESCAPED}, {ONE}]", "PASS"),
    (f"[{WEATHER.replace('3', '3.0000000000000000000001')}, {ONE}]", "WRONG_CALLS"),
    (f"[{WEATHER.replace('3', 'true')}, {ONE}]", "WRONG_CALLS"),
    (f"[{WEATHER.replace('3', '[3]')}, {ONE}]", "WRONG_CALLS"),
    (f"[{WEATHER}]", "WRONG_CALLS"),
    (f"[{WEATHER}, {ONE}, {ONE}]", "WRONG_CALLS"),
    (WEATHER, "WRONG_CALLS"),
    ("[]", "WRONG_CALLS"),
    ("", "BAD_FORMAT"),
    ("```json\n[]", "BAD_FORMAT"),
    (f"<tool_call>{ONE}", "BAD_FORMAT"),
    (f"<tool_call>{ONE}</tool_call> and {ONE}", "BAD_FORMAT"),
    (f"Sure! [{WEATHER}, {ONE}]", "INVALID_JSON"),
    (f"[{WEATHER}, {ONE}] Done.", "INVALID_JSON"),
    (f"[{WEATHER}, {ONE},]", "INVALID_JSON"),
    (f"[{WEATHER.replace('3', 'NaN')}, {ONE}]", "INVALID_JSON"),
    (f"[{WEATHER.replace('3', 'Infinity')}, {ONE}]", "INVALID_JSON"),
    ("[{'name': 'now', 'arguments': {}}]", "INVALID_JSON"),
    (f"```json\n[{ONE}]\n```\n```json\n[{WEATHER}]\n```", "INVALID_JSON"),  # two fenced blocks
    (f"[{WEATHER_SURROGATE}, {ONE}]", "INVALID_JSON"),
    ("[" * 129 + "]" * 129, "TOO_DEEP"),
    (f"[{WEATHER_TWICE}, {ONE}]", "DUPLICATE_KEY"),
    ('[{"name": "now", "arguments": {}, "name": "now"}]', "DUPLICATE_KEY"),
    ('[{"name": "now", "arguments": {}, "id": 1}]', "BAD_CALL"),
    ('[{"name": "now", "arguments": []}]', "BAD_CALL"),
    ('[{"name": 7, "arguments": {}}]', "BAD_CALL"),
    ('"now"', "BAD_CALL"),
    (f"<tool_call>[{ONE}]</tool_call>", "BAD_CALL"),
    (b"[\xff]", "INVALID_TEXT"),
    ("[\ud800]", "INVALID_TEXT"),
]


@pytest.mark.parametrize("output,code", KNOWN)
def test_known_answers(output, code):
    verdict = explain_function_calls(output, GOLD)
    assert verdict.code == code, verdict
    assert verdict.passed == (code == "PASS") == check_function_calls(output, GOLD)
    assert verdict.reason
    assert function_calls_verdict(output, GOLD) == code


def test_numbers_compare_by_exact_decimal_value():
    def same(a: str, b: str) -> bool:
        return check_function_calls(
            f'{{"name": "f", "arguments": {{"x": {a}}}}}', f'[{{"name": "f", "arguments": {{"x": {b}}}}}]'
        )

    assert (
        same("1", "1.0")
        and same("1", "1e0")
        and same("0.1", "0.10")
        and same("-0", "0")
        and same("100", "1E2")
    )
    assert same("123456789012345678901234567890", "1.2345678901234567890123456789e29")
    assert not same("123456789012345678901234567890", "123456789012345678901234567891")  # equal as doubles
    assert not same("0.1", "0.1000000000000000055511151231257827")  # the double nearest 0.1
    assert same("1e99999999999999999999999", "10e99999999999999999999998")
    assert not same("1e99999999999999999999999", "1e99999999999999999999998")
    assert not same("true", "1") and not same("null", "0") and not same('"1"', "1")


def test_gold_may_be_parsed_or_bytes():
    parsed = json.loads(GOLD)
    output = f"[{ONE}, {WEATHER}]"
    assert check_function_calls(output, parsed)
    assert check_function_calls(output.encode(), GOLD.encode())
    assert [v.passed for v in explain_function_calls_batch([output, "[]"], [parsed, GOLD])] == [True, False]
    assert explain_function_calls(
        '[{"name": "f", "arguments": {"x": 0.1}}]', [{"name": "f", "arguments": {"x": 0.1}}]
    ).passed


def test_bad_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="golds has 1 entries but outputs has 2"):
        explain_function_calls_batch(["a", "b"], [GOLD])
    with pytest.raises(ValueError, match=r"^gold is not a JSON list"):
        check_function_calls("[]", '[{"name": "f"}]')
    with pytest.raises(ValueError, match=r"^golds\[1\] is not a JSON list"):
        explain_function_calls_batch(["[]", "[]"], [GOLD, "[1,]"])
    with pytest.raises(ValueError, match=r"^golds\[0\] is not a JSON list"):
        explain_function_calls_batch([b"\xff"], ['[{"name": "f", "arguments": {}, "name": "g"}]'])
    with pytest.raises(ValueError, match=r"^gold must be JSON text or a list"):
        check_function_calls("[]", [{"name": "f", "arguments": {"x": float("nan")}}])
    with pytest.raises(ValueError, match=r"^golds\[0\] must be JSON text"):
        explain_function_calls_batch(["[]"], [[{"name": "f", "arguments": {"x": object()}}]])
    with pytest.raises(TypeError, match=r"outputs\[0\] must be str or bytes"):
        explain_function_calls_batch([None], [GOLD])


def _agree(output, gold):
    expected = function_calls_verdict(output, gold)
    got = explain_function_calls(output, gold).code
    # TOO_DEEP and INVALID_JSON both fail; for a document that is both, each parser reports what it meets first.
    if {expected, got} != {"TOO_DEEP", "INVALID_JSON"}:
        assert got == expected, (output, gold)
    assert check_function_calls(output, gold) == (expected == "PASS")
    return expected


@settings(max_examples=examples(250), **SETTINGS)
@given(function_calls_passing())
def test_equal_calls_in_any_spelling_pass(case):
    assert _agree(*case) == "PASS", case


@settings(max_examples=examples(400), **SETTINGS)
@given(function_calls_near_miss())
def test_near_misses_agree_with_reference(case):
    _agree(*case)


@settings(max_examples=examples(300), **SETTINGS)
@given(function_calls_random())
def test_random_text_agrees_with_reference(case):
    _agree(*case)


def test_generated_calls_are_not_trivial():
    # Guards the generator: passing cases must include several calls with nested arguments and numbers.
    found = find(
        function_calls_passing(),
        lambda c: c[0].count('"name"') >= 2 and "e" in c[0] and "[" in c[0].split("arguments", 1)[-1],
        settings=settings(database=None, phases=[Phase.generate], max_examples=2000),
    )
    assert check_function_calls(*found)


@settings(max_examples=examples(60), **SETTINGS)
@given(st.lists(st.one_of(function_calls_passing(), function_calls_near_miss()), min_size=1, max_size=4),
       st.integers(1, 4))
def test_batches_with_shared_golds_agree_with_reference(cases, group):
    # Groups of outputs share one gold (as in GRPO); the checker may reuse a gold's work across a group, so
    # each group also holds an output meant for another gold, and golds recur as equal but distinct objects.
    outputs, golds = [], []
    for i, (output, gold) in enumerate(cases):
        other_output = cases[(i + 1) % len(cases)][0]
        for j in range(group):
            outputs.append(other_output if j == group - 1 and len(cases) > 1 else output)
            golds.append(gold if j % 2 else (gold + " ")[:-1])
    expected = [function_calls_verdict(o, g) == "PASS" for o, g in zip(outputs, golds, strict=True)]
    assert [v.passed for v in explain_function_calls_batch(outputs, golds, num_threads=1)] == expected
    # Parsed golds shared by identity: each is encoded once; the answer must equal checking items one by one.
    by_text = {g: json.loads(g) for g in golds}
    shared = [by_text[g] for g in golds]
    try:
        one_by_one = [check_function_calls(o, g) for o, g in zip(outputs, shared, strict=True)]
    except ValueError:  # a number beyond float range parses to inf, which is no JSON
        return
    assert [v.passed for v in explain_function_calls_batch(outputs, shared, num_threads=1)] == one_by_one


def test_consecutive_golds_of_equal_length_are_told_apart():
    gold_1, gold_2 = '[{"name": "f", "arguments": {"x": 1}}]', '[{"name": "f", "arguments": {"x": 2}}]'
    out_1, out_2 = '{"name": "f", "arguments": {"x": 1.0}}', '{"arguments": {"x": 2}, "name": "f"}'
    outputs = [out_1, out_1, out_2, out_1, out_1]
    golds = [gold_1, gold_1, gold_2, gold_2, gold_1]
    verdicts = explain_function_calls_batch(outputs, golds, num_threads=1)
    assert [v.passed for v in verdicts] == [True, True, True, False, True]
