"""Hypothesis strategies for the verifier tests: passing, near-miss and random inputs for both contracts."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from hypothesis import HealthCheck
from hypothesis import strategies as st

INT64_MAX = 2**63 - 1
# The sanitizer build runs the same tests with fewer examples (see test_sanitizer_build.py).
EXAMPLES_SCALE = float(os.environ.get("R3FAST_VERIFY_EXAMPLES_SCALE", "1"))
# hypothesis settings of the verifier tests: inputs are large and checks are timed elsewhere
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# a two-call gold answer the function-call tests share
GOLD = (
    '[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, {"name": "now", "arguments": {}}]'
)


def results_of_concurrent_calls(run, count: int = 4) -> dict:
    """{i: run(i)} with the `count` calls made from as many Python threads at once."""
    import threading

    results: dict = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(i))) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def examples(n: int) -> int:
    return max(10, int(n * EXAMPLES_SCALE))


WHITESPACE = st.sampled_from(["", "", "", " ", "  ", "\t", "\n", " \n "])

# ------------------------------------------------------------------------------------------------ Countdown


@dataclass
class Expression:
    text: str
    numbers: list[int]
    value: Fraction | None  # None: the expression divides by zero somewhere


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _apply(op: str, a: Fraction | None, b: Fraction | None) -> Fraction | None:
    if a is None or b is None or (op == "/" and b == 0):
        return None
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]


@st.composite
def expressions(draw, numbers: list[int]) -> Expression:
    """A random expression using each of `numbers` once, rendered with random spacing, signs and parentheses."""
    ws = lambda: draw(WHITESPACE)  # noqa: E731

    def build(nums: list[int]) -> tuple[str, int, Fraction | None]:
        # Returns (text, precedence of its top operator: 3 for atoms, value).
        if len(nums) == 1:
            text, prec, value = str(nums[0]), 3, Fraction(nums[0])
        else:
            cut = draw(st.integers(1, len(nums) - 1))
            op = draw(st.sampled_from("+-*/"))
            lt, lp, lv = build(nums[:cut])
            rt, rp, rv = build(nums[cut:])
            p = _PRECEDENCE[op]
            if lp < p:
                lt = f"({ws()}{lt}{ws()})"
            # Same precedence on the right needs parentheses for - and /; for + and * they are optional.
            if rp < p or (rp == p and (op in "-/" or draw(st.booleans()))):
                rt = f"({ws()}{rt}{ws()})"
            text, prec, value = f"{lt}{ws()}{op}{ws()}{rt}", p, _apply(op, lv, rv)
        sign = draw(st.sampled_from(["", "", "", "", "-", "+", "--"]))
        if sign:
            inner = text if prec == 3 else f"({text})"
            text, prec = sign + ws() + inner, 3
            if value is not None and sign == "-":
                value = -value
        if draw(st.integers(0, 5)) == 0:
            text, prec = f"({ws()}{text}{ws()})", 3
        return text, prec, value

    order = draw(st.permutations(numbers))
    text, _, value = build(list(order))
    return Expression(text, list(numbers), value)


PREFIXES = st.sampled_from(
    [
        "",
        "Let me solve this step by step.\n",
        "<think>First try <answer>1 + 1</answer>, no.</think>\n",
        "Assistant: <answer>",
        "</answer> then ",
    ]
)
SUFFIXES = st.sampled_from(["", "\n", " Done.", " <answer>", "\n\nThat is all."])


@st.composite
def countdown_passing(draw, big: bool = False) -> tuple[str, list[int], int, Fraction | None]:
    """(response, numbers, target, value) where target == value whenever the value is an integer in range."""
    element = st.integers(0, INT64_MAX) if big else st.integers(0, 100)
    numbers = draw(st.lists(element, min_size=1, max_size=6))
    expr = draw(expressions(numbers))
    response = (
        f"{draw(PREFIXES)}<answer>{draw(WHITESPACE)}{expr.text}{draw(WHITESPACE)}</answer>{draw(SUFFIXES)}"
    )
    value = expr.value
    if value is not None and value.denominator == 1 and abs(value) <= INT64_MAX and draw(st.integers(0, 4)):
        target = int(value)
    else:
        target = draw(st.integers(-1000, 1000))
    return response, numbers, target, value


MUTATIONS = [
    "**",
    ".",
    "=",
    "x",
    "×",
    "٣",
    "0",
    "(",
    ")",
    " ",
    "-",
    "/0",
    "1",
    "//",
    "\x00",
    "2.5",
    "<answer>",
    "</answer>",
]


@st.composite
def countdown_near_miss(draw) -> tuple[str, list[int], int]:
    response, numbers, target, _ = draw(countdown_passing())
    kind = draw(st.integers(0, 4))
    if kind == 0:
        at = draw(st.integers(0, len(response)))
        response = response[:at] + draw(st.sampled_from(MUTATIONS)) + response[at:]
    elif kind == 1 and response:
        at = draw(st.integers(0, len(response) - 1))
        response = response[:at] + response[at + 1 :]
    elif kind == 2:
        numbers = numbers[1:] if draw(st.booleans()) else numbers + [draw(st.integers(0, 100))]
    elif kind == 3:
        target += draw(st.sampled_from([-1, 1]))
    else:
        response = response.replace(
            draw(st.sampled_from(["+", "-", "*", "/"])), draw(st.sampled_from(["+", "-", "*", "/"])), 1
        )
    return response, numbers, target


EXPRESSION_ALPHABET = st.sampled_from(
    list("0123456789+-*/()  \t\n.x") + ["<answer>", "</answer>", "10", "00"]
)


@st.composite
def countdown_random(draw) -> tuple[str | bytes, list[int], int]:
    body = "".join(draw(st.lists(EXPRESSION_ALPHABET, max_size=30)))
    if draw(st.booleans()):
        body = f"<answer>{body}</answer>"
    response: str | bytes = body
    choice = draw(st.integers(0, 3))
    if choice == 1:
        response = draw(st.text(max_size=40)) + body  # any unicode, lone surrogates included
    elif choice == 2:
        response = draw(st.binary(max_size=20)) + body.encode()  # often invalid UTF-8
    numbers = draw(st.lists(st.integers(0, 20), max_size=5))
    return response, numbers, draw(st.integers(-50, 50))


# ------------------------------------------------------------------------------------------- Function calls


@dataclass(frozen=True)
class Num:
    """A JSON number mantissa * 10**exponent, rendered in many equal spellings."""

    mantissa: int
    exponent: int

    @property
    def value(self) -> Decimal:
        return Decimal(self.mantissa).scaleb(self.exponent)


NUMS = st.builds(
    Num,
    st.one_of(st.integers(-1000, 1000), st.integers(-(10**30), 10**30)),
    st.one_of(st.integers(-4, 4), st.integers(-400, 400)),
)
KEYS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=5)
STRINGS = st.text(max_size=6)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMS, STRINGS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)
CALLS = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=8), "arguments": st.dictionaries(KEYS, JSON_VALUES, max_size=4)}
    ),
    max_size=3,
)


def _number_text(n: Num, draw) -> str:
    sign = "-" if n.mantissa < 0 else ""
    digits = str(abs(n.mantissa))
    e = n.exponent
    if n.mantissa == 0:
        return draw(st.sampled_from(["0", "-0", "0.0", "0e5", "0.000E-3"]))
    pad = draw(st.integers(0, 2))
    choice = draw(st.integers(0, 3))
    if choice == 0:  # mantissa and exponent, maybe with extra zeros
        return f"{sign}{digits}{'0' * pad}{draw(st.sampled_from(['e', 'E', 'e+', 'E+']))}{e - pad}".replace(
            "+-", "-"
        )
    if choice == 1 and e >= 0:  # a plain integer
        return f"{sign}{digits}{'0' * e}"
    # d.ddd with the exponent moved: value = 0.digits * 10^(e + len(digits))
    point = len(digits) + e
    if 0 < point < len(digits):
        return f"{sign}{digits[:point]}.{digits[point:]}{'0' * pad}"
    if point <= 0 and point > -10:
        return f"{sign}0.{'0' * -point}{digits}{'0' * pad}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}e{point - 1}"


def _string_text(s: str, draw) -> str:
    if draw(st.booleans()):
        return json.dumps(s, ensure_ascii=draw(st.booleans()))
    out = []
    for ch in s:  # escape some characters as \\uXXXX (surrogate pairs above the BMP)
        if draw(st.integers(0, 2)) == 0:
            code = ord(ch)
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04X}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(json.dumps(ch, ensure_ascii=False)[1:-1])
    return '"' + "".join(out) + '"'


def render(value, draw) -> str:
    """JSON text for `value` with random key order, spacing, number spelling and string escapes."""
    ws = lambda: draw(st.sampled_from(["", "", " ", "\n", "\t "]))  # noqa: E731
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Num):
        return _number_text(value, draw)
    if isinstance(value, str):
        return _string_text(value, draw)
    if isinstance(value, list):
        return "[" + ws() + ("," + ws()).join(render(v, draw) for v in value) + ws() + "]"
    items = draw(st.permutations(list(value.items())))
    return (
        "{"
        + ws()
        + ("," + ws()).join(f"{_string_text(k, draw)}{ws()}:{ws()}{render(v, draw)}" for k, v in items)
        + ws()
        + "}"
    )


def plain(value) -> str:
    """JSON text for `value` in one fixed spelling: the gold side of a generated case."""
    if isinstance(value, Num):
        return f"{value.mantissa}e{value.exponent}"
    if isinstance(value, list):
        return "[" + ",".join(plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{plain(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


@st.composite
def function_calls_passing(draw) -> tuple[str, str]:
    """(output, gold) holding the same calls in different order and spelling."""
    calls = draw(CALLS)
    gold = plain(calls)
    shuffled = draw(st.permutations(calls))
    envelope = draw(st.integers(0, 3))
    ws = draw(WHITESPACE)
    if envelope == 3 and shuffled:
        output = ws.join(
            f"<tool_call>{draw(WHITESPACE)}{render(c, draw)}{draw(WHITESPACE)}</tool_call>" for c in shuffled
        )
    else:
        body = (
            render(shuffled[0], draw)
            if len(shuffled) == 1 and draw(st.booleans())
            else render(list(shuffled), draw)
        )
        if envelope == 1:
            body = f"```json\n{body}\n```"
        elif envelope == 2:
            body = f"```{draw(WHITESPACE)}{body}{draw(WHITESPACE)}```"
        output = body
    return f"{draw(WHITESPACE)}{output}{draw(WHITESPACE)}", gold


JSON_MUTATIONS = [
    ",",
    "NaN",
    "Infinity",
    "'",
    '"',
    "{",
    "}",
    "[",
    "]",
    ":",
    "1",
    "true",
    "\\",
    "\x00",
    "```",
    "<tool_call>",
    "</tool_call>",
    " ",
]


@st.composite
def function_calls_near_miss(draw) -> tuple[str, str]:
    output, gold = draw(function_calls_passing())
    kind = draw(st.integers(0, 6))
    if kind == 0:
        at = draw(st.integers(0, len(output)))
        output = output[:at] + draw(st.sampled_from(JSON_MUTATIONS)) + output[at:]
    elif kind == 1 and output:
        at = draw(st.integers(0, len(output) - 1))
        output = output[:at] + output[at + 1 :]
    elif kind == 2:
        output = output.replace('"arguments"', '"arguments":{"k":1},"arguments"', 1)  # a duplicate key
    elif kind == 3:
        output = (
            draw(st.sampled_from(["Sure! ", "Here you go:\n", ""]))
            + output
            + draw(st.sampled_from([" Done.", "", "\n```"]))
        )
    elif kind == 4:
        digit = draw(st.sampled_from("0123456789"))
        output = output.replace(digit, draw(st.sampled_from("0123456789")), 1)
    elif kind == 5:
        output = output.replace("true", "1", 1).replace("null", "0", 1)
    else:
        gold = plain(draw(CALLS))
    return output, gold


@st.composite
def function_calls_random(draw) -> tuple[str | bytes, str]:
    alphabet = st.sampled_from(
        list('{}[]":,0123456789.eE+- \n\\u')
        + ['"name"', '"arguments"', "true", "null", "```", "<tool_call>", "</tool_call>"]
    )
    output: str | bytes = "".join(draw(st.lists(alphabet, max_size=40)))
    if draw(st.integers(0, 3)) == 0:
        output = draw(st.binary(max_size=10)) + output.encode()
    return output, plain(draw(CALLS))
