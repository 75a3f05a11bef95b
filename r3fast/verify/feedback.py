"""What was wrong with a failed function call, in words a reflection can use, never giving the answer.

The verifier decides pass or fail and its code (r3fast.verify.explain_function_calls); this module
only words the failure, from the output, the tool schemas the prompt showed and the gold calls'
shape (which tools, which arguments):

    >>> function_call_feedback('<tool_call>{"name": "get_wether", "arguments": {}}</tool_call>',
    ...                        "WRONG_CALLS", gold, tools)
    'unknown function `get_wether`: it is not one of the tools offered; the request needs a call to `get_weather`'

It never writes a gold argument value: a wrong value is called wrong, not corrected, and a name
echoed from the output is left out when it holds a gold value. The only numbers it writes are
positions in the output, call and item counts of the output and the gold, and the nesting limit.
The reasons live here rather than in C++ because they read the tool schemas, which are Python data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from r3fast.verify.reference import ASCII_WHITESPACE, MAX_JSON_DEPTH, split_output

MAX_PROBLEMS = 4  # problems listed in one feedback; a reflection has room for a few

_FORMAT_HINTS = {
    "tool_call": 'write each call as <tool_call>{"name": ..., "arguments": {...}}</tool_call> and nothing else',
    "json": 'write one JSON list of calls [{"name": ..., "arguments": {...}}] and nothing else',
}


def function_call_feedback(output: str | bytes, code: str, gold: Sequence[Mapping], tools: Sequence[Mapping],
                           tool_call_format: str = "tool_call") -> str:
    """One sentence on why `output` got verdict `code` against the `gold` calls, with `tools` offered."""
    if tool_call_format not in _FORMAT_HINTS:
        raise ValueError(f"tool_call_format must be one of {sorted(_FORMAT_HINTS)}, got {tool_call_format!r}")
    if code == "PASS":
        return "the calls are right"
    if code == "INVALID_TEXT" or isinstance(output, bytes) and not _decodes(output):
        return "the output is not valid UTF-8 text"
    text = output.decode("utf-8") if isinstance(output, bytes) else output
    text = text.strip(ASCII_WHITESPACE)
    secrets = _gold_values(gold)
    hint = _FORMAT_HINTS[tool_call_format]
    problem, documents = split_output(text)  # the documents before a layout problem decide first
    if code == "BAD_FORMAT":
        return f"{problem or 'the output is not in the asked format'}; {hint}"
    if code == "TOO_DEEP":
        return f"the JSON nests deeper than {MAX_JSON_DEPTH} levels"
    calls = []
    for index, (document, one_call) in enumerate(documents):  # the first document at fault is described
        where = f"call {index + 1}" if len(documents) > 1 else "the call" if one_call else "the output"
        value, error = _parse(document)
        if error:
            return error.replace("{where}", where) + f"; {hint}"
        duplicate = _repeated_key(document)
        if duplicate is not None:
            return f"{where} repeats the key {_mention(duplicate, secrets, 'of an object')} in one object"
        found = [value] if one_call or not isinstance(value, list) else value
        for call in found:
            shape = _call_shape_problem(call, one_call)
            if shape:
                return f"{where}: {shape}; {hint}"
        calls += found
    if code != "WRONG_CALLS":  # what the verifier's stricter reading rejects (e.g. a lone surrogate escape)
        return "the output is not strict JSON (no NaN, comments, trailing commas or lone surrogate escapes)"
    return _wrong_calls(calls, gold, tools, secrets) or "the calls differ from the ones the request needs"


# ----------------------------------------------------------------------------- parsing the output

def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _loads(document: str, **hooks: Any) -> Any:
    return json.loads(document, parse_float=Decimal, parse_constant=_reject_constant, **hooks)


def _parse(document: str) -> tuple[Any, str]:
    """(value, "") or (None, a phrase with {where}) saying where the JSON breaks."""
    if not document:
        return None, "{where} is empty"
    try:
        return _loads(document), ""
    except json.JSONDecodeError as e:
        if e.pos == 0:
            return None, "{where} starts with text, not JSON"
        if e.msg == "Extra data":
            return None, f"{{where}} has more text after its JSON value, at character {e.pos + 1}"
        return None, f"{{where}} is not valid JSON at character {e.pos + 1}: {e.msg.lower()}"
    except ValueError as e:  # NaN, Infinity
        return None, f"{{where}} is not valid JSON: {e}"
    except RecursionError:
        return None, "{where} nests too deeply"


def _repeated_key(document: str) -> str | None:
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in items]
        repeated.extend(k for k in keys if keys.count(k) > 1)
        return dict(items)

    _loads(document, object_pairs_hook=pairs)
    return repeated[0] if repeated else None


def _call_shape_problem(call: Any, one_call: bool) -> str:
    if not isinstance(call, dict):
        what = "a JSON list" if isinstance(call, list) else f"a JSON {_type_of(call)}"
        inside = ": a <tool_call> block holds one call object" if one_call and isinstance(call, list) else ""
        return f"found {what} where a call object belongs{inside}"
    missing = [k for k in ("name", "arguments") if k not in call]
    if missing:
        return "the call object has no " + " and no ".join(f'"{k}"' for k in missing)
    if len(call) > 2:
        return 'the call object has keys besides "name" and "arguments"'
    if not isinstance(call["name"], str):
        return f'"name" must be a string, got a {_type_of(call["name"])}'
    if not isinstance(call["arguments"], dict):
        return f'"arguments" must be an object, got a {_type_of(call["arguments"])}'
    return ""


# ----------------------------------------------------------------------------- comparing calls

def _type_of(value: Any) -> str:
    """The JSON schema type name of a parsed value (numbers with no fraction count as integers)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or isinstance(value, Decimal) and value == value.to_integral_value():
        return "integer"
    if isinstance(value, (float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _fits(value: Any, schema_type: Any) -> bool | None:
    """Whether `value` has the schema's type; None when the schema names no type this knows."""
    if schema_type not in ("string", "integer", "number", "boolean", "array", "object", "null"):
        return None
    actual = _type_of(value)
    return actual == schema_type or (schema_type == "number" and actual == "integer")


def _same(a: Any, b: Any) -> bool:
    """JSON equality as the verifier compares: numbers by value, booleans apart from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return Decimal(repr(a) if isinstance(a, float) else a) == Decimal(repr(b) if isinstance(b, float) else b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _argument_problems(path: str, given: Mapping, gold: Mapping, schema: Mapping, secrets: set[str]) -> list[str]:
    """What differs between the arguments `given` and `gold` of one call (or one nested object)."""
    properties = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    required = set(schema.get("required") or ())
    problems = []
    for key in given:
        if key in gold:
            continue
        name = _mention(path + key, secrets, "an argument")
        if properties and key not in properties:
            problems.append(f"{name} is not an argument the schema has")
        else:
            problems.append(f"argument {name} is set, but the request does not ask for it")
    for key in gold:
        if key not in given:
            kind = "required argument" if key in required else "argument"
            problems.append(f"missing {kind} `{path + key}`" + ("" if key in required else ", which the request states"))
    for key in given:
        if key in gold and not _same(given[key], gold[key]):
            problems += _value_problems(path + key, given[key], gold[key], properties.get(key) or {}, secrets)
    return problems


def _value_problems(path: str, given: Any, gold: Any, schema: Mapping, secrets: set[str]) -> list[str]:
    fits = _fits(given, schema.get("type"))
    if fits is False:
        return [f"argument `{path}` has the wrong type: expected {schema['type']}, got {_type_of(given)}"]
    if isinstance(schema.get("enum"), list) and not any(_same(given, v) for v in schema["enum"]):
        return [f"argument `{path}` is not one of the values its schema's enum allows"]
    if isinstance(given, dict) and isinstance(gold, dict):
        return _argument_problems(path + ".", given, gold, schema, secrets)
    if isinstance(given, list) and isinstance(gold, list):
        items = schema.get("items") if isinstance(schema.get("items"), Mapping) else {}
        for index, item in enumerate(given):
            if _fits(item, items.get("type")) is False:
                return [f"item {index + 1} of argument `{path}` has the wrong type: expected {items['type']}, "
                        f"got {_type_of(item)}"]
        if len(given) != len(gold):
            return [f"argument `{path}` has {len(given)} items; the request lists a different number"]
        return [f"argument `{path}` has the wrong items"]
    if _type_of(given) != _type_of(gold) and fits is None and not (
            {_type_of(given), _type_of(gold)} <= {"integer", "number"}):
        return [f"argument `{path}` has the wrong type: expected {_type_of(gold)}, got {_type_of(given)}"]
    return [f"argument `{path}` has the wrong value"]


def _wrong_calls(calls: list[dict], gold: Sequence[Mapping], tools: Sequence[Mapping], secrets: set[str]) -> str:
    schemas = {t["name"]: t.get("parameters") or {} for t in tools}
    remaining = [dict(g) for g in gold]
    problems = []
    if len(calls) != len(gold):
        problems.append(f"expected {len(gold)} call{'s' if len(gold) != 1 else ''}, got {len(calls)}")
    unmatched = []
    for call in calls:
        same_name = [g for g in remaining if g["name"] == call["name"]]
        if not same_name:
            unmatched.append(call)
            continue
        # pair it with the gold call of that tool it is closest to
        best = min(same_name, key=lambda g: len(_argument_problems("", call["arguments"], g["arguments"],
                                                                     schemas.get(g["name"], {}), secrets)))
        remaining.remove(best)
        found = _argument_problems("", call["arguments"], best["arguments"], schemas.get(best["name"], {}), secrets)
        problems += [f"in the call to `{call['name']}`, {p}" for p in found]
    for call in unmatched:
        name = _mention(call["name"], secrets, "a function")
        if call["name"] not in schemas:
            problems.append(f"unknown function {name}: it is not one of the tools offered")
        elif any(g["name"] == call["name"] for g in gold):
            problems.append(f"an extra call to {name}")
        else:
            problems.append(f"{name} is not a tool this request needs")
    called = {c["name"] for c in calls}
    for name in dict.fromkeys(g["name"] for g in remaining):
        problems.append(f"the request needs {'another' if name in called else 'a'} call to `{name}`")
    return "; ".join(problems[:MAX_PROBLEMS])


# ----------------------------------------------------------------------------- keeping gold values out

def _gold_values(gold: Sequence[Mapping]) -> set[str]:
    """Every gold argument value (strings and numbers, nested ones too) as text."""
    out: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            out.add(value)
        elif isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            out.update({str(value), json.dumps(value) if not isinstance(value, Decimal) else str(value)})

    for call in gold:
        walk(call.get("arguments", {}))
    return {v for v in out if v}


def _mention(name: str, secrets: set[str], fallback: str) -> str:
    """`name` in backticks, or `fallback` when the name (echoed from the output) holds a gold value."""
    if any(s in name for s in secrets if len(s) >= 2):  # one character cannot be kept out of all text
        return fallback
    return f"`{name}`"
