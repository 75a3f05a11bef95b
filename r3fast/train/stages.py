"""Which stage a training step belongs to. A run's `schedule.steps` are, in order:

    sft        the first `stage.sft_steps`: imitate the task's gold answers (train/sft.py)
    first_try  the next `stage.first_try_steps`: plain GRPO on sampled first attempts (train/warmup.py),
               or with `stage.interleave` those steps spread over everything after the supervised ones
    r3         the rest: reflect, retry, reward

The stage is a function of the step number alone, so a resumed run picks up in the right one.
"""

from __future__ import annotations

SFT, FIRST_TRY, R3 = "sft", "first_try", "r3"


def step_stage(step: int, *, sft_steps: int, first_try_steps: int, steps: int, interleave: bool) -> str:
    """The stage of training step `step` (1-based) in a run of `steps` steps."""
    if step <= sft_steps:
        return SFT
    later = step - sft_steps
    warm = is_warmup_step(later, first_try_steps=first_try_steps, steps=steps - sft_steps, interleave=interleave)
    return FIRST_TRY if warm else R3


def is_warmup_step(step: int, *, first_try_steps: int, steps: int, interleave: bool) -> bool:
    """Whether step `step` (1-based) of `steps` is a first-try GRPO step: the first `first_try_steps` steps,
    or with `interleave` those steps spread evenly over the run (a warm-up step whenever the running
    share of warm-up steps falls behind first_try_steps / steps; step 1 is one)."""
    if not interleave:
        return step <= first_try_steps
    # ceilings: the run starts with warm-up
    return -(-step * first_try_steps // steps) > -(-(step - 1) * first_try_steps // steps)
