"""Countdown tasks: the generator's instances are solvable (checked by the verifier), reproducible,
inside their preset's ranges, with stable ids; TinyZero files load and bad rows are named."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r3fast.tasks import get_task, load_instances
from r3fast.tasks.countdown import (
    PRESETS,
    CountdownConfig,
    countdown_instance,
    generate_countdown,
    load_countdown,
)
from r3fast.tasks.files import MissingDependencyError
from r3fast.verify import check_countdown


def answer(expression: str) -> str:
    return f"<answer> {expression} </answer>"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_generated_instances_are_solved_by_their_recorded_solution(preset):
    task = get_task(preset)
    instances = load_instances(preset, n=300, seed=7)
    assert len(instances) == 300
    for inst in instances:
        # The verifier is the oracle: each number exactly once, exact value.
        assert check_countdown(answer(inst.data["solution"]), inst.data["numbers"], inst.data["target"]), inst
        assert task.verify(inst, answer(inst.data["solution"]))
        assert task.explain(inst, answer(inst.data["solution"])).code == "PASS"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_respect_their_ranges_and_use_every_size(preset):
    config = PRESETS[preset]
    instances = generate_countdown(400, seed=1, config=config)
    sizes = {len(i.data["numbers"]) for i in instances}
    assert sizes == set(range(config.min_numbers, config.max_numbers + 1))
    for inst in instances:
        assert all(config.number_min <= x <= config.number_max for x in inst.data["numbers"])
        assert config.target_min <= inst.data["target"] <= config.target_max


def test_preset_values_match_the_documented_levels():
    assert PRESETS["countdown"] == CountdownConfig(3, 4, 1, 99, 1, 100)
    easy = PRESETS["countdown-easy"]
    assert (easy.min_numbers, easy.max_numbers, easy.number_min, easy.number_max) == (2, 3, 1, 10)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    sizes=st.tuples(st.integers(1, 5), st.integers(0, 2)),
    number_max=st.integers(1, 30),
    target_span=st.tuples(st.integers(-50, 50), st.integers(0, 100)),
)
def test_any_config_gives_solvable_instances_in_range(seed, sizes, number_max, target_span):
    config = CountdownConfig(sizes[0], sizes[0] + sizes[1], 0, number_max, target_span[0], target_span[0] + target_span[1])
    try:
        instances = generate_countdown(5, seed, config)
    except ValueError as exc:  # some tiny configs have fewer than 5 distinct solvable tasks
        assert "distinct solvable instances" in str(exc)
        return
    for inst in instances:
        numbers, target = inst.data["numbers"], inst.data["target"]
        assert config.min_numbers <= len(numbers) <= config.max_numbers
        assert config.target_min <= target <= config.target_max
        assert check_countdown(answer(inst.data["solution"]), numbers, target)


def test_seeds_reproduce_and_differ():
    a = generate_countdown(50, seed=3)
    assert a == generate_countdown(50, seed=3)
    assert [i.id for i in a] != [i.id for i in generate_countdown(50, seed=4)]
    # A prefix does not depend on how many are asked for.
    assert generate_countdown(10, seed=3) == a[:10]


def test_ids_are_content_hashes_stable_across_versions_and_sources():
    # Pinned: changing the id scheme would orphan every saved failure dataset and eval file.
    assert countdown_instance([3, 5], 15).id == "cd-8c9bafea26a05ff4"
    inst = countdown_instance([25, 2, 6], 100)
    assert inst.id == "cd-4560a3e6e8204db1"
    assert countdown_instance([25, 2, 6], 100, solution="(6 - 2) * 25").id == inst.id
    assert countdown_instance([2, 25, 6], 100).id != inst.id
    assert countdown_instance([25, 2, 6], 99).id != inst.id
    batch = generate_countdown(500, seed=0, config=PRESETS["countdown-easy"])
    assert len({i.id for i in batch}) == 500


def test_unreachable_config_is_an_error_not_a_hang():
    with pytest.raises(ValueError, match="distinct solvable"):
        generate_countdown(5, seed=0, config=CountdownConfig(2, 2, 1, 2, 1000, 2000))
    with pytest.raises(ValueError, match="min_numbers"):
        CountdownConfig(min_numbers=3, max_numbers=2)
    with pytest.raises(ValueError, match="n must be"):
        generate_countdown(-1)


def test_wrong_answers_fail():
    inst = countdown_instance([3, 5], 15)
    task = get_task("countdown")
    assert not task.verify(inst, answer("3 + 5"))
    assert not task.verify(inst, "3 * 5")  # no tags
    assert task.explain(inst, answer("3 + 5")).code == "WRONG_VALUE"


# --- TinyZero-style files -------------------------------------------------------------------


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_loader_reads_tinyzero_rows_with_generator_ids(tmp_path):
    generated = generate_countdown(20, seed=5)
    rows = [{"nums": i.data["numbers"], "target": i.data["target"], "prompt": "ignored"} for i in generated]
    loaded = load_countdown(write_jsonl(tmp_path / "cd.jsonl", rows))
    assert [i.id for i in loaded] == [i.id for i in generated]
    assert [i.data for i in loaded] == [{"numbers": i.data["numbers"], "target": i.data["target"]} for i in generated]
    # `numbers` is accepted as well as TinyZero's `nums`; blank lines are skipped.
    path = tmp_path / "alt.jsonl"
    path.write_text('{"numbers": [1, 2], "target": 3}\n\n')
    assert load_countdown(path)[0].id == countdown_instance([1, 2], 3).id


def test_json_array_file(tmp_path):
    path = tmp_path / "cd.json"
    path.write_text(json.dumps([{"nums": [4, 9], "target": 13}, {"nums": [3, 5], "target": 15}], indent=2))
    assert [i.data["target"] for i in load_countdown(path)] == [13, 15]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ('{"nums": [1, 2], "target": 3', "not valid JSON"),
        ('{"nums": [1, 2]}', "'target'"),
        ('{"nums": 5, "target": 3}', "non-empty list"),
        ('{"nums": [], "target": 3}', "non-empty list"),
        ('{"nums": [1, true], "target": 3}', "must be an integer"),
        ('{"nums": [1, 2.5], "target": 3}', "must be an integer"),
        ('{"nums": [1, -2], "target": 3}', "must be in"),
        ('{"nums": [1, 2], "target": 3.0}', "target must be an integer"),
        ('{"nums": [1, 2], "target": 99999999999999999999}', "target must be in"),
        ("[1, 2, 3]", "expected a JSON object"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad_row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"nums": [1, 2], "target": 3}, {"nums": [2, 2], "target": 4}, bad_row])
    with pytest.raises(ValueError, match=message) as info:
        load_countdown(path)
    assert f"{path}:3:" in str(info.value)


def test_malformed_json_array_row_is_named_by_index(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"nums": [1, 2], "target": 3}, {"nums": "x", "target": 3}]))
    with pytest.raises(ValueError, match=rf"{path} row 1: nums"):
        load_countdown(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_countdown(tmp_path / "nope.jsonl")
    (tmp_path / "data.csv").write_text("nums,target\n")
    with pytest.raises(ValueError, match="unknown dataset format '.csv'"):
        load_countdown(tmp_path / "data.csv")


def test_parquet_loader(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    generated = generate_countdown(10, seed=9)
    table = pa.table({"nums": [i.data["numbers"] for i in generated], "target": [i.data["target"] for i in generated]})
    pq.write_table(table, tmp_path / "cd.parquet")
    loaded = load_countdown(tmp_path / "cd.parquet")
    assert [i.id for i in loaded] == [i.id for i in generated]

    pq.write_table(pa.table({"nums": [[1, 2], [3]], "target": [3, None]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet row 1: target must be an integer"):
        load_countdown(tmp_path / "bad.parquet")


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    path = tmp_path / "cd.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # find_spec answers None: as if not installed
    with pytest.raises(MissingDependencyError, match=r"cd.parquet.*pip install pyarrow"):
        load_countdown(path)


def test_registry_reads_files_and_samples_reproducibly(tmp_path):
    generated = generate_countdown(30, seed=2)
    path = write_jsonl(tmp_path / "cd.jsonl", [{"nums": i.data["numbers"], "target": i.data["target"]} for i in generated])
    all_ids = [i.id for i in generated]
    sample = load_instances("countdown", source=path, n=10, seed=1)
    assert len(sample) == 10 and sample == load_instances("countdown", source=path, n=10, seed=1)
    assert [all_ids.index(i.id) for i in sample] == sorted(all_ids.index(i.id) for i in sample)  # file order kept
    assert len(load_instances("countdown", source=path)) == 30
    # Preset fields can be overridden for generation.
    wide = load_instances("countdown", n=20, seed=0, min_numbers=5, max_numbers=5)
    assert {len(i.data["numbers"]) for i in wide} == {5}
    with pytest.raises(ValueError, match="give n"):
        load_instances("countdown")
    with pytest.raises(ValueError, match="unknown option"):
        load_instances("countdown", n=3, max_digits=2)
