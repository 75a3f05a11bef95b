"""Countdown verifier: known answers, and the C++ core against the Python reference on generated inputs."""

import gc

import pytest
from hypothesis import Phase, find, given, settings
from verify_strategies import (
    INT64_MAX,
    SETTINGS,
    countdown_near_miss,
    countdown_passing,
    countdown_random,
    examples,
)

from r3fast.verify import check_countdown, explain_countdown, explain_countdown_batch
from r3fast.verify.reference import countdown_verdict

KNOWN = [
    ("<answer>(6 - 2) * 25</answer>", [25, 2, 6], 100, "PASS"),
    ("<think>...</think>\n<answer>\n 1 + 2 * 3 \n</answer>", [1, 2, 3], 7, "PASS"),
    ("<answer>6 / 4 * 2</answer>", [6, 4, 2], 3, "PASS"),  # exact: 3/2 * 2
    ("<answer>1 / 3 * 3</answer>", [1, 3, 3], 1, "PASS"),  # a float checker gets 0.999... here
    ("<answer>-(-5)</answer>", [5], 5, "PASS"),
    ("<answer>+ - + 5</answer>", [5], -5, "PASS"),
    ("<answer>0</answer>", [0], 0, "PASS"),
    ("<answer>1+2</answer> and later <answer>1+1</answer>", [1, 1], 2, "PASS"),  # the last pair wins
    ("<answer>1+1</answer> then <answer>9", [1, 1], 2, "PASS"),  # an unclosed tag after the last pair
    ("<answer>1+1</answer>", [1, 1], 3, "WRONG_VALUE"),
    ("<answer>1 - 1 / 3</answer>", [1, 1, 3], 0, "WRONG_VALUE"),
    ("no tags at all", [1], 1, "NO_ANSWER"),
    ("<answer>1+1", [1, 1], 2, "NO_ANSWER"),
    ("1+1</answer>", [1, 1], 2, "NO_ANSWER"),
    ("</answer>1+1<answer>", [1, 1], 2, "NO_ANSWER"),
    ("<answer> \t\n </answer>", [], 0, "NO_ANSWER"),
    ("<answer>2**3</answer>", [2, 3], 8, "PARSE_ERROR"),
    ("<answer>2.5*2</answer>", [2, 5, 2], 5, "PARSE_ERROR"),
    ("<answer>07+1</answer>", [7, 1], 8, "PARSE_ERROR"),
    ("<answer>7//1</answer>", [7, 1], 7, "PARSE_ERROR"),
    ("<answer>1+1=2</answer>", [1, 1, 2], 2, "PARSE_ERROR"),
    ("<answer>2×3</answer>", [2, 3], 6, "PARSE_ERROR"),
    ("<answer>٣+1</answer>", [3, 1], 4, "PARSE_ERROR"),  # Arabic-Indic digit three
    ("<answer>(1+2</answer>", [1, 2], 3, "PARSE_ERROR"),
    ("<answer>1+2)</answer>", [1, 2], 3, "PARSE_ERROR"),
    ("<answer>()</answer>", [], 0, "PARSE_ERROR"),
    ("<answer>1 2</answer>", [1, 2], 3, "PARSE_ERROR"),
    ("<answer>" + "(" * 64 + "5" + ")" * 64 + "</answer>", [5], 5, "PASS"),
    ("<answer>" + "(" * 65 + "5" + ")" * 65 + "</answer>", [5], 5, "TOO_DEEP"),
    ("<answer>" + "-" * 64 + "5</answer>", [5], 5, "PASS"),
    ("<answer>" + "-" * 65 + "5</answer>", [5], 5, "TOO_DEEP"),
    ("<answer>" + "1+" * 512 + "1</answer>", [1] * 513, 513, "TOO_LONG"),
    (
        "<answer>" + "1+" * 511 + "1" + " " * 100 + "</answer>",
        [1] * 512,
        512,
        "PASS",
    ),  # 1023 bytes after strip
    ("<answer>1+2</answer>", [1, 2, 3], 3, "WRONG_NUMBERS"),
    ("<answer>1+1</answer>", [1, 2], 2, "WRONG_NUMBERS"),
    ("<answer>1+2</answer>", [2, 1], 3, "PASS"),
    ("<answer>5/(2-2)</answer>", [5, 2, 2], 0, "DIV_BY_ZERO"),
    ("<answer>5/(2-2)+</answer>", [5, 2, 2], 0, "PARSE_ERROR"),  # grammar is checked before arithmetic
    ("<answer>5/0+9</answer>", [5, 0, 8], 0, "WRONG_NUMBERS"),  # and literals before arithmetic too
    (f"<answer>{INT64_MAX} * 2 / 2</answer>", [INT64_MAX, 2, 2], INT64_MAX, "OVERFLOW"),
    (f"<answer>{INT64_MAX} / 2 * 2</answer>", [INT64_MAX, 2, 2], INT64_MAX, "PASS"),
    (f"<answer>-{INT64_MAX} - 1 + 1</answer>", [INT64_MAX, 1, 1], -INT64_MAX, "OVERFLOW"),
    ("<answer>99999999999999999999</answer>", [1], 1, "WRONG_NUMBERS"),
    (b"<answer>1+1</answer>\xff", [1, 1], 2, "INVALID_TEXT"),
    ("<answer>1+1</answer>\ud800", [1, 1], 2, "INVALID_TEXT"),
    (b"<answer>1+1</answer>", [1, 1], 2, "PASS"),
    ("<answer>1+1\x00</answer>", [1, 1], 2, "PARSE_ERROR"),
    ("é<answer>1+1</answer>", [1, 1], 2, "PASS"),
]


