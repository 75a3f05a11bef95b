"""The optional supervised stage that opens a run (`stage.sft_steps`): imitate the task's gold answers.

Why it exists: GRPO and R3 learn only from groups with mixed rewards, and a model that never passes
gives none. SmolLM2-135M-Instruct passed 0 of 256 sampled first attempts on generated function-call
requests: it writes the tool's schema instead of a call. A few steps of imitation on the generator's
gold calls teach the format, after which sampled attempts pass some of the time and the RL stages
have signal. It is a separate, named stage, reported as such (stage "sft" in metrics.jsonl), so a run
can be compared with one that skips it.

A gold answer is trained as a sample with advantage 1 through the same loss and update as the RL
stages: on the first pass the ratio is exactly 1, so the policy-gradient term is -log p of each gold
token, i.e. cross-entropy. `dapo` normalisation averages it over all tokens of the batch, as a
supervised fine-tuning loss does. The answer ends with the tokenizer's end-of-sequence token so the
model also learns to stop (a failure mode was repeating the right call up to the token limit).
"""

from __future__ import annotations

from collections.abc import Sequence

from r3fast.episode import TrainingSample
from r3fast.prompts import task_chat
from r3fast.tasks.base import Instance, Task

# The loss settings under which a sample with advantage 1 is cross-entropy (see the module doc).
# The log-probs come from the trainer: gold answers were never sampled, so the engine has none.
SFT_LOSS = {"loss_type": "dapo", "beta": 0.0, "num_iterations": 1, "temperature": 1.0, "sampling_correction": None,
            "old_logp_source": "trainer", "importance_sampling_level": "token"}


def check_sft_task(task: Task, instances: Sequence[Instance] = ()) -> None:
    """Raises unless `task` can write the gold answer of its instances; `instances` (a fixed training set's first
    few) are tried, so that a file without answers fails when the run starts, not at its first step."""
    if not callable(getattr(task, "gold_answer", None)):
        raise ValueError(f"config key 'stage.sft_steps' needs a task with gold answers (function calling, or "
                         f"generated Countdown); task {getattr(task, 'name', task)!r} has no gold_answer")
    for instance in instances:
        task.gold_answer(instance)


def sft_samples(tokenizer, task: Task, instances: Sequence[Instance]) -> list[TrainingSample]:
    """One sample per instance: its first-attempt prompt as context, its gold answer then EOS as the
    completion, advantage 1. Each is its own group."""
    check_sft_task(task)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the supervised stage needs a tokenizer with an eos_token_id: the gold answer ends with it")
    samples = []
    for group, instance in enumerate(instances):
        context = task_chat(tokenizer, task.prompt(instance))[2]
        answer = tokenizer.encode(task.gold_answer(instance), add_special_tokens=False) + [eos]
        samples.append(TrainingSample(context, answer, advantage=1.0, reward=1.0, group_id=group))
    return samples


def sft_metrics(samples: Sequence[TrainingSample], update: dict, dist) -> dict:
    """A supervised step: no rollout, so no reward or accuracy; the gold answers' mean negative
    log-likelihood per token under the policy before the step is what falls as it learns."""
    import torch

    counts = dist.all_reduce_data_sum(torch.tensor(
        [len(samples), sum(len(s.completion_ids) for s in samples)], dtype=torch.float64)).tolist()
    return {
        "stage": "sft",
        "reward_mean": None,
        "groups_with_signal": None,
        "first_try_accuracy": None,
        "second_try_accuracy": None,
        "sft_nll": -update["logp_mean"] if "logp_mean" in update else None,
        "sft_sequences": counts[0],
        "sft_tokens": counts[1],
        "generated_tokens": 0.0,
    }
