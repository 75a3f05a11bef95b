"""BFCL importer: converts the data packaged in bfcl-eval to one-gold xLAM instances, by the rule
in r3fast/tasks/bfcl.py; checked against the raw possible answers and through the verifier."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest
from markers import needs_bfcl

from r3fast.tasks import get_task, load_instances
from r3fast.tasks.bfcl import (
    BFCL_CATEGORIES,
    SKIP_MALFORMED,
    SKIP_NOT_ONE_USER_TURN,
    SKIP_OPTIONAL,
    SKIP_SEVERAL,
    bfcl_data_dir,
    bfcl_files,
    import_bfcl,
)
from r3fast.tasks.files import MissingDependencyError
from r3fast.verify import check_function_calls


def raw_answers(category: str) -> dict[str, list]:
    _, answers = bfcl_files(category, bfcl_data_dir())
    return {row["id"]: row["ground_truth"] for row in map(json.loads, answers.read_text().splitlines()) if row}


def acceptable(value, choices) -> bool:
    """Whether `value` is one of BFCL's acceptable `choices`, dicts compared key by key."""
    for choice in choices:
        if isinstance(choice, dict) and isinstance(value, dict):
            if all(acceptable(value[k], v) if k in value else "" in v for k, v in choice.items()) \
                    and set(value) <= set(choice):
                return True
        elif choice == value and type(choice) is type(value) or (
                isinstance(choice, (int, float)) and not isinstance(choice, bool)
                and isinstance(value, (int, float)) and not isinstance(value, bool) and choice == value):
            return True
    return False


@needs_bfcl
@pytest.mark.parametrize("category", BFCL_CATEGORIES)
def test_packaged_data_converts_to_golds_that_bfcl_accepts_and_the_verifier_passes(category):
    result = import_bfcl(category)
    assert result.total > 0 and len(result.instances) > 0
    assert result.total - len(result.instances) == sum(result.skipped.values())
    truth = raw_answers(category)
    for inst in result.instances:
        gold = inst.data["answers"]
        assert inst.data["category"] == category
        # The gold fed back as the model's output passes, in both answer formats.
        assert check_function_calls(json.dumps(gold), gold)
        assert get_task("bfcl").verify(inst, "\n".join(f"<tool_call>{json.dumps(c)}</tool_call>" for c in gold))
        # Independent oracle: every gold value is among BFCL's acceptable values, and every
        # argument left out is one BFCL lets be left out.
        expected = truth[inst.data["source_id"]]
        for call, entry in zip(gold, expected, strict=True):
            ((name, choices),) = entry.items()
            assert call["name"] == name
            for arg, options in choices.items():
                if arg in call["arguments"]:
                    assert acceptable(call["arguments"][arg], options), (inst.data["source_id"], arg)
                else:
                    assert set(map(json.dumps, options)) == {'""'}, (inst.data["source_id"], arg)
        tool_names = {t["name"] for t in inst.data["tools"]}
        assert {c["name"] for c in gold} <= tool_names


@needs_bfcl
def test_simple_python_conversion_stats():
    result = import_bfcl("simple_python")
    assert result.total == 400
    # The module doc quotes this count for bfcl-eval 2026.3.23.
    assert len(result.instances) == 137 or importlib.metadata.version("bfcl-eval") != "2026.3.23"
    assert set(result.skipped) <= {SKIP_OPTIONAL, SKIP_SEVERAL, SKIP_NOT_ONE_USER_TURN, SKIP_MALFORMED}
    first = next(i for i in result.instances if i.data["source_id"] == "simple_python_1")
    assert first.data["query"] == "Calculate the factorial of 5 using math functions."
    assert first.data["answers"] == [{"name": "math.factorial", "arguments": {"number": 5}}]
    assert first.data["tools"][0]["parameters"]["type"] == "object"  # BFCL writes "dict"


@needs_bfcl
def test_registry_samples_bfcl():
    sample = load_instances("bfcl", n=20, seed=0, categories=["simple_python", "multiple"])
    assert len(sample) == 20 and sample == load_instances("bfcl", n=20, seed=0, categories=["simple_python", "multiple"])
    assert {i.data["category"] for i in load_instances("bfcl", categories="parallel")} == {"parallel"}


