"""The tasks r3fast trains and evaluates on, by name.

    >>> from r3fast.tasks import get_task, load_instances
    >>> task = get_task("countdown-easy")                     # prompt options: get_task(..., num_demos=2)
    >>> instances = load_instances("countdown-easy", n=200, seed=0)
    >>> prompt = task.prompt(instances[0])                      # r3fast.tasks.base.Prompt
    >>> verdicts = task.judge_batch(instances[:2], ["<answer> " + instances[0].data["solution"] + " </answer>", ""])
    >>> [v.code for v in verdicts]                              # r3fast.verify.Verdict: code, reason, passed
    ['PASS', 'NO_ANSWER']

Names:
    countdown          generated, TinyZero-like (3-4 numbers in 1-99, target <= 100), or a TinyZero file
    countdown-easy     generated, 2-3 numbers in 1-10, targets <= 30, or a file
    function_calling   an xLAM/APIGen file or `datasets.Dataset` (source= is required)
    bfcl               BFCL single-turn data from the bfcl-eval package (categories=, data_dir=)
    fncall-synthetic   generated function-calling instances over ~250 tools (r3fast.tasks.fncall_generator)
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

from r3fast.prompts import PromptConfig
from r3fast.tasks.base import Instance, Prompt, Task
from r3fast.tasks.bfcl import BFCL_CATEGORIES, bfcl_held_out, load_bfcl
from r3fast.tasks.countdown import PRESETS, CountdownConfig, CountdownTask, generate_countdown, load_countdown
from r3fast.tasks.fncall_generator import generate_function_calling
from r3fast.tasks.function_calling import FunctionCallingTask, load_function_calling
from r3fast.tasks.heldout import HeldOut, check_disjoint, held_out_from

TASK_NAMES = ("countdown", "countdown-easy", "function_calling", "bfcl", "fncall-synthetic")

Source = str | os.PathLike | Iterable[Mapping]


def _check_name(name: str) -> None:
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")


def _check_options(options: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {what}; expected some of {sorted(allowed)}")


def get_task(name: str, prompt_config: PromptConfig | None = None, **prompt_options: Any) -> Task:
    """The task called `name`; `prompt_options` override fields of `prompt_config` (e.g. num_demos=2)."""
    _check_name(name)
    _check_options(prompt_options, [f.name for f in fields(PromptConfig)], "the prompt config")
    config = replace(prompt_config or PromptConfig(), **prompt_options)
    if name.startswith("countdown"):
        return CountdownTask(name=name, prompt_config=config)
    return FunctionCallingTask(name=name, prompt_config=config)


def sample_instances(instances: Sequence[Instance], n: int | None, seed: int) -> list[Instance]:
    """A seeded sample of `n`, in the original order; all of them when n is None or not smaller."""
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n is None or n >= len(instances):
        return list(instances)
    keep = sorted(random.Random(seed).sample(range(len(instances)), n))
    return [instances[i] for i in keep]


def load_instances(
    name: str, *, n: int | None = None, seed: int = 0, source: Source | None = None, **options: Any
) -> list[Instance]:
    """Instances of task `name`: generated (`n` required, `seed`), or read from `source` and sampled.

    Options: countdown presets take CountdownConfig fields (e.g. max_numbers=5) for generation;
    bfcl takes categories= (a name or a list, default "simple_python") and data_dir=.
    """
    _check_name(name)
    if name.startswith("countdown"):
        if source is not None:
            _check_options(options, [], f"task {name!r} read from a file")
            return sample_instances(load_countdown(source), n, seed)
        _check_options(options, [f.name for f in fields(CountdownConfig)], f"task {name!r}")
        if n is None:
            raise ValueError(f"task {name!r} generates instances: give n (or a source file)")
        return generate_countdown(n, seed, replace(PRESETS[name], **options))
    if name == "function_calling":
        _check_options(options, [], f"task {name!r}")
        if source is None:
            raise ValueError("task 'function_calling' reads an xLAM dataset: give source (a file or a datasets.Dataset)")
        return sample_instances(load_function_calling(source), n, seed)
    if name == "bfcl":
        _check_options(options, ["categories", "data_dir"], f"task {name!r}")
        if source is not None:
            raise ValueError("task 'bfcl' reads the bfcl-eval package data; use data_dir= for another copy, not source")
        return sample_instances(load_bfcl(options.get("categories", "simple_python"), options.get("data_dir")), n, seed)
    _check_options(options, [], f"task {name!r}")
    if source is not None:
        raise ValueError(f"task {name!r} is generated; for a file use task 'function_calling'")
    if n is None:
        raise ValueError(f"task {name!r} generates instances: give n")
    return generate_function_calling(n, seed)


def held_out_source(name: str) -> HeldOut:
    """All that training must not share with held-out task `name`: for bfcl, every BFCL question of
    every category (converted or not), so the other categories stay fit for evaluation too."""
    if name == "bfcl":
        return bfcl_held_out()
    return held_out_from(load_instances(name))


# What users import; the loaders and generators behind get_task/load_instances live in their modules.
__all__ = [
    "BFCL_CATEGORIES",
    "TASK_NAMES",
    "CountdownTask",
    "FunctionCallingTask",
    "Instance",
    "Prompt",
    "Task",
    "check_disjoint",
    "get_task",
    "load_instances",
    "sample_instances",
]
