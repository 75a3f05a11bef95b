"""The function-calling generator: a catalogue of varied tools, gold calls that the verifier passes
and that follow from the request, near-misses that fail, and names/requests disjoint from BFCL."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter

from markers import needs_bfcl

from r3fast.prompts import render_calls
from r3fast.tasks import get_task, load_instances
from r3fast.tasks.fncall_generator import ARGUMENT_KINDS, generate_function_calling, tool_catalogue
from r3fast.tasks.function_calling import to_xlam_row
from r3fast.tasks.heldout import check_disjoint
from r3fast.verify import check_function_calls

INSTANCES = generate_function_calling(300, seed=0)


def schema_types(schema: dict) -> set[str]:
    """Every type in a schema, enums as 'enum', nested properties and items included."""
    out = {"enum" if "enum" in schema else schema["type"]}
    for sub in schema.get("properties", {}).values():
        out |= schema_types(sub)
    if "items" in schema:
        out |= {"array of " + t for t in schema_types(schema["items"])}
    return out


def test_catalogue_has_hundreds_of_tools_of_every_argument_type():
    tools = [t.schema for t in tool_catalogue()]
    assert len(tools) >= 200
    assert len({t["name"] for t in tools}) == len(tools)
    types = set().union(*(schema_types(p) for t in tools for p in t["parameters"]["properties"].values()))
    assert {"string", "integer", "number", "boolean", "enum", "object", "array",
            "array of string", "array of integer", "array of number", "array of enum"} <= types
    assert any(len(t["parameters"]["required"]) < len(t["parameters"]["properties"]) for t in tools)  # optional ones
    assert {"_" in t["name"] and "." not in t["name"] for t in tools} == {True, False}  # naming styles vary
    assert any("." in t["name"] for t in tools)


def test_golds_pass_the_verifier_in_every_written_form():
    task = get_task("fncall-synthetic")
    for inst in INSTANCES:
        gold = inst.data["answers"]
        assert check_function_calls(to_xlam_row(inst)["answers"], gold)
        for fmt in ("json", "tool_call"):
            assert task.verify(inst, render_calls(gold, fmt))
        assert task.explain(inst, render_calls(gold, "tool_call")).code == "PASS"


def stated(value) -> list[str]:
    """The texts a request must contain for `value` (booleans are stated by their phrases)."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in stated(v)]
    if isinstance(value, list):
        return [s for v in value for s in stated(v)]
    return [] if isinstance(value, bool) else [str(value)]


def test_golds_follow_from_the_request_and_the_schemas():
    for inst in INSTANCES:
        query = inst.data["query"]
        offered = {t["name"]: t["parameters"] for t in inst.data["tools"]}
        assert len(set(json.dumps(c, sort_keys=True) for c in inst.data["answers"])) == len(inst.data["answers"])
        for call in inst.data["answers"]:
            schema = offered[call["name"]]
            assert set(schema["required"]) <= set(call["arguments"]) <= set(schema["properties"])
            for key, value in call["arguments"].items():
                kind = ARGUMENT_KINDS[key]
                if isinstance(value, bool):
                    assert kind.phrases[0 if value else 1] in query, (key, value, query)
                for text in stated(value):
                    assert text in query, (key, value, query)
                if "enum" in kind.schema:
                    assert value in kind.schema["enum"]


def test_generator_is_seeded_and_varied():
    a = generate_function_calling(200, seed=3)
    assert a == generate_function_calling(200, seed=3)
    assert a != generate_function_calling(200, seed=4)
    assert len({i.id for i in a}) == 200
    counts = Counter(len(i.data["answers"]) for i in a)
    assert set(counts) == {1, 2, 3} and counts[1] > counts[2] > counts[3]
    assert any(len({c["name"] for c in i.data["answers"]}) == 1 < len(i.data["answers"]) for i in a)  # same tool twice
    assert any(len({c["name"] for c in i.data["answers"]}) > 1 for i in a)  # different tools
    assert any(len(i.data["tools"]) > len({c["name"] for c in i.data["answers"]}) for i in a)  # distractors
    assert len({c["name"] for i in a for c in i.data["answers"]}) > 100
    assert len({i.data["query"].split()[0] for i in a}) > 5  # openings vary
    assert load_instances("fncall-synthetic", n=7, seed=1) == generate_function_calling(7, seed=1)


def near_misses(gold: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    """The gold with one thing wrong: an argument of the wrong type, a missing argument, an extra call."""
    wrong_type = copy.deepcopy(gold)
    key = rng.choice(sorted(wrong_type[0]["arguments"]))
    value = wrong_type[0]["arguments"][key]
    wrong_type[0]["arguments"][key] = 7 if isinstance(value, str) else json.dumps(value)
    missing = copy.deepcopy(gold)
    del missing[0]["arguments"][key]
    extra = copy.deepcopy(gold) + [copy.deepcopy(gold[0])]
    return {"wrong type": wrong_type, "missing argument": missing, "extra call": extra}


def test_near_misses_fail_and_the_feedback_names_the_fault():
    task = get_task("fncall-synthetic")
    rng = random.Random(0)
    for inst in INSTANCES[:120]:
        for fault, calls in near_misses(inst.data["answers"], rng).items():
            text = render_calls(calls, "tool_call")
            assert not task.verify(inst, text), fault
            verdict = task.explain(inst, text)
            assert verdict.code == "WRONG_CALLS"
            expected = {"wrong type": "has the wrong type", "missing argument": "missing",
                        "extra call": f"expected {len(calls) - 1} call"}[fault]
            assert expected in verdict.reason, (fault, verdict.reason)


@needs_bfcl
def test_tool_names_and_requests_are_disjoint_from_every_bfcl_question():
    from r3fast.tasks.bfcl import bfcl_held_out

    check_disjoint(generate_function_calling(3000, seed=11), bfcl_held_out())
    catalogue_names = {t.schema["name"] for t in tool_catalogue()}
    assert not catalogue_names & bfcl_held_out().function_names