@pytest.mark.parametrize("response,numbers,target,code", KNOWN)
def test_known_answers(response, numbers, target, code):
    verdict = explain_countdown(response, numbers, target)
    assert verdict.code == code, verdict
    assert verdict.passed == (code == "PASS") == check_countdown(response, numbers, target)
    assert verdict.reason
    assert countdown_verdict(response, numbers, target) == code


def test_batch_matches_single_checks():
    responses = [r for r, *_ in KNOWN]
    numbers = [n for _, n, _, _ in KNOWN]
    targets = [t for *_, t, _ in KNOWN]
    expected = [code == "PASS" for *_, code in KNOWN]
    assert [v.passed for v in explain_countdown_batch(responses, numbers, targets)] == expected
    assert [v.passed for v in explain_countdown_batch(responses, numbers, targets, num_threads=1)] == expected
    assert [v.passed for v in explain_countdown_batch([], [], [])] == []


def test_bad_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="numbers has 1 entries but responses has 2"):
        explain_countdown_batch(["a", "b"], [[1]], [1, 2])
    with pytest.raises(ValueError, match="targets"):
        explain_countdown_batch(["a"], [[1]], [1, 2])
    with pytest.raises(ValueError, match=r"numbers\[1\].*int64"):
        check_countdown("<answer>1</answer>", [1, 2**63], 1)
    with pytest.raises(ValueError, match=r"numbers\[0\]\[0\].*int64"):
        explain_countdown_batch(["x"], [[-(2**63) - 1]], [1])
    with pytest.raises(ValueError, match="target.*int64"):
        check_countdown("<answer>1</answer>", [1], 2**64)
    with pytest.raises(ValueError, match=r"targets\[0\]"):
        explain_countdown_batch(["x"], [[1]], [2**70])
    with pytest.raises(TypeError, match="response must be str or bytes"):
        check_countdown(123, [1], 1)
    with pytest.raises(TypeError, match=r"numbers\[0\] must be an int"):
        check_countdown("x", [1.5], 1)
    with pytest.raises(ValueError, match="num_threads"):
        explain_countdown_batch(["x"], [[1]], [1], num_threads=-1)


def _agree(response, numbers, target):
    expected = countdown_verdict(response, numbers, target)
    got = explain_countdown(response, numbers, target).code
    assert got == expected, (response, numbers, target)
    assert check_countdown(response, numbers, target) == (expected == "PASS")
    return expected


@settings(max_examples=examples(600), **SETTINGS)
@given(countdown_passing())
def test_generated_expressions_pass_exactly(case):
    response, numbers, target, value = case
    code = _agree(response, numbers, target)
    # Independent of both checkers: the generator's own exact value decides the outcome.
    if value is None:
        assert code == "DIV_BY_ZERO"
    else:
        assert code == ("PASS" if value == target else "WRONG_VALUE")


@settings(max_examples=examples(200), **SETTINGS)
@given(countdown_passing(big=True))
def test_big_numbers_overflow_or_stay_exact(case):
    response, numbers, target, value = case
    code = _agree(response, numbers, target)
    if code in ("PASS", "WRONG_VALUE"):
        assert (value == target) == (code == "PASS")
    else:
        assert code in ("OVERFLOW", "DIV_BY_ZERO")


@settings(max_examples=examples(600), **SETTINGS)
@given(countdown_near_miss())
def test_near_misses_agree_with_reference(case):
    _agree(*case)


@settings(max_examples=examples(500), **SETTINGS)
@given(countdown_random())
def test_random_text_agrees_with_reference(case):
    _agree(*case)


def test_generated_cases_include_passes():
    # Guards the generator itself: the differential tests above must see passing cases, not only failures.
    found = find(
        countdown_passing(),
        lambda c: c[3] is not None and c[3] == c[2] and len(c[1]) >= 3,
        # derandomized, with room to search: a random 100-example search missed now and then
        settings=settings(database=None, phases=[Phase.generate], max_examples=1000, derandomize=True),
    )
    assert explain_countdown(found[0], found[1], found[2]).code == "PASS"


class _Shrinking:
    """An int-like number whose __index__ empties the list holding it and drops the other elements."""

    def __init__(self, value: int, owner: list):
        self.value, self.owner = value, owner

    def __index__(self) -> int:
        self.owner.clear()
        gc.collect()
        return self.value


def test_numbers_mutated_during_conversion_are_read_safely():
    # The general conversion path must hold its own references: reading the list after __index__ cleared it
    # used to read freed memory (the sanitizer build catches it).
    numbers: list = []
    numbers.extend([_Shrinking(3, numbers), 10**6, 2**40, 7])
    assert check_countdown(f"<answer>3 + {10**6} + {2**40} + 7</answer>", numbers, 3 + 10**6 + 2**40 + 7)
    batch_numbers: list = []
    batch_numbers.extend([_Shrinking(1, batch_numbers), 2**40 + 1])
    (verdict,) = explain_countdown_batch([f"<answer>1 * {2**40 + 1}</answer>"], [batch_numbers], [2**40 + 1])
    assert verdict.passed
