"""Verifier throughput: the C++ core against Python checkers on the same inputs, reported as ratios.

The last section times the path the training loop uses, task.judge_batch, on the batch shapes of one training
step, against the per-item loop it replaced (task.verify, then task.explain, for every text).

Baselines, written here from their described behaviour (no third-party code is copied):
- TinyZero-style Countdown: the last line after "Assistant:", the last <answer>...</answer> on it, \\d+ numbers
  compared as a sorted list, eval() after a character whitelist, float compare within 1e-5.
- json / orjson function calls: loads both sides, then multiset matching of the call dicts with ==.
The issue's comparison gives every checker the gold as JSON text on every call. Extra rows labelled "prepared"
let every checker parse each gold once beforehand (r3fast.verify.prepare_gold; json/orjson.loads) and time only
the checks of the outputs.
Each ratio is given twice: of the median rounds, and of the best rounds. On a shared machine other work only ever
adds time, so the best round of each side is the one least disturbed; the two agree on a quiet machine.
"""

import json
import random
import re

import orjson
import pytest

from r3fast.prompts import render_calls
from r3fast.tasks import get_task, load_instances
from r3fast.verify import (
    check_countdown,
    check_function_calls,
    explain_countdown,
    explain_countdown_batch,
    explain_function_calls,
    explain_function_calls_batch,
    prepare_gold,
)
from r3fast.verify.feedback import function_call_feedback
from r3fast.verify.reference import countdown_verdict, function_calls_verdict

N = 2000  # items per timed batch
N_THREADS_BATCH = 100_000


def cpp_countdown_passed(responses, numbers, targets, num_threads):
    return [v.passed for v in explain_countdown_batch(responses, numbers, targets, num_threads=num_threads)]


def cpp_calls_passed(outputs, golds, num_threads):
    return [v.passed for v in explain_function_calls_batch(outputs, golds, num_threads=num_threads)]


# ------------------------------------------------------------------------------------------------- inputs


def _countdown_inputs(n: int, seed: int = 0):
    rng = random.Random(seed)
    responses, numbers, targets = [], [], []
    for _ in range(n):
        nums = [rng.randint(1, 100) for _ in range(rng.choice([3, 4]))]
        a, b, c, *rest = nums
        expr = f"({a} + {b}) * {c}" if not rest else f"({a} + {b}) * {c} - {rest[0]}"
        value = (a + b) * c - (rest[0] if rest else 0)
        target = value if rng.random() < 0.6 else value + rng.randint(1, 9)
        thinking = " ".join(
            rng.choice(["try", "add", "then", "multiply", "check", "the", "numbers"]) for _ in range(40)
        )
        responses.append(
            f"User: reach {target}.\nAssistant: <think>{thinking}</think>\n<answer>{expr}</answer>"
        )
        numbers.append(nums)
        targets.append(target)
    return responses, numbers, targets


def _function_call_inputs(n: int, seed: int = 0):
    rng = random.Random(seed)
    outputs, golds = [], []
    for _ in range(n):
        calls = []
        for _ in range(rng.randint(1, 3)):
            args = {
                "query": rng.choice(["weather in Paris", "top news", "stock AAPL"]),
                "limit": rng.randint(1, 50),
                "ratio": rng.choice([0.5, 1.25, 3.0]),
                "tags": [rng.choice(["a", "b", "c"]) for _ in range(rng.randint(0, 3))],
                "exact": rng.random() < 0.5,
            }
            calls.append({"name": rng.choice(["search", "get_quote", "fetch_news"]), "arguments": args})
        golds.append(json.dumps(calls))
        answer = [dict(c, arguments=dict(reversed(list(c["arguments"].items())))) for c in reversed(calls)]
        if rng.random() < 0.4:
            answer[0]["arguments"]["limit"] += 1
        outputs.append(json.dumps(answer, indent=rng.choice([None, 2])))
    return outputs, golds


# ---------------------------------------------------------------------------------------------- baselines


def tinyzero_style_countdown(solution: str, numbers: list[int], target: int) -> float:
    if "Assistant:" not in solution:
        return 0.0
    last_line = solution.split("Assistant:", 1)[1].split("\n")[-1]
    matches = re.findall(r"<answer>(.*?)</answer>", last_line)
    if not matches:
        return 0.0
    equation = matches[-1].strip()
    if sorted(int(x) for x in re.findall(r"\d+", equation)) != sorted(numbers):
        return 0.1
    # The whitelist admits "**", and 99**99**99 would never return: refuse it so the bench cannot hang.
    if not re.fullmatch(r"[\d+\-*/().\s]+", equation) or "**" in equation:
        return 0.1
    try:
        value = eval(equation, {"__builtins__": None}, {})  # noqa: S307  the baseline's own method
    except Exception:
        return 0.1
    return 1.0 if abs(value - target) < 1e-5 else 0.1


