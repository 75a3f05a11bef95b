"""Function-calling tasks: the xLAM loader (files, datasets, malformed rows), tool normalisation,
prompts and the task registry (the generator has its own tests: test_tasks_fncall_generator.py)."""

from __future__ import annotations

import json
import sys

import pytest

from r3fast.prompts import chat_template_inputs
from r3fast.tasks import get_task, load_instances
from r3fast.tasks.files import MissingDependencyError
from r3fast.tasks.fncall_generator import generate_function_calling
from r3fast.tasks.function_calling import (
    function_calling_instance,
    load_function_calling,
    normalize_tool,
    to_xlam_row,
)

# One row as xLAM-function-calling-60k writes it: flat parameter maps with Python type names.
XLAM_ROW = {
    "id": 17,
    "query": "Where can I find live giveaways for beta access and games?",
    "tools": json.dumps([{
        "name": "live_giveaways_by_type",
        "description": "Retrieve live giveaways from the GamerPower API based on the specified type.",
        "parameters": {
            "type": {"description": "The type of giveaways to retrieve (e.g., game, loot, beta).",
                     "type": "str", "default": "game"},
            "limit": {"description": "How many to return.", "type": "int, optional", "default": 10},
            "platforms": {"description": "Platforms.", "type": "List[str], optional"},
        },
    }]),
    "answers": json.dumps([
        {"name": "live_giveaways_by_type", "arguments": {"type": "beta"}},
        {"name": "live_giveaways_by_type", "arguments": {"type": "game"}},
    ]),
}


