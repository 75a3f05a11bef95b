"""Prepared golds (prepare_gold) give the verdicts of plain golds; keys and numbers at the checker's internal
boundaries (16-byte key heads, 18-digit and int32-exponent small numbers) agree with the Python reference."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from verify_strategies import (
    GOLD,
    SETTINGS,
    Num,
    examples,
    function_calls_near_miss,
    function_calls_passing,
    function_calls_random,
    plain,
    render,
    results_of_concurrent_calls,
)

from r3fast.verify import (
    FunctionCallGold,
    check_function_calls,
    explain_function_calls,
    explain_function_calls_batch,
    prepare_gold,
)
from r3fast.verify.reference import function_calls_verdict


def _same_as_plain(output, gold: str) -> None:
    expected = explain_function_calls(output, gold).code
    prepared = prepare_gold(gold)
    assert explain_function_calls(output, prepared).code == expected, (output, gold)
    assert check_function_calls(output, prepared) == (expected == "PASS")


@settings(max_examples=examples(300), **SETTINGS)
@given(st.one_of(function_calls_passing(), function_calls_near_miss(), function_calls_random()))
def test_prepared_gold_gives_the_plain_verdict(case):
    _same_as_plain(*case)


@settings(max_examples=examples(60), **SETTINGS)
@given(
    st.lists(st.one_of(function_calls_passing(), function_calls_near_miss()), min_size=1, max_size=6),
    st.data(),
)
def test_batches_mixing_prepared_text_and_parsed_golds(cases, data):
    outputs = [o for o, _ in cases]
    golds = [g for _, g in cases]
    mixed = []
    for g in golds:
        form = data.draw(st.sampled_from(["text", "prepared", "parsed"]))
        if form == "parsed":
            try:
                parsed = json.loads(g)
                json.dumps(parsed, allow_nan=False)
            except ValueError:  # a number beyond float range parses to inf, which is no JSON
                form = "text"
        mixed.append(prepare_gold(g) if form == "prepared" else json.loads(g) if form == "parsed" else g)
    expected = [v.passed for v in explain_function_calls_batch(outputs, golds, num_threads=1)]
    assert expected == [function_calls_verdict(o, g) == "PASS" for o, g in zip(outputs, golds, strict=True)]
    if all(not isinstance(m, list) for m in mixed):  # parsed floats may spell a gold's numbers differently
        assert [v.passed for v in explain_function_calls_batch(outputs, mixed, num_threads=1)] == expected
        assert [v.passed for v in explain_function_calls_batch(outputs, mixed, num_threads=2)] == expected


# Keys around the 16 bytes kept inline (and the 8-byte words they are kept in), sharing long prefixes.
KEY_PREFIXES = ["", "a" * 7, "a" * 8, "k" * 15, "k" * 16, "k" * 17, "same_16_bytes_ab", "x" * 40]
KEYS = st.builds(
    str.__add__,
    st.sampled_from(KEY_PREFIXES),
    st.text(st.sampled_from(["a", "k", "é", '"', "\\", "\n", "€", "😀"]), max_size=3),
)
INT32 = 2**31
# Significands around 18 digits and exponents around the int32 range: the two number forms meet there.
BOUNDARY_NUMS = st.builds(
    Num,
    st.sampled_from(
        [1, 7, 10**17, 10**18 - 1, 10**18, 10**18 + 1, 123456789012345678, 1234567890123456789, -(10**18)]
    ),
    st.sampled_from(
        [0, 5, -5, INT32 - 1, INT32, INT32 + 1, -INT32, -INT32 + 1, -INT32 - 1, INT32 - 19, -INT32 + 18]
    ),
)


def _spell(n: Num, draw) -> str:
    """An exact spelling of n chosen from a few that move digits between the significand and the exponent."""
    m, e = n.mantissa, n.exponent
    sign, digits = ("-" if m < 0 else ""), str(abs(m))
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return f"{sign}{digits}e{e}"
    if choice == 4 and -40 <= e <= 0:  # a plain decimal: no exponent, read by the short path up to 18 digits
        point = len(digits) + e
        whole, fraction = (digits[:point] if point > 0 else "0"), digits[max(point, 0) :].rjust(-e, "0")
        return f"{sign}{whole}.{fraction}{'0' * draw(st.integers(0, 2))}" if e else f"{sign}{digits}"
    if choice == 1:
        return f"{sign}{digits}00E{e - 2}"
    if choice == 2:
        return f"{sign}{digits[0]}.{digits[1:] or '0'}e{e + len(digits) - 1}"
    return f"{sign}{digits}.000e+{e}".replace("+-", "-")


@st.composite
def boundary_case(draw) -> tuple[str, str]:
    args = draw(st.dictionaries(KEYS, st.one_of(BOUNDARY_NUMS, st.integers(0, 3)), min_size=1, max_size=5))
    gold = plain([{"name": "f", "arguments": {k: v for k, v in args.items()}}])
    spelled = {k: (_spell(v, draw) if isinstance(v, Num) else str(v)) for k, v in args.items()}
    keys = draw(st.permutations(list(spelled)))
    if draw(st.booleans()):  # a near miss: one key or one number changed
        k = keys[0]
        if draw(st.booleans()):
            keys[0] = k + draw(st.sampled_from(["a", "k", "\0"]))
            spelled[keys[0]] = spelled.pop(k)
        else:
            spelled[k] = spelled[k].replace("1", "2", 1) if "1" in spelled[k] else spelled[k] + "1"
    body = ", ".join(f"{render(k, draw)}: {spelled[k]}" for k in keys)  # render escapes some key characters
    return f'{{"name": "f", "arguments": {{{body}}}}}', gold


@settings(max_examples=examples(400), **SETTINGS)
@given(boundary_case())
def test_long_keys_and_boundary_numbers_agree_with_reference(case):
    output, gold = case
    expected = function_calls_verdict(output, gold)
    assert explain_function_calls(output, gold).code == expected, case
    assert explain_function_calls(output, prepare_gold(gold)).code == expected, case


def test_boundary_numbers_compare_by_value():
    def same(a: str, b: str) -> bool:
        return check_function_calls(
            f'{{"name": "f", "arguments": {{"x": {a}}}}}', f'{{"name": "f", "arguments": {{"x": {b}}}}}'
        )

    assert same("123456789012345678", "1234567890123456780e-1")  # 18 significant digits both ways
    assert same("1234567890123456789", "12345678901234567890e-1")  # 19: the long form both ways
    # Plain decimals of up to 18 digits take a short path; longer ones and exponents the general one.
    assert same("1234567890123.45678", "123456789012345678e-5") and same("10.50", "1.05e1")
    assert same("123456789012.3456789", "1234567890123456789e-7") and same("-0.000", "0")
    assert not same("0.12345678901234567", "0.12345678901234568") and not same("0.5", "-0.5")
    assert not same("1234567890123456789", "1234567890123456788")
    assert same("1e2147483647", "10e2147483646") and same("1e2147483648", "10e2147483647")
    assert same("1e-2147483648", "0.1e-2147483647") and same("1e-2147483649", "0.1e-2147483648")
    assert not same("1e2147483647", "1e2147483648") and not same("1e-2147483648", "1e-2147483649")
    assert same("-0", "0e-99999999999999999999") and not same("0", "1e-2147483649")


def test_keys_compare_beyond_their_first_16_bytes():
    def same(a: str, b: str) -> bool:
        return check_function_calls(
            f'{{"name": "f", "arguments": {{{a}: 1}}}}', f'[{{"name": "f", "arguments": {{{b}: 1}}}}]'
        )

    long_key = '"' + "k" * 16 + "tail" + '"'
    assert same(long_key, long_key) and same(long_key, long_key.replace("tail", "t\\u0061il"))
    assert not same(long_key, long_key.replace("tail", "tai1"))
    assert same('"na\\u006de"', '"name"') and not same('"name"', '"name\\u0000"')
    assert same('"a\\"b"', '"a\\u0022b"') and not same('"ab"', '"a\\"b"')
    # Equal keys reached through escapes are duplicates.
    assert (
        explain_function_calls('{"name": "f", "arguments": {"k": 1, "\\u006b": 1}}', GOLD).code
        == "DUPLICATE_KEY"
    )


def test_prepare_gold_accepts_every_gold_form_and_names_a_bad_one():
    parsed = json.loads(GOLD)
    output = '[{"name": "now", "arguments": {}}, {"name": "get_weather", "arguments": {"days": 3.0, "city": "Paris"}}]'
    for gold in (GOLD, GOLD.encode(), parsed):
        prepared = prepare_gold(gold)
        assert isinstance(prepared, FunctionCallGold)
        assert check_function_calls(output, prepared) and not check_function_calls("[]", prepared)
        assert prepare_gold(prepared) is prepared
    assert explain_function_calls(b"[\xff]", prepare_gold(GOLD)).code == "INVALID_TEXT"
    for bad in (
        '[{"name": "f"}]',
        "[1,]",
        '[{"name": "f", "arguments": {}, "name": "g"}]',
        b"\xff",
        "\ud800",
    ):
        with pytest.raises(ValueError, match=r"^gold is not a JSON list"):
            prepare_gold(bad)
    with pytest.raises(ValueError, match=r"^gold must be JSON text or a list"):
        prepare_gold([{"name": "f", "arguments": {"x": float("nan")}}])
    with pytest.raises(TypeError, match=r"gold must be str or bytes"):
        FunctionCallGold(None)


def test_one_prepared_gold_shared_by_threads():
    prepared = prepare_gold(GOLD)
    outputs = [
        '[{"name": "now", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]',
        "[]",
        '{"name": "now", "arguments": {}}',
    ] * 2000
    expected = [check_function_calls(o, GOLD) for o in outputs]
    assert any(expected) and not all(expected)
    results = results_of_concurrent_calls(
        lambda i: [v.passed for v in explain_function_calls_batch(outputs, [prepared] * len(outputs), num_threads=2)]
        == expected
    )
    assert results == {i: True for i in range(4)}
