"""Which instances a run evaluates on and which it trains on: a held-out set, never trained on, and
the training stream outside it."""

from __future__ import annotations

import random
from collections.abc import Callable

from r3fast.tasks.base import Instance

# Tasks whose instances come from a seeded generator (unless a file is given): training streams fresh ones.
GENERATED_TASKS = ("countdown", "countdown-easy", "fncall-synthetic")


def task_instances(name: str, *, path: str = "", eval_task: str = "", eval_size: int,
                   eval_seed: int) -> tuple[list[Instance], list[Instance]]:
    """(held-out instances, fixed training list): generated tasks stream fresh instances and
    return an empty list; tasks read from a file or a package return every instance in it.
    With `eval_task`, the held-out set comes from that source, which training must not overlap."""
    from r3fast.tasks import load_instances, sample_instances

    generated = name in GENERATED_TASKS and not path
    if eval_task:
        from r3fast.tasks import check_disjoint, held_out_source

        heldout = sample_instances(load_instances(eval_task), eval_size, eval_seed) if eval_size else []
        training = [] if generated else load_instances(name, source=path or None)
        check_disjoint(training, held_out_source(eval_task), f"task {name!r}")
        return heldout, training
    if generated:
        return (load_instances(name, n=eval_size, seed=eval_seed) if eval_size else []), []
    every = load_instances(name, source=path) if path else load_instances(name)
    if eval_size >= len(every):
        raise ValueError(f"config key 'data.eval_size' ({eval_size}) leaves no training instance of the {len(every)} "
                         f"in task {name!r}")
    return (sample_instances(every, eval_size, eval_seed) if eval_size else []), every


def training_generator(name: str, eval_task: str = "") -> Callable[[int, int], list[Instance]]:
    """(n, seed) -> fresh instances of a generated task; with `eval_task` each batch is checked to
    share no function name or request with that held-out source."""
    from r3fast.tasks import check_disjoint, held_out_source, load_instances

    held_out = held_out_source(eval_task) if eval_task else None

    def generate(n: int, seed: int) -> list[Instance]:
        instances = load_instances(name, n=n, seed=seed)
        if held_out is not None:
            check_disjoint(instances, held_out, f"task {name!r}")
        return instances

    return generate


def fresh_instances(training: list[Instance], generate: Callable[[int, int], list[Instance]], n: int, seed: int,
                    exclude_ids: set[str]) -> list[Instance]:
    """n instances for a first-try stage step, from the fixed training list when there is one, else
    generated; never an excluded (held-out) one."""
    def draw(k: int, round_seed: int) -> list[Instance]:
        if training:
            return random.Random(round_seed).sample(training, min(k, len(training)))
        return generate(k, round_seed)

    return draw_excluding(draw, n, seed, exclude_ids)


def draw_excluding(draw, n: int, seed: int, exclude_ids: set[str], max_rounds: int = 1000) -> list[Instance]:
    """n instances from seeded draws `draw(k, seed)`, skipping excluded ids. Small task spaces such as
    countdown-easy overlap the held-out set often (half of all draws with eval_size=500), so one
    filtered draw would train on fewer groups than asked."""
    out: list[Instance] = []
    for round_ in range(max_rounds):
        out += [i for i in draw(n, seed * 1_000_003 + round_) if i.id not in exclude_ids]
        if len(out) >= n:
            return out[:n]
    raise ValueError(f"found only {len(out)} of {n} instances outside the held-out set in {max_rounds} draws: "
                     f"lower data.eval_size")
