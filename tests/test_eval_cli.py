"""`r3fast eval` and `r3fast failures` end to end on tiny-random, and their errors on bad input."""

from __future__ import annotations

import json

import pytest

from r3fast.cli import main
from r3fast.evaluate import format_report

SMALL = ["--engine", "hf", "--model", "tiny-random", "--n", "3", "--max-new-tokens", "4", "--batch-size", "4", "--no-progress"]


def test_eval_writes_valid_json(tiny_model, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "countdown-easy", *SMALL, "--reflection-max-new-tokens", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    counts = report["counts"]
    assert report["task"] == "countdown-easy" and report["model"] == "tiny-random" and report["n"] == 3
    assert counts["instances"] == 3
    assert counts["first_try_passed"] + counts["first_try_failed"] == 3
    assert counts["second_try_passed"] == counts["first_try_passed"] + counts["retry_passed"]
    assert report["first_try_accuracy"] == counts["first_try_passed"] / 3
    assert report["second_try_accuracy"] == counts["second_try_passed"] / 3
    assert 0 <= report["first_try_accuracy"] <= report["second_try_accuracy"] <= 1
    assert sum(report["first_try_verdicts"].values()) == 3
    assert sum(report["retry_verdicts"].values()) == counts["first_try_failed"]  # one greedy reflection each
    # the control: one retry without reflection per failure, paired with the reflected one
    assert sum(report["retry_without_reflection_verdicts"].values()) == counts["first_try_failed"]
    assert counts["second_try_without_reflection_passed"] == counts["first_try_passed"] + counts["retry_without_reflection_passed"]
    assert report["second_try_without_reflection_accuracy"] == counts["second_try_without_reflection_passed"] / 3
    assert counts["retry_passed"] == counts["rescued_by_both"] + counts["rescued_with_reflection_only"]
    assert counts["retry_without_reflection_passed"] == counts["rescued_by_both"] + counts["rescued_without_reflection_only"]
    lift = report["second_try_accuracy"] - report["second_try_without_reflection_accuracy"]
    assert report["reflection_lift"] == pytest.approx(lift)
    low, high = report["reflection_lift_ci95"]
    assert -1 <= low <= report["reflection_lift"] <= high <= 1
    gen = report["generation"]
    assert gen["attempt"]["generated_tokens"] <= 3 * 4 and gen["reflection"]["generated_tokens"] <= 3 * counts["first_try_failed"]
    assert gen["total"]["generated_tokens"] == sum(gen[s]["generated_tokens"]
                                                   for s in ("attempt", "reflection", "retry", "control"))
    assert gen["control"]["generated_tokens"] <= 4 * counts["first_try_failed"]
    assert report["tokens_per_second"] > 0
    printed = capsys.readouterr().out
    assert "first try" in printed and "second try" in printed and str(out) in printed
    assert "second try, no reflection" in printed and "reflection lift" in printed
    assert format_report(report).splitlines()[0].split() == ["task", "countdown-easy"]


def test_eval_takes_the_reflection_protocol(tiny_model, tmp_path):
    out = tmp_path / "eval.json"
    request = "Wrong: {feedback}. What went wrong?"
    assert main(["eval", "--task", "countdown-easy", *SMALL, "--reflection-max-new-tokens", "3", "--retry-layout", "fresh",
                 "--reflection-request", request, "--out", str(out)]) == 0
    prompts = json.loads(out.read_text())["reflection_prompts"]
    assert prompts["reflection_request"] == request and prompts["retry_layout"] == "fresh"
    assert "{reflection}" in prompts["retry_request"] and "{task}" in prompts["retry_request"]
    assert "{reflection}" not in prompts["retry_without_reflection_request"]


def test_eval_takes_graded_retries_and_answer_tag_bans(tiny_model, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "countdown-easy", *SMALL, "--reflection-max-new-tokens", "3", "--retry-layout", "fresh",
                 "--no-quote-attempt", "--reflection-request", "diagnose", "--reflection-answer-tags", "ban",
                 "--retries-per-reflection", "2", "--retry-temperature", "0.7", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    config, counts = report["reflect_config"], report["counts"]
    assert config["retries_per_reflection"] == 2 and config["retry_temperature"] == 0.7
    assert list(config["reflection_bad_words"]) == ["<answer>", "</answer>"]
    assert "{attempt}" not in report["reflection_prompts"]["retry_request"]
    assert sum(report["retry_verdicts"].values()) == 2 * counts["first_try_failed"]
    assert sum(report["retry_without_reflection_verdicts"].values()) == 2 * counts["first_try_failed"]


@pytest.mark.parametrize("flags, message", [
    (["--retries-per-reflection", "0"], "retries_per_reflection must be >= 1"),
    (["--retry-temperature", "-0.5"], "retry_temperature must be >= 0"),
])
def test_eval_refuses_bad_values_before_loading_a_model(tmp_path, capsys, monkeypatch, flags, message):
    import r3fast.rollout

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the values were checked")

    monkeypatch.setattr(r3fast.rollout, "make_engine", no_model)
    assert main(["eval", "--task", "countdown-easy", *SMALL, *flags, "--out", str(tmp_path / "e.json")]) == 2
    assert message in capsys.readouterr().err


def test_eval_function_calling_tasks(tiny_model, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["eval", "--task", "bfcl", "--categories", "simple_python", *SMALL, "--reflection-max-new-tokens", "2",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "bfcl" and report["n"] == 3
    assert sum(report["first_try_verdicts"].values()) == 3


def test_failures_writes_a_loadable_dataset(tiny_model, tmp_path, capsys):
    from r3fast.failures import read_failures
    from r3fast.tasks import load_instances

    out = tmp_path / "failures.jsonl"
    assert main(["failures", "--task", "countdown-easy", *SMALL, "--seed", "5", "--out", str(out)]) == 0
    failures = read_failures(out, task="countdown-easy")
    expected = {i.id: i.data for i in load_instances("countdown-easy", n=3, seed=5)}
    assert len(failures) == 3  # a random model never answers in tags
    for f in failures:
        assert expected[f.instance.id] == f.instance.data and f.verdict != "PASS"
    assert "3/3 instances failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--task", "no-such-task"], "unknown task 'no-such-task'"),
        (["eval", "--task", "countdown-easy", "--model", "no-such-model"], r"'no-such-model'.*tiny-random"),
        (["eval", "--task", "countdown", "--source", "/nonexistent/data.jsonl"], "/nonexistent/data.jsonl"),
        (["eval", "--task", "countdown", "--categories", "simple_python"], "--categories applies to --task bfcl"),
        (["failures", "--task", "nope"], "unknown task 'nope'"),
        (["eval", "--task", "countdown-easy", "--retry-request", "again"], r"\{task\} placeholder"),
        (["eval", "--task", "countdown-easy", "--tool-call-format", "json"], "--tool-call-format applies to function-calling"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    rc = main([*args, "--n", "2", "--no-progress", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("r3fast") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "x").exists()


def test_malformed_source_rows_name_file_and_line(tmp_path, capsys):
    data = tmp_path / "cd.jsonl"
    data.write_text('{"nums": [1, 2], "target": 3}\n{"nums": "oops"}\n')
    rc = main(["eval", "--task", "countdown", "--source", str(data), "--n", "2", "--no-progress", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "cd.jsonl" in err and ":2" in err, err


def test_prompt_flags_reach_the_task_prompts():
    from r3fast.cli import build_parser
    from r3fast.commands.eval import load_task_and_instances
    from r3fast.prompts import FUNCTION_CALLING_DEMOS

    def prompts(*flags):
        args = build_parser().parse_args(["eval", "--task", "bfcl", "--n", "12", "--out", "x", *flags])
        task, instances = load_task_and_instances(args)
        return [task.prompt(i).messages for i in instances]

    first_demo_query = FUNCTION_CALLING_DEMOS[0].query
    rotated = {m[0]["content"].endswith(first_demo_query) for m in prompts()}
    assert rotated == {True, False}  # the default rotates over the demo pool
    fixed = {m[0]["content"].endswith(first_demo_query) for m in prompts("--fixed-demos")}
    assert fixed == {True}
    assert all(len(m) == 1 for m in prompts("--num-demos", "0"))
    assert all("<tool_call>" in m[-1]["content"] for m in prompts("--num-demos", "0"))  # the default format
    listed = prompts("--tool-call-format", "json", "--num-demos", "0")
    assert not any("<tool_call>" in m[-1]["content"] for m in listed)
    assert all("JSON list of calls" in m[-1]["content"] for m in listed)
