"""Batch checks on several threads give the sequential results, also when Python threads call in at once."""

import gc

import pytest
from test_verify_countdown import KNOWN as COUNTDOWN_KNOWN
from test_verify_function_calls import KNOWN as FUNCTION_CALL_KNOWN
from verify_strategies import GOLD, results_of_concurrent_calls

from r3fast.verify import (
    check_countdown,
    check_function_calls,
    explain_countdown,
    explain_countdown_batch,
    explain_function_calls_batch,
)

REPEAT = 200  # a few thousand items: many blocks for the threads to share


def _countdown_batch():
    responses, numbers, targets = [], [], []
    for i in range(REPEAT):
        for response, nums, target, _ in COUNTDOWN_KNOWN:
            responses.append(response)
            numbers.append(nums)
            targets.append(target if i % 3 else target - 1 if target > 0 else target + 1)  # vary verdicts
    return responses, numbers, targets


def _function_call_batch():
    outputs = [output for _ in range(REPEAT) for output, _ in FUNCTION_CALL_KNOWN]
    golds = [GOLD if i % 5 else "[]" for i in range(len(outputs))]
    return outputs, golds


def test_countdown_two_threads_equal_sequential():
    responses, numbers, targets = _countdown_batch()
    sequential = [check_countdown(r, n, t) for r, n, t in zip(responses, numbers, targets, strict=True)]
    assert any(sequential) and not all(sequential)
    for threads in (2, 0, 7):
        verdicts = explain_countdown_batch(responses, numbers, targets, num_threads=threads)
        assert [v.passed for v in verdicts] == sequential


class _Str(str):
    pass


class _Int(int):
    pass


def test_countdown_batch_mixing_usual_and_unusual_items_equals_single_checks():
    # Every kind of argument a batch converts (str, bytes, str and int subclasses, big ints, tuples and other
    # sequences of numbers, long texts), interleaved with the usual ones, gives the single checks' verdicts.
    big = 2**40
    unusual = [
        ("<answer>é</answer><answer>3 * 4</answer>", [3, 4], 12),  # non-ASCII str
        (_Str("<answer>3 * 4</answer>"), [3, 4], 12),  # str subclass
        ("<answer>3 * 4</answer>", [_Int(3), 4], _Int(12)),  # int subclasses
        (f"<answer>{big} + 1</answer>", [big, 1], big + 1),  # ints beyond 30 bits
        (b"<answer>3 * 4</answer>", (3, 4), 12),  # bytes, tuple numbers
        ("<answer>3 * 4</answer>", range(3, 5), 12),  # another sequence
        ("<answer>\ud800</answer>", [1], 1),  # no UTF-8 form
        ("x" * 70_000 + "<answer>3 * 4</answer>", [3, 4], 12),  # a long text
    ]
    # Usual items that fail early (in the answer's search), next to the known ones.
    fail_early = [
        (b"<answer>3 * 4</answer>\xff", [3, 4], 12),  # bytes that are not UTF-8
        ("<answer>3 * 4", [3, 4], 12),  # no closing tag
        ("<answer>" + "1 + " * 300 + "1</answer>", [1] * 301, 301),  # answer too long
    ]
    usual = [(r, n, t) for r, n, t, _ in COUNTDOWN_KNOWN] + fail_early
    batch = [usual[i % len(usual)] if i % 7 else unusual[i // 7 % len(unusual)] for i in range(3000)]
    responses, numbers, targets = (list(column) for column in zip(*batch, strict=True))
    single = [explain_countdown(r, n, t).code for r, n, t in batch]
    assert {"PASS", "INVALID_TEXT", "NO_ANSWER", "TOO_LONG", "WRONG_VALUE"} <= set(single)
    for threads in (1, 2):
        as_tuples = (tuple(responses), tuple(numbers), tuple(targets))
        for columns in ((responses, numbers, targets), as_tuples):
            assert [v.code for v in explain_countdown_batch(*columns, num_threads=threads)] == single


class _ClearsBatch:
    """An int-like target whose __index__ empties the batch's lists while the batch is being read."""

    def __init__(self, value: int):
        self.value, self.columns = value, []

    def __index__(self) -> int:
        for column in self.columns:
            column.clear()
        gc.collect()
        return self.value


def test_countdown_batch_cleared_by_python_code_while_read_is_judged_as_given():
    # A batch takes its own references to every item before it reads any: Python code that runs while it reads
    # (an __index__ method) may empty the caller's lists, and the batch still judges the items it was given.
    for threads in (1, 2):
        responses = [f"<answer>{i} + 1</answer>" for i in range(600)]
        numbers = [[i, 1] for i in range(600)]
        targets: list = [i + 1 for i in range(600)]
        targets[299] = _ClearsBatch(300)
        targets[400] = _Int(401)  # read after the lists are cleared
        targets[299].columns = [responses, numbers, targets]
        verdicts = explain_countdown_batch(responses, numbers, targets, num_threads=threads)
        assert [v.passed for v in verdicts] == [True] * 600
        assert responses == numbers == targets == []


def test_function_calls_two_threads_equal_sequential():
    outputs, golds = _function_call_batch()
    sequential = [check_function_calls(o, g) for o, g in zip(outputs, golds, strict=True)]
    assert any(sequential) and not all(sequential)
    assert [v.passed for v in explain_function_calls_batch(outputs, golds, num_threads=2)] == sequential
    assert [v.passed for v in explain_function_calls_batch(outputs, golds, num_threads=0)] == sequential


def test_concurrent_callers_share_nothing():
    # The GIL is released during checks, so these batches really overlap.
    responses, numbers, targets = _countdown_batch()
    outputs, golds = _function_call_batch()
    want_countdown = [v.passed for v in explain_countdown_batch(responses, numbers, targets, num_threads=1)]
    want_calls = [v.passed for v in explain_function_calls_batch(outputs, golds, num_threads=1)]
    def run(i: int) -> bool:
        if i % 2:
            verdicts = explain_countdown_batch(responses, numbers, targets, num_threads=2)
            return [v.passed for v in verdicts] == want_countdown
        return [v.passed for v in explain_function_calls_batch(outputs, golds, num_threads=2)] == want_calls

    results = results_of_concurrent_calls(run)
    assert results == {i: True for i in range(4)}


def test_a_bad_item_late_in_a_threaded_batch_raises_cleanly():
    # A conversion error late in a batch raises before any check starts, and leaves the checker sound.
    responses, numbers, targets = _countdown_batch()
    last = len(numbers) - 1
    with pytest.raises(ValueError, match=rf"numbers\[{last}\]\[0\]"):
        explain_countdown_batch(responses, numbers[:-1] + [[2**64]], targets, num_threads=2)
    outputs, golds = _function_call_batch()
    with pytest.raises(TypeError, match=rf"outputs\[{len(outputs) - 1}\] must be str or bytes"):
        explain_function_calls_batch(outputs[:-1] + [None], golds, num_threads=2)
    with pytest.raises(ValueError, match=rf"golds\[{len(golds) - 1}\] is not a JSON list"):
        explain_function_calls_batch(outputs, golds[:-1] + ["[1,]"], num_threads=2)
    # The checker is still sound afterwards.
    assert [v.passed for v in explain_countdown_batch(responses, numbers, targets, num_threads=2)] == [
        check_countdown(r, n, t) for r, n, t in zip(responses, numbers, targets, strict=True)
    ]
