"""Batch checks on several threads give the sequential results, also when Python threads call in at once."""

import pytest
from test_verify_countdown import KNOWN as COUNTDOWN_KNOWN
from test_verify_function_calls import KNOWN as FUNCTION_CALL_KNOWN
from verify_strategies import GOLD, results_of_concurrent_calls

from r3fast.verify import (
    check_countdown,
    check_countdown_batch,
    check_function_calls,
    check_function_calls_batch,
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
    assert check_countdown_batch(responses, numbers, targets, num_threads=2) == sequential
    assert check_countdown_batch(responses, numbers, targets, num_threads=0) == sequential
    assert check_countdown_batch(responses, numbers, targets, num_threads=7) == sequential


def test_function_calls_two_threads_equal_sequential():
    outputs, golds = _function_call_batch()
    sequential = [check_function_calls(o, g) for o, g in zip(outputs, golds, strict=True)]
    assert any(sequential) and not all(sequential)
    assert check_function_calls_batch(outputs, golds, num_threads=2) == sequential
    assert check_function_calls_batch(outputs, golds, num_threads=0) == sequential


def test_concurrent_callers_share_nothing():
    # The GIL is released during checks, so these batches really overlap.
    responses, numbers, targets = _countdown_batch()
    outputs, golds = _function_call_batch()
    want_countdown = check_countdown_batch(responses, numbers, targets, num_threads=1)
    want_calls = check_function_calls_batch(outputs, golds, num_threads=1)
    def run(i: int) -> bool:
        if i % 2:
            return check_countdown_batch(responses, numbers, targets, num_threads=2) == want_countdown
        return check_function_calls_batch(outputs, golds, num_threads=2) == want_calls

    results = results_of_concurrent_calls(run)
    assert results == {i: True for i in range(4)}


def test_a_bad_item_late_in_a_threaded_batch_raises_cleanly():
    # Helper threads check early blocks while later ones are still converted; a conversion error must stop them.
    responses, numbers, targets = _countdown_batch()
    last = len(numbers) - 1
    with pytest.raises(ValueError, match=rf"numbers\[{last}\]\[0\]"):
        check_countdown_batch(responses, numbers[:-1] + [[2**64]], targets, num_threads=2)
    outputs, golds = _function_call_batch()
    with pytest.raises(TypeError, match=rf"outputs\[{len(outputs) - 1}\] must be str or bytes"):
        check_function_calls_batch(outputs[:-1] + [None], golds, num_threads=2)
    with pytest.raises(ValueError, match=rf"golds\[{len(golds) - 1}\] is not a JSON list"):
        check_function_calls_batch(outputs, golds[:-1] + ["[1,]"], num_threads=2)
    # The checker is still sound afterwards.
    assert check_countdown_batch(responses, numbers, targets, num_threads=2) == [
        check_countdown(r, n, t) for r, n, t in zip(responses, numbers, targets, strict=True)
    ]
