"""r3fast native core: the C++ Countdown and function-call checkers (csrc/bindings.cpp).

A batch function converts its arguments to plain C++ values while holding the GIL, then checks with the GIL
released. VERDICTS lists every verdict as a (code, reason) pair; an explain function returns, for each verdict,
the object at its index in the `verdicts` tuple it is given (r3fast.verify gives its Verdict objects). Use the
typed wrappers in r3fast.verify rather than this module.
"""

from collections.abc import Sequence
from typing import TypedDict, TypeVar

Text = str | bytes
V = TypeVar("V")

VERDICTS: tuple[tuple[str, str], ...]

class BuildInfo(TypedDict):
    flags: str
    compiler: str
    sanitized: bool

class FunctionCallGold:
    """A gold answer parsed once; checks against it parse only the output."""

    def __init__(self, gold: Text, name: str = "gold") -> None:
        """Parses JSON text; a malformed gold raises ValueError naming it `name`."""

def build_info() -> BuildInfo:
    """Flags and compiler the extension was built with."""

def check_countdown(response: Text, numbers: Sequence[int], target: int) -> bool:
    """Whether one Countdown response passes."""

def explain_countdown(response: Text, numbers: Sequence[int], target: int, verdicts: tuple[V, ...]) -> V:
    """verdicts[i] for the verdict of one Countdown check, i its index in VERDICTS."""

def explain_countdown_batch(
    responses: Sequence[Text],
    numbers: Sequence[Sequence[int]],
    targets: Sequence[int],
    num_threads: int,
    verdicts: tuple[V, ...],
) -> list[V]:
    """explain_countdown over a batch, on num_threads threads (0: all cores)."""

def check_function_calls(output: Text, gold: Text | FunctionCallGold) -> bool:
    """Whether one output holds the gold calls."""

def explain_function_calls(output: Text, gold: Text | FunctionCallGold, verdicts: tuple[V, ...]) -> V:
    """verdicts[i] for the verdict of one function-call check, i its index in VERDICTS."""

def explain_function_calls_batch(
    outputs: Sequence[Text], golds: Sequence[Text | FunctionCallGold], num_threads: int, verdicts: tuple[V, ...]
) -> list[V]:
    """explain_function_calls over a batch, on num_threads threads (0: all cores)."""