def _calls_match(calls, expected) -> bool:
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or len(calls) != len(expected):
        return False
    remaining = list(expected)
    for call in calls:
        if not isinstance(call, dict) or call.keys() != {"name", "arguments"} or call not in remaining:
            return False
        remaining.remove(call)
    return True


def json_function_calls(output: str, gold: str) -> bool:
    try:
        return _calls_match(json.loads(output), json.loads(gold))
    except ValueError:
        return False


def orjson_function_calls(output: str, gold: str) -> bool:
    try:
        return _calls_match(orjson.loads(output), orjson.loads(gold))
    except orjson.JSONDecodeError:
        return False


def json_function_calls_prepared(output: str, gold: list) -> bool:
    try:
        return _calls_match(json.loads(output), gold)
    except ValueError:
        return False


def orjson_function_calls_prepared(output: str, gold: list) -> bool:
    try:
        return _calls_match(orjson.loads(output), gold)
    except orjson.JSONDecodeError:
        return False


# -------------------------------------------------------------------------------------------------- benches

COUNTDOWN = _countdown_inputs(N)
FUNCTION_CALLS = _function_call_inputs(N)
GROUP = 8  # outputs per gold in a GRPO group
# The same outputs, each gold shared by GROUP consecutive outputs, as a rollout batch delivers them.
FUNCTION_CALLS_GROUPED = (FUNCTION_CALLS[0], [FUNCTION_CALLS[1][i - i % GROUP] for i in range(N)])
_SECONDS: dict[str, tuple[float, float]] = {}  # (median, best) seconds per run, by bench name
_ITEMS: dict[str, int] = {}  # items per run, where not N


@pytest.fixture(scope="module")
def timings(report_ratio):
    yield _SECONDS

    def ratio(name: str, base: str, target: str) -> None:
        if name in _SECONDS and base in _SECONDS:
            (median, best), (base_median, base_best) = _SECONDS[name], _SECONDS[base]
            report_ratio(
                f"{name:>28} vs {base:<28} {base_median / median:8.1f}x median {base_best / best:8.1f}x best"
                f"   (target {target})"
            )

    for name, (median, best) in sorted(_SECONDS.items()):
        items = _ITEMS.get(name, N_THREADS_BATCH if "100k" in name else N)
        report_ratio(
            f"{name:>28}: {median / items * 1e9:10.0f} ns/item median {best / items * 1e9:10.0f} best"
        )
    ratio("countdown_cpp_1thread", "countdown_tinyzero_style", ">= 200x")
    ratio("countdown_cpp_1thread", "countdown_python_reference", "-")
    ratio("calls_cpp_1thread", "calls_json", ">= 50x")
    ratio("calls_cpp_1thread", "calls_orjson", ">= 10x")
    ratio("calls_cpp_1thread", "calls_python_reference", "-")
    ratio("calls_cpp_1thread_prepared", "calls_json_prepared", "- (golds parsed beforehand)")
    ratio("calls_cpp_1thread_prepared", "calls_orjson_prepared", "- (golds parsed beforehand)")
    ratio("calls_cpp_1thread_grouped", "calls_json_grouped", "- (gold shared by 8 outputs)")
    ratio("calls_cpp_1thread_grouped", "calls_orjson_grouped", "- (gold shared by 8 outputs)")
    ratio("countdown_cpp_100k_2threads", "countdown_cpp_100k_1thread", ">= 1.8x")
    ratio("calls_cpp_100k_2threads", "calls_cpp_100k_1thread", ">= 1.8x")
    for shape in STEP_SHAPES:
        ratio(f"step_{shape}_judge_batch", f"step_{shape}_per_item", "- (one training step's batch)")


def _run(benchmark, timings, name, fn, rounds):
    result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    timings[name] = (benchmark.stats.stats.median, benchmark.stats.stats.min)
    return result


def test_countdown_cpp_1thread(benchmark, timings):
    benchmark.group = "countdown"
    passed = _run(
        benchmark,
        timings,
        "countdown_cpp_1thread",
        lambda: cpp_countdown_passed(*COUNTDOWN, num_threads=1),
        50,
    )
    assert passed == [tinyzero_style_countdown(*x) == 1.0 for x in zip(*COUNTDOWN, strict=True)]