def test_bfcl_is_located_without_being_imported():
    import sys

    bfcl_data_dir()
    import_bfcl("live_parallel")
    assert "bfcl_eval" not in sys.modules  # importing it would pull in its evaluation stack


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bfcl_eval" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps bfcl-eval"):
        import_bfcl("simple_python")


# --- the conversion rule on hand-made files ---------------------------------------------------


def write_bfcl(root: Path, category: str, rows: list[tuple[dict, dict]]) -> Path:
    (root / "possible_answer").mkdir(parents=True, exist_ok=True)
    name = f"BFCL_v4_{category}.json"
    (root / name).write_text("\n".join(json.dumps(q) for q, _ in rows) + "\n")
    (root / "possible_answer" / name).write_text("\n".join(json.dumps(a) for _, a in rows) + "\n")
    return root


FUNC = {"name": "f", "description": "d", "parameters": {"type": "dict", "properties": {
    "a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "dict", "properties": {}}}, "required": ["a"]}}


def row(i, ground_truth, question=None):
    q = {"id": f"simple_python_{i}", "question": question or [[{"role": "user", "content": f"q{i}"}]], "function": [FUNC]}
    return q, {"id": f"simple_python_{i}", "ground_truth": ground_truth}


def test_conversion_rule(tmp_path):
    rows = [
        row(0, [{"f": {"a": [5]}}]),                                   # one value
        row(1, [{"f": {"a": [5, 5.0]}}]),                              # equal as JSON values
        row(2, [{"f": {"a": [1], "b": [""]}}]),                        # only "": left out
        row(3, [{"f": {"a": [1], "b": ["x", ""]}}]),                   # optional: skipped
        row(4, [{"f": {"a": [1], "b": ["x", "X"]}}]),                  # several: skipped
        row(5, [{"f": {"a": [1], "c": [{"k": ["v"], "o": [""]}]}}]),   # dict: recursive
        row(6, [{"f": {"a": [1], "c": [{"k": ["v", "w"]}]}}]),         # dict with several: skipped
        row(7, [{"f": {"a": [1]}}, {"f": {"a": [2]}}]),                # parallel calls
        row(8, [{"f": {"a": [True, 1]}}]),                             # true != 1: several
        row(9, [{"f": {"a": [1]}}], [[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]]),
        row(10, [{"f": {"a": [1], "b": []}}]),                         # nothing acceptable: malformed
    ]
    result = import_bfcl("simple_python", data_dir=write_bfcl(tmp_path, "simple_python", rows))
    got = {i.data["source_id"]: i.data["answers"] for i in result.instances}
    assert got == {
        "simple_python_0": [{"name": "f", "arguments": {"a": 5}}],
        "simple_python_1": [{"name": "f", "arguments": {"a": 5}}],
        "simple_python_2": [{"name": "f", "arguments": {"a": 1}}],
        "simple_python_5": [{"name": "f", "arguments": {"a": 1, "c": {"k": "v"}}}],
        "simple_python_7": [{"name": "f", "arguments": {"a": 1}}, {"name": "f", "arguments": {"a": 2}}],
    }
    assert result.skipped == {SKIP_OPTIONAL: 1, SKIP_SEVERAL: 3, SKIP_NOT_ONE_USER_TURN: 1, SKIP_MALFORMED: 1}
    assert result.total == 11 and result.converted_fraction == 5 / 11


def test_malformed_files_name_file_and_line(tmp_path):
    root = write_bfcl(tmp_path, "simple_python", [row(0, [{"f": {"a": [5]}}]), row(1, [{"f": {"a": [1]}}])])
    questions = root / "BFCL_v4_simple_python.json"
    questions.write_text(questions.read_text().replace('"question"', '"questions"', 1))  # break line 1
    with pytest.raises(ValueError, match=rf"{questions}:1: a BFCL question needs"):
        import_bfcl("simple_python", data_dir=root)
    with pytest.raises(ValueError, match="unknown BFCL category 'simple_java'"):
        import_bfcl("simple_java", data_dir=root)
    with pytest.raises(FileNotFoundError, match="BFCL_v<N>_multiple.json"):
        import_bfcl("multiple", data_dir=root)
