"""Pure-Python reference of the r3fast.verify contracts: the oracle the differential tests hold the C++ to.

Written for clarity, not speed, and sharing no code with csrc/. Each function returns a verdict code
(see r3fast.verify.verdict); a malformed gold raises ValueError.

Countdown contract
    1. Text that is not valid UTF-8 (bytes) or has no UTF-8 form (a str with lone surrogates): INVALID_TEXT.
    2. The answer is the text between the last ``</answer>`` and the closest ``<answer>`` before it; none: NO_ANSWER.
    3. Strip ASCII whitespace (space, \\t, \\n, \\v, \\f, \\r); empty: NO_ANSWER; over 1024 bytes: TOO_LONG.
    4. Grammar ``expr := term (("+"|"-") term)*``, ``term := factor (("*"|"/") factor)*``,
       ``factor := ("+"|"-") factor | NUMBER | "(" expr ")"``; NUMBER is ASCII digits without a leading zero;
       ASCII whitespace may separate tokens. Anything else: PARSE_ERROR. A factor inside more than 64
       parentheses and unary signs: TOO_DEEP. The first of these errors in reading order wins.
    5. The literals must be the numbers as a multiset: WRONG_NUMBERS.
    6. Exact rational evaluation, operands left to right: DIV_BY_ZERO; OVERFLOW when a value, in lowest terms,
       has a numerator or denominator beyond 2**63 - 1 in magnitude (the first of these in evaluation order
       wins). PASS iff the value equals the target, else WRONG_VALUE.

How this differs from TinyZero's Countdown checker (verl/utils/reward_score/countdown.py in TinyZero):
    - TinyZero looks only at the last line after "Assistant:"; here the answer tags may sit anywhere and span lines.
    - TinyZero evaluates with Python's eval after a character whitelist that admits ``**``, so ``99**99**99``
      never returns; here the grammar has no power operator and nesting is capped at 64.
    - TinyZero collects numbers with the regex ``\\d+``, so ``2.5`` counts as the numbers 2 and 5 and ``007`` as
      7; here decimals and leading zeros are parse errors.
    - TinyZero compares floats within 1e-5, so near misses pass; here arithmetic is exact and the value must
      equal the target.
    - TinyZero pays a 0.1 format score for a well-formed wrong answer; here the result is pass/fail and the
      verdict code says why.

Function-call contract
    1. INVALID_TEXT as for Countdown. The output, stripped of ASCII whitespace, is (a) one JSON document: an
       array of calls or one call; (b) ```` ``` ```` + optional ``json`` + (a) + ```` ``` ````; or (c) one or more
       ``<tool_call>`` one call ``</tool_call>`` blocks separated by whitespace. Empty output, an unclosed
       fence or tag, or text between blocks: BAD_FORMAT. Blocks are checked in order; the first failing one decides.
    2. Each document must be strict JSON (no NaN/Infinity, trailing commas, comments or lone surrogate
       escapes): INVALID_JSON; containers nested deeper than 128: TOO_DEEP; any object with a repeated key
       (after unescaping): DUPLICATE_KEY; a call that is not exactly {"name": string, "arguments": object}:
       BAD_CALL.
    3. PASS iff the calls equal the gold calls as a multiset, else WRONG_CALLS. Values compare as JSON: objects
       without key order, arrays in order, strings unescaped, numbers by exact decimal value (1 == 1.0 == 1e0,
       -0 == 0), booleans and null only equal themselves.
    When a document is both deeper than 128 and invalid, which of TOO_DEEP and INVALID_JSON is reported
    depends on where the parser meets each first; both fail.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

ASCII_WHITESPACE = " \t\n\v\f\r"
MAX_ANSWER_BYTES = 1024
MAX_EXPRESSION_DEPTH = 64
MAX_JSON_DEPTH = 128
INT64_MAX = 2**63 - 1


def _utf8(text: str | bytes) -> bytes | None:
    try:
        if isinstance(text, bytes):
            text.decode("utf-8")
            return text
        return text.encode("utf-8")
    except UnicodeError:
        return None


class _Fail(Exception):
    def __init__(self, code: str):
        self.code = code


# ---------------------------------------------------------------------------------------------- Countdown

_TOKEN = re.compile(rb"[ \t\n\v\f\r]*(?:([0-9]+)|(.))", re.S)


def _tokens(answer: bytes) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for m in _TOKEN.finditer(answer):
        digits, other = m.group(1), m.group(2)
        if digits is not None:
            out.append(("bad", None) if digits.startswith(b"0") and len(digits) > 1 else ("num", int(digits)))
        elif other is not None:
            out.append(("op", other.decode("latin-1")) if other in b"+-*/()" else ("bad", None))
    out.append(("end", None))
    return out


class _ExpressionParser:
    def __init__(self, answer: bytes):
        self.tokens = _tokens(answer)
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, Any]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> tuple:
        tree = self.expr()
        if self.peek()[0] != "end":
            raise _Fail("PARSE_ERROR")
        return tree

    def expr(self) -> tuple:
        tree = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            tree = ("bin", op, tree, self.term())
        return tree

    def term(self) -> tuple:
        tree = self.factor()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            tree = ("bin", op, tree, self.factor())
        return tree

    def factor(self) -> tuple:
        kind, value = self.peek()
        if kind == "num":
            self.take()
            return ("num", value)
        if kind == "op" and value in "+-(":
            self.depth += 1
            if self.depth > MAX_EXPRESSION_DEPTH:
                raise _Fail("TOO_DEEP")
            self.take()
            if value == "(":
                tree = self.expr()
                if self.take() != ("op", ")"):
                    raise _Fail("PARSE_ERROR")
            else:
                inner = self.factor()
                tree = ("neg", inner) if value == "-" else inner
            self.depth -= 1
            return tree
        raise _Fail("PARSE_ERROR")


def _literals(tree: tuple) -> list[int]:
    if tree[0] == "num":
        return [tree[1]]
    if tree[0] == "neg":
        return _literals(tree[1])
    return _literals(tree[2]) + _literals(tree[3])


def _bounded(x: Fraction) -> Fraction:
    if abs(x.numerator) > INT64_MAX or x.denominator > INT64_MAX:
        raise _Fail("OVERFLOW")
    return x


def _evaluate(tree: tuple) -> Fraction:
    if tree[0] == "num":
        return Fraction(tree[1])
    if tree[0] == "neg":
        return -_evaluate(tree[1])
    _, op, left, right = tree
    a, b = _evaluate(left), _evaluate(right)
    if op == "+":
        return _bounded(a + b)
    if op == "-":
        return _bounded(a - b)
    if op == "*":
        return _bounded(a * b)
    if b == 0:
        raise _Fail("DIV_BY_ZERO")
    return _bounded(a / b)


def countdown_verdict(response: str | bytes, numbers: list[int], target: int) -> str:
    """The verdict code of the Countdown contract above."""
    text = _utf8(response)
    if text is None:
        return "INVALID_TEXT"
    close = text.rfind(b"</answer>")
    open_ = text.rfind(b"<answer>", 0, close) if close >= 0 else -1
    if open_ < 0:
        return "NO_ANSWER"
    answer = text[open_ + len(b"<answer>") : close].strip(ASCII_WHITESPACE.encode())
    if not answer:
        return "NO_ANSWER"
    if len(answer) > MAX_ANSWER_BYTES:
        return "TOO_LONG"
    try:
        tree = _ExpressionParser(answer).parse()
        if sorted(_literals(tree)) != sorted(numbers):
            return "WRONG_NUMBERS"
        value = _evaluate(tree)
    except _Fail as f:
        return f.code
    return "PASS" if value == target else "WRONG_VALUE"


# ------------------------------------------------------------------------------------------ Function calls

_NUMBER = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?")


def _number(raw: str) -> tuple:
    """A JSON number as ("num", sign, digits, exponent) with no leading/trailing zeros in digits; zero is ("num", 0)."""
    m = _NUMBER.fullmatch(raw)
    assert m is not None, raw  # the json module only hands over valid number text
    sign, whole, frac, exp = m.group(1), m.group(2), m.group(3) or "", m.group(4) or "0"
    digits = (whole + frac).lstrip("0")
    if not digits:
        return ("num", 0)
    significant = digits.rstrip("0")
    shift = len(digits) - len(significant) - len(frac)
    with localcontext() as ctx:  # exact even for exponents too long for int()
        ctx.prec = len(exp) + 30
        exponent = Decimal(exp) + shift
    return ("num", sign == "-", significant, str(exponent))


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _loads(doc: str) -> tuple[Any, bool]:
    """Parse strict JSON into canonical tagged tuples; return it and whether some object repeats a key."""
    duplicate = False

    def obj(pairs: list[tuple[str, Any]]) -> tuple:
        nonlocal duplicate
        keys = [k for k, _ in pairs]
        duplicate |= len(set(keys)) != len(keys)
        return ("obj", tuple(sorted(((k, _canonical(v)) for k, v in pairs), key=lambda kv: kv[0])))

    value = json.loads(
        doc, object_pairs_hook=obj, parse_float=_number, parse_int=_number, parse_constant=_reject_constant
    )
    return _canonical(value), duplicate


def _canonical(v: Any) -> Any:
    # object_pairs_hook and the number hooks already return tagged tuples; the rest is tagged here.
    if isinstance(v, tuple):
        return v
    if isinstance(v, list):
        return ("arr", tuple(_canonical(x) for x in v))
    if isinstance(v, str):
        return ("str", v)
    if isinstance(v, bool):
        return ("bool", v)
    assert v is None, v
    return ("null",)


def _depth_and_text_ok(v: tuple) -> tuple[int, bool]:
    """Container nesting depth, and whether every string has a UTF-8 form (no lone surrogate escapes)."""
    depth, ok, stack = 0, True, [(v, 0)]
    while stack:
        node, level = stack.pop()
        tag = node[0]
        if tag == "str":
            ok &= _utf8(node[1]) is not None
        elif tag == "arr":
            depth = max(depth, level + 1)
            stack.extend((x, level + 1) for x in node[1])
        elif tag == "obj":
            depth = max(depth, level + 1)
            for key, x in node[1]:
                ok &= _utf8(key) is not None
                stack.append((x, level + 1))
    return depth, ok


def _is_call(v: tuple) -> bool:
    if v[0] != "obj" or [k for k, _ in v[1]] != ["arguments", "name"]:
        return False
    members = dict(v[1])
    return members["arguments"][0] == "obj" and members["name"][0] == "str"


def _document_calls(doc: str, one_call: bool) -> tuple[str, list]:
    try:
        value, duplicate = _loads(doc)
    except RecursionError:  # only documents far deeper than MAX_JSON_DEPTH get here
        return "TOO_DEEP", []
    except ValueError:
        return "INVALID_JSON", []
    depth, text_ok = _depth_and_text_ok(value)
    if not text_ok:
        return "INVALID_JSON", []
    if depth > MAX_JSON_DEPTH:
        return "TOO_DEEP", []
    if duplicate:
        return "DUPLICATE_KEY", []
    calls = value[1] if value[0] == "arr" and not one_call else (value,)
    if not all(_is_call(c) for c in calls):
        return "BAD_CALL", []
    return "PASS", list(calls)


def split_output(text: str) -> tuple[str, list[tuple[str, bool]]]:
    """(what breaks rule 1, as a phrase, or "" when the layout is right; the output's JSON documents by
    rule 1 up to that point, each with whether it must be one call, i.e. is a <tool_call> block)."""
    if not text:
        return "the output is empty", []
    if text.startswith("```"):
        if len(text) < 6 or not text.endswith("```"):
            return "the ``` block is not closed", []
        body = text[3:-3]
        body = body[4:] if body.startswith("json") else body
        return "", [(body.strip(ASCII_WHITESPACE), False)]
    if text.startswith("<tool_call>"):
        documents = []
        rest = text
        while rest:
            if not rest.startswith("<tool_call>"):
                return "there is text after a </tool_call> that is not another <tool_call> block", documents
            close = rest.find("</tool_call>", len("<tool_call>"))
            if close < 0:
                return "a <tool_call> block is not closed with </tool_call>", documents
            documents.append((rest[len("<tool_call>") : close].strip(ASCII_WHITESPACE), True))
            rest = rest[close + len("</tool_call>") :].lstrip(ASCII_WHITESPACE)
        return "", documents
    return "", [(text, False)]


def _output_calls(text: str) -> tuple[str, list]:
    problem, documents = split_output(text)
    calls: list = []
    for document, one_call in documents:  # blocks in order: the first failing one decides
        code, found = _document_calls(document, one_call)
        if code != "PASS":
            return code, []
        calls += found
    return ("BAD_FORMAT", []) if problem else ("PASS", calls)


def gold_calls(gold: str | bytes | list) -> list:
    """The canonical calls of a gold answer; ValueError when it is not a JSON list of calls (or one call)."""
    if not isinstance(gold, str | bytes):
        gold = json.dumps(gold, ensure_ascii=True, allow_nan=False)
    text = _utf8(gold)
    if text is None:
        raise ValueError("gold is not valid UTF-8 text")
    code, calls = _document_calls(text.decode("utf-8").strip(ASCII_WHITESPACE), one_call=False)
    if code != "PASS":
        raise ValueError(f"gold is not a JSON list of calls: {code}")
    return calls


def function_calls_verdict(output: str | bytes, gold: str | bytes | list) -> str:
    """The verdict code of the function-call contract above."""
    expected = gold_calls(gold)
    text = _utf8(output)
    if text is None:
        return "INVALID_TEXT"
    code, calls = _output_calls(text.decode("utf-8").strip(ASCII_WHITESPACE))
    if code != "PASS":
        return code
    return "PASS" if Counter(calls) == Counter(expected) else "WRONG_CALLS"
