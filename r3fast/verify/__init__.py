"""Binary verifiers for Countdown equations and function-call JSON, in C++ with the GIL released.

    >>> from r3fast.verify import check_countdown, explain_function_calls
    >>> check_countdown("<answer>(6 - 2) * 25</answer>", [25, 2, 6], 100)
    True
    >>> explain_function_calls('[{"name": "f", "arguments": {"x": 1.0}}]', [{"name": "f", "arguments": {"x": 1}}]).code
    'PASS'
    >>> gold = prepare_gold('[{"name": "f", "arguments": {}}]')  # parsed once, for many checks
    >>> [v.code for v in explain_function_calls_batch(['{"name": "f", "arguments": {}}', "[]"], [gold, gold])]
    ['PASS', 'WRONG_CALLS']

A batch is one native call: its arguments are read into plain C++ values, then checked with the GIL released,
on several threads when the batch is big enough to pay for them. Tasks verify through these batch functions
(r3fast.tasks: `task.judge_batch`).

Responses and outputs may be str or bytes; text that is not valid UTF-8 (or a str with lone surrogates) fails
the check. Caller mistakes (batch lengths that differ, numbers outside int64, a malformed gold) raise.
The exact contracts are documented and implemented in pure Python in r3fast.verify.reference.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from r3fast import _native
from r3fast.verify.verdict import COUNTDOWN_CODES, FUNCTION_CALL_CODES, Verdict

FunctionCallGold = _native.FunctionCallGold
Text = str | bytes
# A gold is the xLAM/APIGen `answers` value: JSON text, or the list of {"name", "arguments"} dicts it parses to,
# or either prepared once by prepare_gold.
Gold = str | bytes | list[dict[str, Any]] | FunctionCallGold

__all__ = [
    "COUNTDOWN_CODES",
    "FUNCTION_CALL_CODES",
    "FunctionCallGold",
    "Verdict",
    "check_countdown",
    "check_function_calls",
    "explain_countdown",
    "explain_countdown_batch",
    "explain_function_calls",
    "explain_function_calls_batch",
    "prepare_gold",
]


# One Verdict per native verdict, made once: the native calls return these objects (frozen, so shared).
_VERDICTS = tuple(Verdict(code, reason) for code, reason in _native.VERDICTS)


def check_countdown(response: Text, numbers: Sequence[int], target: int) -> bool:
    """Whether the last <answer>...</answer> in `response` uses each of `numbers` once and equals `target`."""
    return _native.check_countdown(response, numbers, target)


def explain_countdown(response: Text, numbers: Sequence[int], target: int) -> Verdict:
    """The verdict of check_countdown with its code and reason."""
    return _native.explain_countdown(response, numbers, target, _VERDICTS)


def explain_countdown_batch(
    responses: Sequence[Text],
    numbers: Sequence[Sequence[int]],
    targets: Sequence[int],
    *,
    num_threads: int = 0,
) -> list[Verdict]:
    """explain_countdown over a batch in one native call, on `num_threads` threads (0: all cores)."""
    return _native.explain_countdown_batch(responses, numbers, targets, num_threads, _VERDICTS)


def _gold_json(gold: Any, name: str) -> str:
    try:
        return json.dumps(gold, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{name} must be JSON text or a list of {{'name', 'arguments'}} dicts: {e}"
        ) from None


# The gold forms the native checker takes; a parsed gold (a list of dicts) goes to it as JSON text.
_NATIVE_GOLD = (str, bytes, FunctionCallGold)
_NATIVE_GOLD_TYPES = frozenset(_NATIVE_GOLD)


def _gold_arg(gold: Gold) -> str | bytes | FunctionCallGold:
    return gold if isinstance(gold, _NATIVE_GOLD) else _gold_json(gold, "gold")


def prepare_gold(gold: Gold) -> FunctionCallGold:
    """`gold` parsed once (like re.compile): checks against the result parse only the output."""
    if isinstance(gold, FunctionCallGold):
        return gold
    return FunctionCallGold(_gold_arg(gold))


def check_function_calls(output: Text, gold: Gold) -> bool:
    """Whether `output` holds the same calls as `gold` (a multiset: order does not matter)."""
    return _native.check_function_calls(output, _gold_arg(gold))


def explain_function_calls(output: Text, gold: Gold) -> Verdict:
    """The verdict of check_function_calls with its code and reason."""
    return _native.explain_function_calls(output, _gold_arg(gold), _VERDICTS)


def explain_function_calls_batch(
    outputs: Sequence[Text], golds: Sequence[Gold], *, num_threads: int = 0
) -> list[Verdict]:
    """explain_function_calls over a batch in one native call, on `num_threads` threads (0: all cores).

    Golds that are checked more than once (a GRPO group, or across training steps) are best prepared once with
    prepare_gold; JSON text is parsed here, once for a run of items that share one gold object.
    """
    golds = golds if isinstance(golds, list | tuple) else list(golds)
    if not _NATIVE_GOLD_TYPES.issuperset(map(type, golds)):  # a type scan in C, a tenth of the loop's cost
        golds = [g if isinstance(g, _NATIVE_GOLD) else _gold_json(g, f"golds[{i}]") for i, g in enumerate(golds)]
    return _native.explain_function_calls_batch(outputs, golds, num_threads, _VERDICTS)
