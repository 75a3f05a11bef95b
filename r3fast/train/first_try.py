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

from r3fast.advantages import group_advantages
from r3fast.prompts import chat_template_inputs, template_takes_tools
from r3fast.reflect import chat_ids
from r3fast.rollout.base import GenerationStats, RolloutEngine, SamplingParams
from r3fast.tasks.base import Instance, Task
from r3fast.train.update import TrainingSample


@dataclass
class FirstTryBatch:
    samples: list[TrainingSample]          # every attempt, group-major, advantages set (0 in flat groups)
    rewards: list[float]                   # every attempt's reward, group-major
    groups: int                            # instances attempted (one group each)
    flat_groups: int                       # groups whose rewards are all equal: counted in the loss, no signal


def first_try_batch(
    engine: RolloutEngine,
    tokenizer,
    task: Task,
    instances: Sequence[Instance],
    params: SamplingParams,
    *,
    scale_rewards: bool = True,
    stats: GenerationStats | None = None,
) -> FirstTryBatch:
    """params.n sampled first attempts per instance, verified, group-normalised into samples."""
    if params.n < 2 or params.greedy:
        raise ValueError(f"a first-try GRPO group needs n >= 2 sampled attempts, got n={params.n}, "
                         f"temperature={params.temperature}")
    takes_tools = template_takes_tools(getattr(tokenizer, "chat_template", None))
    contexts = [chat_ids(tokenizer, *chat_template_inputs(task.prompt(i), takes_tools)) for i in instances]
    outs = engine.generate(contexts, params)
    rewards, group_ids, samples = [], [], []
    for g, (instance, context, completions) in enumerate(zip(instances, contexts, outs, strict=True)):
        for c in completions:
            rewards.append(1.0 if task.verify(instance, c.text) else 0.0)
            group_ids.append(g)
            samples.append(TrainingSample(context, list(c.token_ids), 0.0, list(c.logprobs)))
    if stats is not None:
        stats.prompt_tokens += sum(len(c) for c in contexts)
        stats.generated_tokens += sum(len(s.completion_ids) for s in samples)
    result = group_advantages(rewards, group_ids, scale_std=scale_rewards)
    for sample, advantage in zip(samples, result.advantages, strict=True):
        sample.advantage = advantage
    return FirstTryBatch(samples, rewards, len(instances), len(result.flat_groups))
