"""task.judge_batch, the one way r3fast verifies: item by item it gives the pure-Python reference's verdict and
the single explain's, on answers, near misses and garbage; bad batches raise; golds are prepared once."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from verify_strategies import SETTINGS, examples

from r3fast.prompts import render_calls
from r3fast.tasks import TASK_NAMES, Task, get_task, load_instances
from r3fast.tasks import function_calling as function_calling_module
from r3fast.verify import Verdict
from r3fast.verify.feedback import function_call_feedback
from r3fast.verify.reference import countdown_verdict, function_calls_verdict

COUNTDOWN_TASK = get_task("countdown-easy")
COUNTDOWN = load_instances("countdown-easy", n=40, seed=0)
CALLS_TASK = get_task("fncall-synthetic")
CALLS = load_instances("fncall-synthetic", n=30, seed=0)


def countdown_answer(instance) -> str:
    return f"<think>go</think> <answer> {instance.data['solution']} </answer>"


def calls_answer(instance, fmt: str = "tool_call") -> str:
    return render_calls(instance.data["answers"], fmt)


def edited(text: str, alphabet: str) -> st.SearchStrategy[str]:
    """`text` with a few characters inserted, deleted or replaced, or cut short: near misses of an answer."""
    edit = st.tuples(st.integers(0, len(text)), st.sampled_from("idrc"), st.sampled_from(alphabet))

    def apply(edits: list[tuple[int, str, str]]) -> str:
        out = text
        for at, kind, char in edits:
            at = min(at, len(out))
            out = {
                "i": out[:at] + char + out[at:],
                "d": out[:at] + out[at + 1 :],
                "r": out[:at] + char + out[at + 1 :],
                "c": out[:at],
            }[kind]
        return out

    return st.lists(edit, min_size=1, max_size=3).map(apply)


def texts_near(answer: str, alphabet: str, *misses: st.SearchStrategy[str]) -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        st.just(answer),
        *misses,
        edited(answer, alphabet),
        st.just(answer.encode()),
        st.just(answer.encode() + b"\xff"),  # bytes that are not UTF-8
        st.just(answer + "\udc80"),  # a str with no UTF-8 form
        st.just(""),
        st.text(max_size=40),
        st.binary(max_size=40),
    )


def countdown_misses(instance) -> st.SearchStrategy[str]:
    """The solution with an operator swapped (wrong values) or other edits (wrong numbers, parse errors)."""
    solution = instance.data["solution"]
    swapped = [solution.replace(f" {a} ", f" {b} ", 1) for a in "+-*/" for b in "+-*/" if f" {a} " in solution]
    expressions = st.one_of(st.sampled_from(swapped), edited(solution, "0123456789+-*/() "))
    return expressions.map(lambda e: f"<answer>{e}</answer>")


def calls_misses(instance, fmt: str) -> st.SearchStrategy[str]:
    """The gold calls with one fault: a call dropped, an argument changed or added, a repeated or extra key."""
    answers = instance.data["answers"]
    changed = json.loads(json.dumps(answers))
    args = changed[0]["arguments"]
    key = next(iter(args), "added")
    args[key] = [args.get(key)]
    text = render_calls(answers, fmt)
    return st.sampled_from([
        render_calls(answers[:-1], fmt) if len(answers) > 1 else "[]",
        render_calls(changed, fmt),
        text.replace('"name": ', '"name": "x", "name": ', 1),
        text.replace('{"name": ', '{"id": 1, "name": ', 1),
    ])


@st.composite
def countdown_batch(draw):
    instances = draw(st.lists(st.sampled_from(COUNTDOWN), max_size=12))
    alphabet = "0123456789+-*/() <>answer"
    texts = [draw(texts_near(countdown_answer(i), alphabet, countdown_misses(i))) for i in instances]
    return instances, texts


@st.composite
def calls_batch(draw):
    instances = draw(st.lists(st.sampled_from(CALLS), max_size=8))
    fmt = draw(st.sampled_from(["tool_call", "json"]))
    alphabet = '{}[]":,0123456789 ae<>/'
    texts = [draw(texts_near(calls_answer(i, fmt), alphabet, calls_misses(i, fmt))) for i in instances]
    return instances, texts


@settings(max_examples=examples(150), **SETTINGS)
@given(countdown_batch())
def test_countdown_judge_batch_is_the_reference_and_the_single_explain(batch):
    instances, texts = batch
    verdicts = COUNTDOWN_TASK.judge_batch(instances, texts)
    assert len(verdicts) == len(texts)
    for instance, text, verdict in zip(instances, texts, verdicts, strict=True):
        assert isinstance(verdict, Verdict) and verdict.reason
        assert verdict.code == countdown_verdict(text, instance.data["numbers"], instance.data["target"]), text
        assert COUNTDOWN_TASK.explain(instance, text) == verdict
        assert COUNTDOWN_TASK.verify(instance, text) == verdict.passed


@settings(max_examples=examples(100), **SETTINGS)
@given(calls_batch())
def test_function_calls_judge_batch_is_the_reference_and_the_single_explain(batch):
    instances, texts = batch
    verdicts = CALLS_TASK.judge_batch(instances, texts)
    fmt = CALLS_TASK.prompt_config.tool_call_format
    for instance, text, verdict in zip(instances, texts, verdicts, strict=True):
        assert verdict.code == function_calls_verdict(text, instance.data["answers"]), text
        assert CALLS_TASK.explain(instance, text) == verdict
        assert CALLS_TASK.verify(instance, text) == verdict.passed
        if not verdict.passed:  # a failure's reason is the feedback a reflection shows the model
            answers, tools = instance.data["answers"], instance.data["tools"]
            assert verdict.reason == function_call_feedback(text, verdict.code, answers, tools, fmt)


def test_answers_pass_and_a_batch_mixes_verdicts():
    texts = [countdown_answer(i) for i in COUNTDOWN[:3]] + ["", "<answer>1 +</answer>"]
    codes = [v.code for v in COUNTDOWN_TASK.judge_batch(COUNTDOWN[:5], texts)]
    assert codes == ["PASS"] * 3 + ["NO_ANSWER", "PARSE_ERROR"]
    texts = [calls_answer(CALLS[0]), calls_answer(CALLS[1], "json"), "", json.dumps(CALLS[0].data["answers"])]
    codes = [v.code for v in CALLS_TASK.judge_batch([CALLS[0], CALLS[1], CALLS[2], CALLS[3]], texts)]
    assert codes[:3] == ["PASS", "PASS", "BAD_FORMAT"] and codes[3] != "PASS"


@pytest.mark.parametrize("task,instances", [(COUNTDOWN_TASK, COUNTDOWN), (CALLS_TASK, CALLS)])
def test_empty_and_mismatched_batches(task, instances):
    assert task.judge_batch([], []) == []
    with pytest.raises(ValueError, match="texts has 1 entries but instances has 2"):
        task.judge_batch(instances[:2], ["x"])
    with pytest.raises(TypeError, match=r"\[1\] must be str or bytes"):
        task.judge_batch(instances[:2], ["x", None])


def test_a_gold_is_prepared_once_per_instance_across_batches(monkeypatch):
    prepared = []
    original = function_calling_module.prepare_gold

    def counting(gold):
        prepared.append(gold)
        return original(gold)

    monkeypatch.setattr(function_calling_module, "prepare_gold", counting)
    task = get_task("fncall-synthetic")
    first, second = CALLS[:4] * 2, CALLS[2:6] * 3  # a GRPO-like repeat within each batch, overlap across them
    task.judge_batch(first, [calls_answer(i) for i in first])
    assert len(prepared) == 4
    verdicts = task.judge_batch(second, [calls_answer(i) for i in second])
    assert len(prepared) == 6 and all(v.passed for v in verdicts)
    task.explain(CALLS[0], "")
    assert len(prepared) == 6


def test_every_task_is_a_task():
    for name in TASK_NAMES:
        assert isinstance(get_task(name), Task)


def test_the_prepared_golds_are_bounded_and_evict_the_oldest(monkeypatch):
    monkeypatch.setattr(function_calling_module, "PREPARED_GOLDS", 3)
    task = get_task("fncall-synthetic")
    instances = CALLS[:5]
    verdicts = task.judge_batch(instances, [calls_answer(i) for i in instances])
    assert all(v.passed for v in verdicts)  # eviction mid-batch changes no verdict
    assert list(task._golds) == [i.id for i in instances[2:]]
    assert task.judge_batch(instances[:1], [calls_answer(instances[0])])[0].passed  # evicted: parsed again
