"""What a model might write to break a verifier: huge, deep, binary and malformed inputs, each with its verdict."""

import pytest

from r3fast.verify import (
    COUNTDOWN_CODES,
    FUNCTION_CALL_CODES,
    explain_countdown,
    explain_countdown_batch,
    explain_function_calls,
    explain_function_calls_batch,
)
from r3fast.verify.reference import countdown_verdict, function_calls_verdict

MB = 1 << 20
CALL = '{"name": "f", "arguments": {"x": 1}}'
GOLD = f"[{CALL}]"

COUNTDOWN_CASES = [
    # (response, numbers, target, code); the reference runs on all but the 100 MB ones.
    ("a" * MB + "<answer>1+2</answer>", [1, 2], 3, "PASS"),
    ("<answer>1+2</answer>" + "</answe" * (MB // 7), [1, 2], 3, "PASS"),
    ("<answer>" + "1+" * MB + "1</answer>", [1] * (MB + 1), 0, "TOO_LONG"),
    ("<answer>" + "(" * 10**5 + "1" + ")" * 10**5 + "</answer>", [1], 1, "TOO_LONG"),
    ("<answer>" + "(" * 500 + "1" + ")" * 500 + "</answer>", [1], 1, "TOO_DEEP"),
    ("<answer>" + "-" * 1000 + "1</answer>", [1], 1, "TOO_DEEP"),
    ("<answer>" + "(" * 65 + "</answer>", [], 0, "TOO_DEEP"),
    ("<answer>" + "(" * 64 + "</answer>", [], 0, "PARSE_ERROR"),
    ("<answer>99**99**99</answer>", [99, 99, 99], 0, "PARSE_ERROR"),
    ("<answer>9" + "9" * 1000 + "</answer>", [9], 9, "WRONG_NUMBERS"),
    ("<answer>" + "9" * 1024 + "</answer>", [], 0, "WRONG_NUMBERS"),
    ("<answer>" + "9" * 1025 + "</answer>", [], 0, "TOO_LONG"),
    ("<answer>1\x00+1</answer>", [1, 1], 2, "PARSE_ERROR"),
    ("\x00" * 1000 + "<answer>1+1</answer>\x00", [1, 1], 2, "PASS"),
    (b"<answer>1+1</answer>\x80", [1, 1], 2, "INVALID_TEXT"),
    (b"\xed\xa0\x80<answer>1+1</answer>", [1, 1], 2, "INVALID_TEXT"),  # a surrogate encoded in UTF-8
    (b"\xc0\xaf<answer>1+1</answer>", [1, 1], 2, "INVALID_TEXT"),  # overlong encoding
    ("<answer>1+1</answer>\udc80", [1, 1], 2, "INVALID_TEXT"),
    ("<answer>" + "*".join(["4294967296"] * 3) + "</answer>", [4294967296] * 3, 0, "OVERFLOW"),
    ("<answer>1/(1-1)</answer>", [1, 1, 1], 0, "DIV_BY_ZERO"),
    ("<answer>2*3</answer>", [2, 3], 5, "WRONG_VALUE"),
    ("</answer><answer>", [], 0, "NO_ANSWER"),
]

FUNCTION_CALL_CASES = [
    ("[" * 10**5 + "]" * 10**5, "TOO_DEEP"),
    ("{" + '"a":{' * 10**5 + "}" * 10**5, "TOO_DEEP"),
    (" " * MB + GOLD + " " * MB, "PASS"),
    ('[{"name": "f", "arguments": {"x": 1, "pad": "' + "a" * MB + '"}}]', "WRONG_CALLS"),
    ('[{"name": "f", "arguments": {"x": 1' + "0" * MB + "e-" + str(MB) + "}}]", "PASS"),
    ('[{"name": "f", "arguments": {"x": 1e' + "9" * 5000 + "}}]", "WRONG_CALLS"),
    ("[" + "1," * (MB // 32) + "1]", "BAD_CALL"),
    ('[{"name": "f", "arguments": {"x": 1}}]\x00', "INVALID_JSON"),
    ('[{"name": "f\x00", "arguments": {"x": 1}}]', "INVALID_JSON"),
    ('[{"name": "f\\u0000", "arguments": {"x": 1}}]', "WRONG_CALLS"),
    (b'[{"name": "f", "arguments": {"x": "\xff"}}]', "INVALID_TEXT"),
    ('[{"name": "f", "arguments": {"x": "\udfff"}}]', "INVALID_TEXT"),
    ('[{"name": "f", "arguments": {"x": 1, "x": 1}}]', "DUPLICATE_KEY"),
    ('[{"name": "f", "arguments": {"x": 1}, "extra": null}]', "BAD_CALL"),
    ("```json\n" + GOLD, "BAD_FORMAT"),
    ('[{"name": "f", "arguments": {"x": NaN}}]', "INVALID_JSON"),
    ("<tool_call>" + CALL + "</tool_call>", "PASS"),
]


@pytest.mark.parametrize("response,numbers,target,code", COUNTDOWN_CASES, ids=range(len(COUNTDOWN_CASES)))
def test_countdown_hostile(response, numbers, target, code):
    assert explain_countdown(response, numbers, target).code == code
    assert countdown_verdict(response, numbers, target) == code


@pytest.mark.parametrize("output,code", FUNCTION_CALL_CASES, ids=range(len(FUNCTION_CALL_CASES)))
def test_function_calls_hostile(output, code):
    assert explain_function_calls(output, GOLD).code == code
    assert function_calls_verdict(output, GOLD) == code


def test_every_verdict_code_is_reached():
    countdown = {c for *_, c in COUNTDOWN_CASES}
    function_calls = {c for _, c in FUNCTION_CALL_CASES}
    assert countdown == set(COUNTDOWN_CODES)
    assert function_calls == set(FUNCTION_CALL_CODES)


def test_100_mb_inputs():
    big = 100 * MB
    assert explain_countdown("x" * big + "<answer>1+2</answer>", [1, 2], 3).code == "PASS"
    assert explain_countdown("<answer>" + "1" * big + "</answer>", [1], 1).code == "TOO_LONG"
    assert explain_countdown("<" * big, [1], 1).code == "NO_ANSWER"
    assert explain_function_calls("[" * big, GOLD).code in ("INVALID_JSON", "TOO_DEEP")
    assert (
        explain_function_calls('[{"name": "f", "arguments": {"x": "' + "a" * big + '"}}]', GOLD).code
        == "WRONG_CALLS"
    )
    # The thread that saw the huge input still checks normal ones.
    assert all(v.passed for v in explain_function_calls_batch([GOLD] * 3, [GOLD] * 3, num_threads=1))
    assert explain_countdown_batch(["<answer>1</answer>"], [[1]], [1], num_threads=1)[0].passed
