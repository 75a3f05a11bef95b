"""The optional warm-up stage before R3: plain GRPO on first attempts (`stage.first_try_steps`).

A 135M model rarely rescues a failure by reflecting, so R3 alone may see no group with signal.
Its first attempts, sampled G times per task, already pass some of the time: those groups have
mixed rewards, and GRPO on them (same loss, same update, the attempt is the trained span) makes
the model better at the task it will later reflect on. It is a separate, named stage of
`r3fast train`, reported as such, never mixed into the R3 steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from r3fast.advantages import assign_advantages
from r3fast.episode import TrainingSample
from r3fast.prompts import task_chat
from r3fast.reflect import judge
from r3fast.rollout.base import GenerationStats, RolloutEngine, SamplingParams, generate_counted
from r3fast.tasks.base import Instance, Task
from r3fast.timing import PhaseTimer


@dataclass
class WarmupBatch:
    samples: list[TrainingSample]          # every attempt, group-major, rewards and advantages set (0 in flat groups)
    groups: int                            # instances attempted (one group each)
    flat_groups: int                       # groups whose rewards are all equal: counted in the loss, no signal


def warmup_batch(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    instances: Sequence[Instance],
    params: SamplingParams,
    *,
    scale_rewards: bool = True,
    stats: GenerationStats | None = None,
    timer: PhaseTimer | None = None,
) -> WarmupBatch:
    """params.n sampled first attempts per instance, verified, group-normalised into samples."""
    if params.n < 2 or params.greedy:
        raise ValueError(f"a first-try GRPO group needs n >= 2 sampled attempts, got n={params.n}, "
                         f"temperature={params.temperature}")
    contexts = [task_chat(tokenizer, task.prompt(i))[2] for i in instances]
    outs = generate_counted(engine, contexts, params, stats, timer)
    verdicts = judge(task, [i for i, cs in zip(instances, outs, strict=True) for _ in cs],
                     [c.text for cs in outs for c in cs], timer)
    samples = [TrainingSample(context, list(c.token_ids), sampling_logprobs=list(c.logprobs), group_id=g)
               for g, (context, completions) in enumerate(zip(contexts, outs, strict=True)) for c in completions]
    for sample, verdict in zip(samples, verdicts, strict=True):
        sample.reward = 1.0 if verdict.passed else 0.0
    flat = assign_advantages(samples, scale_rewards=scale_rewards)
    return WarmupBatch(samples, len(instances), len(flat))