def test_countdown_tinyzero_style(benchmark, timings):
    benchmark.group = "countdown"
    _run(
        benchmark,
        timings,
        "countdown_tinyzero_style",
        lambda: [tinyzero_style_countdown(*x) == 1.0 for x in zip(*COUNTDOWN, strict=True)],
        5,
    )


def test_countdown_python_reference(benchmark, timings):
    benchmark.group = "countdown"
    _run(
        benchmark,
        timings,
        "countdown_python_reference",
        lambda: [countdown_verdict(*x) == "PASS" for x in zip(*COUNTDOWN, strict=True)],
        3,
    )


def test_calls_cpp_1thread(benchmark, timings):
    benchmark.group = "function calls"
    passed = _run(
        benchmark,
        timings,
        "calls_cpp_1thread",
        lambda: cpp_calls_passed(*FUNCTION_CALLS, num_threads=1),
        50,
    )
    assert passed == [json_function_calls(*x) for x in zip(*FUNCTION_CALLS, strict=True)]


def test_calls_json(benchmark, timings):
    benchmark.group = "function calls"
    _run(
        benchmark,
        timings,
        "calls_json",
        lambda: [json_function_calls(*x) for x in zip(*FUNCTION_CALLS, strict=True)],
        10,
    )


def test_calls_orjson(benchmark, timings):
    benchmark.group = "function calls"
    _run(
        benchmark,
        timings,
        "calls_orjson",
        lambda: [orjson_function_calls(*x) for x in zip(*FUNCTION_CALLS, strict=True)],
        10,
    )


def test_calls_python_reference(benchmark, timings):
    benchmark.group = "function calls"
    _run(
        benchmark,
        timings,
        "calls_python_reference",
        lambda: [function_calls_verdict(*x) == "PASS" for x in zip(*FUNCTION_CALLS, strict=True)],
        3,
    )


