"""How well a model does a task on the first try, and on the second try after one self-reflection.

    report = evaluate(engine, tokenizer, task, instances, ReflectConfig(group_size=1, reflection_temperature=0))
    report["first_try_accuracy"], report["second_try_accuracy"]

Second try = the first try, or, for a failure, one reflection and one retry (greedy by default).
It is the paper's headline number: what reflection alone buys before any training.

Beside it runs the control: each failure retried with the same retry turn and sampling settings but
no reflection. `reflection_lift` = second try - second try without reflection, with a paired 95%
interval (both are measured on the same instances), says what the reflection itself adds over a
second look at the task.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace

from r3fast.reflect import ReflectConfig, reflect_retry
from r3fast.rollout.base import GenerationStats, RolloutEngine
from r3fast.tasks.base import Instance, Task
from r3fast.train.metrics import format_lift, paired_difference_interval

# The evaluation's own defaults: one greedy reflection, so the number is deterministic.
EVAL_REFLECT = ReflectConfig(group_size=1, reflection_temperature=0.0)


def evaluation_config(trained: ReflectConfig, *, seed: int) -> ReflectConfig:
    """The held-out evaluation of a run that trains with `trained`: one greedy reflection, with the
    run's token budgets, reflection prompts and answer-tag rule."""
    return replace(EVAL_REFLECT, attempt_max_new_tokens=trained.attempt_max_new_tokens,
                   reflection_max_new_tokens=trained.reflection_max_new_tokens,
                   reflection_bad_words=trained.reflection_bad_words, reflection_stop=trained.reflection_stop,
                   prompts=trained.prompts, seed=seed)


def evaluate(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    instances: Sequence[Instance],
    config: ReflectConfig = EVAL_REFLECT,
    *,
    chunk_size: int = 32,
    progress: bool = True,
) -> dict:
    """First- and second-try accuracy over `instances`, in chunks of `chunk_size` (for the progress bar)."""
    from tqdm import tqdm

    if not instances:
        raise ValueError("evaluate needs at least one instance")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    stats = {step: GenerationStats() for step in ("attempt", "reflection", "retry", "control")}
    first_codes: Counter = Counter()
    retry_codes: Counter = Counter()
    control_codes: Counter = Counter()
    paired: Counter = Counter()  # failures by (rescued with reflection, rescued without)
    first_passed = 0
    start = time.perf_counter()
    with tqdm(total=len(instances), desc=f"eval {task.name}", unit="task", disable=not progress) as bar:
        for begin in range(0, len(instances), chunk_size):
            chunk = instances[begin : begin + chunk_size]
            # a distinct seed per chunk keeps sampled reflections independent across chunks
            result = reflect_retry(engine, tokenizer, task, chunk, replace(config, seed=config.seed + begin), control=True)
            first_passed += result.first_try_passed
            paired.update(result.paired_rescues())
            first_codes.update(result.first_codes)
            retry_codes.update(result.retry_codes)
            control_codes.update(code for r in result.control for code in r.codes)
            for step, s in result.stats.items():
                stats[step].prompt_tokens += s.prompt_tokens
                stats[step].generated_tokens += s.generated_tokens
                stats[step].seconds += s.seconds
            bar.update(len(chunk))
            bar.set_postfix(first=f"{first_passed / (begin + len(chunk)):.2f}")
    n = len(instances)
    both, reflection_only = paired[(True, True)], paired[(True, False)]
    control_only, neither = paired[(False, True)], paired[(False, False)]
    rescued, control_rescued = both + reflection_only, both + control_only
    # first-try passes pass with and without reflection: they belong to the paired table's "both" cell
    lift_ci = paired_difference_interval(first_passed + both, reflection_only, control_only, neither)
    total = GenerationStats(
        sum(s.prompt_tokens for s in stats.values()),
        sum(s.generated_tokens for s in stats.values()),
        sum(s.seconds for s in stats.values()),
    )
    return {
        "task": task.name,
        "n": n,
        "first_try_accuracy": first_passed / n,
        "second_try_accuracy": (first_passed + rescued) / n,
        "second_try_without_reflection_accuracy": (first_passed + control_rescued) / n,
        "reflection_lift": (rescued - control_rescued) / n,
        "reflection_lift_ci95": list(lift_ci),  # Newcombe's paired hybrid score interval
        "counts": {
            "instances": n,
            "first_try_passed": first_passed,
            "first_try_failed": n - first_passed,
            "retry_passed": rescued,  # failures rescued by reflection + retry (any of the group's retries)
            "second_try_passed": first_passed + rescued,
            "retry_without_reflection_passed": control_rescued,  # failures rescued by a retry without reflection
            "second_try_without_reflection_passed": first_passed + control_rescued,
            "rescued_by_both": both,
            "rescued_with_reflection_only": reflection_only,
            "rescued_without_reflection_only": control_only,
        },
        "first_try_verdicts": dict(sorted(first_codes.items())),
        "retry_verdicts": dict(sorted(retry_codes.items())),
        "retry_without_reflection_verdicts": dict(sorted(control_codes.items())),
        "tokens_per_second": total.tokens_per_second,
        "generation": {
            step: {**asdict(s), "tokens_per_second": s.tokens_per_second} for step, s in {**stats, "total": total}.items()
        },
        "reflect_config": {k: v for k, v in asdict(config).items() if k != "prompts"},
        "reflection_prompts": {"reflection_request": config.prompts.reflection_request,
                               "retry_layout": config.prompts.retry_layout, "retry_request": config.prompts.retry_template,
                               "retry_without_reflection_request": config.prompts.control_template},
        "seconds": time.perf_counter() - start,
    }


def format_report(report: dict) -> str:
    """The report as a small table for the terminal."""
    c = report["counts"]
    rows = [
        ("task", report["task"]),
        ("instances", c["instances"]),
        ("first try", f"{report['first_try_accuracy']:.3f}  ({c['first_try_passed']}/{c['instances']})"),
        ("second try", f"{report['second_try_accuracy']:.3f}  ({c['second_try_passed']}/{c['instances']})"),
        ("second try, no reflection", f"{report['second_try_without_reflection_accuracy']:.3f}  "
                                      f"({c['second_try_without_reflection_passed']}/{c['instances']})"),
        ("reflection lift", format_lift(report)),
        ("rescued by reflection", f"{c['retry_passed']}/{c['first_try_failed']}"),
        ("rescued without reflection", f"{c['retry_without_reflection_passed']}/{c['first_try_failed']}"),
        ("first-try verdicts", _codes(report["first_try_verdicts"])),
        ("retry verdicts", _codes(report["retry_verdicts"])),
        ("no-reflection verdicts", _codes(report["retry_without_reflection_verdicts"])),
        ("tokens/s", f"{report['tokens_per_second']:.1f}"),
        ("seconds", f"{report['seconds']:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _codes(codes: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in codes.items()) or "-"
