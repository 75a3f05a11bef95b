"""Training data kept apart from the held-out evaluation: the check fails on an overlap by function
name or by query, names what overlaps, and covers every BFCL question (converted or not)."""

from __future__ import annotations

import pytest
from markers import needs_bfcl

from r3fast.tasks.bfcl import BFCL_CATEGORIES, bfcl_held_out, import_bfcl
from r3fast.tasks.fncall_generator import generate_function_calling
from r3fast.tasks.function_calling import function_calling_instance
from r3fast.tasks.heldout import HeldOut, check_disjoint, held_out_from


def instance(query: str, *names: str):
    tools = [{"name": n, "parameters": {"type": "object", "properties": {}}} for n in names]
    return function_calling_instance(query, tools, [{"name": names[0], "arguments": {}}])


HELD_OUT = [instance("What is the weather in Oslo?", "get_weather", "get_time"),
            instance("Add 2 and 3.", "add_numbers")]


def test_disjoint_data_passes():
    check_disjoint([instance("Book a table.", "book_table")], held_out_from(HELD_OUT))
    check_disjoint([], held_out_from(HELD_OUT))


def test_a_shared_function_name_fails_naming_it():
    # a tool the held-out set only offers (not its gold call) counts too
    training = [instance("Something else entirely.", "book_table", "get_time")]
    with pytest.raises(ValueError, match=r"overlaps the held-out evaluation in 1 function name\(s\): 'get_time'"):
        check_disjoint(training, held_out_from(HELD_OUT), "the training data")


def test_a_shared_query_fails_naming_it_whatever_the_case_and_spacing():
    training = [instance("what is the  weather\nin OSLO?", "weather_lookup")]
    with pytest.raises(ValueError, match=r"1 query\(ies\): 'what is the weather in oslo\?'"):
        check_disjoint(training, held_out_from(HELD_OUT))


def test_both_overlaps_are_reported_and_long_lists_are_cut():
    training = [instance("Add 2 and 3.", "get_weather")]
    with pytest.raises(ValueError, match=r"function name\(s\): 'get_weather'; and 1 query"):
        check_disjoint(training, held_out_from(HELD_OUT))
    many = HeldOut(function_names=frozenset(f"f{i:02d}" for i in range(30)), queries=frozenset())
    with pytest.raises(ValueError, match=r"30 function name\(s\): 'f00', .*'f09' and 20 more"):
        check_disjoint([instance("q", *[f"f{i:02d}" for i in range(30)])], many)


@needs_bfcl
def test_bfcl_held_out_covers_every_question_converted_or_not():
    held_out = bfcl_held_out()
    converted = import_bfcl(BFCL_CATEGORIES)
    covered = held_out_from(converted.instances)
    assert covered.function_names <= held_out.function_names
    assert covered.queries <= held_out.queries
    assert len(held_out.queries) > len(covered.queries)  # the skipped questions are held out too
    # an overlap with a question the importer skips is still caught
    skipped_query = next(iter(held_out.queries - covered.queries))
    with pytest.raises(ValueError, match="1 query"):
        check_disjoint([instance(skipped_query, "fresh_tool_name")], held_out)
    check_disjoint(generate_function_calling(500, seed=2), held_out)