COUNTDOWN_100K = tuple(x * (N_THREADS_BATCH // N) for x in COUNTDOWN)
FUNCTION_CALLS_100K = tuple(x * (N_THREADS_BATCH // N) for x in FUNCTION_CALLS)


@pytest.mark.parametrize("threads", [1, 2])
def test_countdown_cpp_100k(benchmark, timings, threads):
    benchmark.group = "countdown 100k batch"
    name = f"countdown_cpp_100k_{threads}thread{'s' if threads > 1 else ''}"
    _run(benchmark, timings, name, lambda: cpp_countdown_passed(*COUNTDOWN_100K, num_threads=threads), 10)


@pytest.mark.parametrize("threads", [1, 2])
def test_calls_cpp_100k(benchmark, timings, threads):
    benchmark.group = "function calls 100k batch"
    name = f"calls_cpp_100k_{threads}thread{'s' if threads > 1 else ''}"
    _run(
        benchmark,
        timings,
        name,
        lambda: cpp_calls_passed(*FUNCTION_CALLS_100K, num_threads=threads),
        10,
    )


@pytest.mark.parametrize("checker", ["cpp_1thread", "json", "orjson"])
def test_calls_grouped(benchmark, timings, checker):
    benchmark.group = "function calls, gold shared by a group"
    outputs, golds = FUNCTION_CALLS_GROUPED
    python_checker = {"json": json_function_calls, "orjson": orjson_function_calls}.get(checker)
    if python_checker is None:
        fn = lambda: cpp_calls_passed(outputs, golds, num_threads=1)  # noqa: E731
    else:
        fn = lambda: [python_checker(o, g) for o, g in zip(outputs, golds, strict=True)]  # noqa: E731
    passed = _run(benchmark, timings, f"calls_{checker}_grouped", fn, 50 if python_checker is None else 10)
    assert passed == [json_function_calls(o, g) for o, g in zip(outputs, golds, strict=True)]


@pytest.mark.parametrize("checker", ["cpp_1thread", "json", "orjson"])
def test_calls_prepared(benchmark, timings, checker):
    benchmark.group = "function calls, golds parsed beforehand"
    outputs, golds = FUNCTION_CALLS
    if checker == "cpp_1thread":
        prepared = [prepare_gold(g) for g in golds]
        fn = lambda: cpp_calls_passed(outputs, prepared, num_threads=1)  # noqa: E731
    else:
        loads, python_checker = {
            "json": (json.loads, json_function_calls_prepared),
            "orjson": (orjson.loads, orjson_function_calls_prepared),
        }[checker]
        parsed = [loads(g) for g in golds]
        fn = lambda: [python_checker(o, g) for o, g in zip(outputs, parsed, strict=True)]  # noqa: E731
    passed = _run(benchmark, timings, f"calls_{checker}_prepared", fn, 50 if checker == "cpp_1thread" else 10)
    assert passed == [json_function_calls(o, g) for o, g in zip(outputs, golds, strict=True)]


# ------------------------------------------------------------------------------- one training step's batches


def _step_texts(instances, per_instance: int, write, seed: int = 0):
    """[(instance, text)]: `per_instance` completions per instance, each `write(instance, rng)`."""
    rng = random.Random(seed)
    return [(inst, write(inst, rng)) for inst in instances for _ in range(per_instance)]


def _countdown_text(inst, rng: random.Random) -> str:
    """A ~20-token completion, about half of them right: the solution, or one operator swapped, or no tags."""
    solution = inst.data["solution"]
    kind = rng.random()
    expr = solution if kind < 0.5 else solution.replace(" + ", " * ", 1).replace(" - ", " + ", 1)
    think = f"<think>try {' '.join(map(str, inst.data['numbers']))}</think>"
    return f"{think} {expr}" if kind > 0.9 else f"{think}\n<answer>{expr}</answer>"


def _calls_text(inst, rng: random.Random) -> str:
    """A completion in the prompt's <tool_call> format: half right, half with an argument changed or a call left out."""
    calls = json.loads(json.dumps(inst.data["answers"]))
    if rng.random() < 0.5:
        if len(calls) > 1 and rng.random() < 0.5:
            calls.pop()
        else:
            args = calls[0]["arguments"]
            args[next(iter(args), "extra")] = "wrong"
    return render_calls(calls, "tool_call")


COUNTDOWN_STEP = load_instances("countdown-easy", n=8, seed=1)
CALLS_STEP = load_instances("fncall-synthetic", n=8, seed=1)
# shape: (task name, [(instance, text)]): a step's 8 tasks x 8 samples; R3's retries of 8 failures x 4
# reflections x k retries each; 32 function-call samples (8 tasks x 4).
STEP_SHAPES = {
    "countdown_8x8": ("countdown-easy", _step_texts(COUNTDOWN_STEP, 8, _countdown_text)),
    **{f"r3_8x4x{k}": ("countdown-easy", _step_texts(COUNTDOWN_STEP, 4 * k, _countdown_text, seed=k)) for k in (1, 2, 3, 4)},
    "calls_8x4": ("fncall-synthetic", _step_texts(CALLS_STEP, 4, _calls_text)),
}


def per_item_verify_then_explain(task, pairs):
    """The loop judge_batch replaced: the old task.verify and task.explain, one item at a time."""
    out = []
    for inst, text in pairs:
        if task.name.startswith("countdown"):
            check_countdown(text, inst.data["numbers"], inst.data["target"])
            out.append(explain_countdown(text, inst.data["numbers"], inst.data["target"]))
        else:
            answers, tools = inst.data["answers"], inst.data["tools"]
            check_function_calls(text, answers)
            code = explain_function_calls(text, answers).code
            out.append((code, function_call_feedback(text, code, answers, tools, task.prompt_config.tool_call_format)))
    return out


@pytest.mark.parametrize("shape", list(STEP_SHAPES))
@pytest.mark.parametrize("path", ["judge_batch", "per_item"])
def test_step(benchmark, timings, shape, path):
    benchmark.group = f"one training step: {shape}"
    task_name, pairs = STEP_SHAPES[shape]
    task = get_task(task_name)
    instances, texts = [i for i, _ in pairs], [t for _, t in pairs]
    name = f"step_{shape}_{path}"
    _ITEMS[name] = len(pairs)
    if path == "judge_batch":
        # The warmup round prepares each function-call gold; the timed rounds reuse them, as the retries of a
        # step and later steps over the same instances do.
        verdicts = _run(benchmark, timings, name, lambda: task.judge_batch(instances, texts), 200)
        codes = [v.code for v in verdicts]
    else:
        verdicts = _run(benchmark, timings, name, lambda: per_item_verify_then_explain(task, pairs), 50)
        codes = [v.code if hasattr(v, "code") else v[0] for v in verdicts]
    assert 0 < codes.count("PASS") < len(codes)
    assert codes == [task.explain(i, t).code for i, t in pairs]