def test_xlam_flat_parameters_become_json_schema():
    (inst,) = load_function_calling([XLAM_ROW])
    (tool,) = inst.data["tools"]
    params = tool["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["type"]  # ", optional" marks the others
    assert params["properties"]["type"] == {
        "type": "string", "description": "The type of giveaways to retrieve (e.g., game, loot, beta).", "default": "game"}
    assert params["properties"]["limit"]["type"] == "integer"
    assert params["properties"]["platforms"]["type"] == "array"
    assert inst.data["answers"] == json.loads(XLAM_ROW["answers"])
    assert inst.data["source_id"] == 17


def test_json_schema_tools_keep_their_shape_and_python_type_names_are_renamed():
    tool = {"name": "f", "description": "d", "parameters": {
        "type": "dict", "properties": {"x": {"type": "float"}, "p": {"type": "dict", "properties": {"t": {"type": "tuple", "items": {"type": "integer"}}}}},
        "required": ["x"]}}
    out = normalize_tool(tool, "here")
    assert out["parameters"]["type"] == "object"
    assert out["parameters"]["properties"]["x"] == {"type": "number"}
    assert out["parameters"]["properties"]["p"]["properties"]["t"] == {"type": "array", "items": {"type": "integer"}}
    assert out["parameters"]["required"] == ["x"]
    # The OpenAI wrapper is unwrapped.
    assert normalize_tool({"type": "function", "function": tool}, "here") == out


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet", "dataset"])
def test_every_source_kind_loads_the_same_instances(tmp_path, fmt):
    rows = [to_xlam_row(i) for i in generate_function_calling(12, seed=4)] + [XLAM_ROW]
    if fmt == "json":
        source = tmp_path / "fc.json"
        source.write_text(json.dumps(rows, indent=4))
    elif fmt == "jsonl":
        source = tmp_path / "fc.jsonl"
        source.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        source = tmp_path / "fc.parquet"
        pq.write_table(pa.Table.from_pylist([{**r, "id": str(r["id"])} for r in rows]), source)
    else:
        class Dataset:  # what a `datasets.Dataset` looks like to the loader: an iterable of dict rows
            def __iter__(self):
                return iter(rows)

        source = Dataset()
    loaded = load_function_calling(source)
    expected = generate_function_calling(12, seed=4)
    assert [i.id for i in loaded[:12]] == [i.id for i in expected]
    assert [i.data["answers"] for i in loaded[:12]] == [i.data["answers"] for i in expected]
    assert loaded[12].data["query"] == XLAM_ROW["query"]


def bad(**changes):
    row = dict(XLAM_ROW)
    for key, value in changes.items():
        if value is None:
            del row[key]
        else:
            row[key] = value
    return row


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (bad(answers='[{"name": "live_giveaways_by_type", "arguments": {}'), "'answers' is not valid JSON"),
        (bad(tools="not json"), "'tools' is not valid JSON"),
        (bad(query=None), "missing field 'query'"),
        (bad(answers=None), "missing field 'answers'"),
        (bad(query="  "), "non-empty string"),
        (bad(tools="[]"), "'tools' must be a non-empty list"),
        (bad(tools='[{"description": "no name"}]'), "non-empty 'name'"),
        (bad(answers='[{"name": "other_tool", "arguments": {}}]'), "not among the tools"),
        (bad(answers='[{"name": "live_giveaways_by_type", "args": {}}]'), "each answer must be"),
        (bad(answers='{"name": "live_giveaways_by_type", "arguments": {}}'), "non-empty list of calls"),
        ('"just a string"', "expected a JSON object"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "fc.jsonl"
    lines = [json.dumps(XLAM_ROW), json.dumps(XLAM_ROW), row if isinstance(row, str) else json.dumps(row)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message) as info:
        load_function_calling(path)
    assert f"{path}:3:" in str(info.value)


def test_malformed_rows_in_a_json_array_and_a_dataset_are_named_by_row(tmp_path):
    path = tmp_path / "fc.json"
    path.write_text(json.dumps([XLAM_ROW, bad(answers="[")], indent=2))
    with pytest.raises(ValueError, match=rf"{path} row 1: field 'answers'"):
        load_function_calling(path)
    with pytest.raises(ValueError, match=r"list row 0: missing field 'tools'"):
        load_function_calling([bad(tools=None)])
    with pytest.raises(ValueError, match="file path or an iterable of rows"):
        load_function_calling(42)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "fc.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingDependencyError, match="pip install pyarrow"):
        load_function_calling(tmp_path / "fc.parquet")


def test_ids_are_stable_content_hashes():
    inst = function_calling_instance("Add 1 and 2.", [{"name": "add", "parameters": {"a": {"type": "int"}, "b": {"type": "int"}}}],
                                     [{"name": "add", "arguments": {"a": 1, "b": 2}}])
    assert inst.id == "fc-47e76c2414cc2c16"
    same = function_calling_instance("Add 1 and 2.", json.loads(json.dumps(inst.data["tools"])), inst.data["answers"], source_id=9)
    assert same.id == inst.id  # extra fields are not content
    assert function_calling_instance("Add 2 and 1.", inst.data["tools"], inst.data["answers"]).id != inst.id


def test_prompt_carries_tools_both_ways():
    inst = generate_function_calling(1, seed=2)[0]
    prompt = get_task("function_calling").prompt(inst)
    assert prompt.tools == [{"type": "function", "function": t} for t in inst.data["tools"]]
    last = prompt.messages[-1]["content"]
    assert last.startswith(prompt.tools_text) and last.endswith(prompt.task_text)
    for tool in inst.data["tools"]:
        assert json.dumps(tool) in prompt.tools_text
    messages, tools = chat_template_inputs(prompt, takes_tools=True)
    assert tools == prompt.tools and messages[-1]["content"] == prompt.task_text
    assert chat_template_inputs(prompt, takes_tools=False) == (prompt.messages, None)


def test_registry_function_calling_needs_a_source(tmp_path):
    with pytest.raises(ValueError, match="give source"):
        load_instances("function_calling", n=5)
    path = tmp_path / "fc.jsonl"
    path.write_text("\n".join(json.dumps(to_xlam_row(i)) for i in generate_function_calling(20, seed=0)))
    assert len(load_instances("function_calling", source=path, n=5, seed=0)) == 5
    assert load_instances("fncall-synthetic", n=7, seed=1) == generate_function_calling(7, seed=1)
    with pytest.raises(ValueError, match=r"unknown task 'nope'; known tasks: countdown, countdown-easy, function_calling, bfcl, fncall-synthetic"):
        get_task("nope")
    with pytest.raises(ValueError, match="unknown task"):
        load_instances("nope", n=1)
