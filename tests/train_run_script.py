"""A tiny, deterministic training run for the resume tests: `python train_run_script.py RUN_DIR [--resume]`.

Everything is real (tiny-random model, HFEngine, the reflect-retry pipeline, the trainer) except
the reward: a random 2-layer model never solves Countdown, so `ParityTask` passes an answer
when its text has an even length. A fixed, deterministic rule: honest, and it gives GRPO groups
with mixed rewards, so the weights really change from step to step.
"""

from __future__ import annotations

import sys

from stand_in_task import StandInTask

from r3fast.tasks import get_task
from r3fast.train.config import load_config, resumable_config
from r3fast.train.trainer import train

STEPS = 3
OVERRIDES = [
    "model.name=tiny-random", "rollout.engine=hf", "deterministic=true", "threads=1", "seed=7",
    "data.eval_size=0", "data.prompts_per_step=2", "data.mining_batch=3",
    f"schedule.steps={STEPS}", "schedule.warmup_steps=1", "checkpoint.every=1", "checkpoint.keep_last=2",
    "stage.first_try_steps=1", "stage.first_try_group_size=3",  # step 1: the first-try stage; then R3
    "rollout.group_size=3", "rollout.attempt_max_new_tokens=5", "rollout.reflection_max_new_tokens=5",
    "rollout.reflection_temperature=1.0", "rollout.retry_temperature=1.0", "rollout.retries_per_reflection=2",
    "rollout.reflection_answer_tags=allow", "task.quote_attempt=true",  # the protocol the reference run used
    "optimizer.lr=1e-3", "loss.micro_batch_size=4", "logging.progress=false", "logging.tensorboard=false",
]


class ParityTask(StandInTask):
    """Countdown prompts; an answer passes when its text has an even number of characters."""

    name = "countdown-easy"
    failure_code = "ODD_LENGTH"

    def __init__(self):
        self.prompts = get_task("countdown-easy")

    def prompt(self, instance):
        return self.prompts.prompt(instance)

    def verify(self, instance, text: str) -> bool:
        return len(text) % 2 == 0



def main(argv: list[str]) -> None:
    run_dir, resume = argv[0], "--resume" in argv
    cfg = resumable_config(run_dir) if resume else load_config(preset="countdown-cpu", overrides=OVERRIDES)
    train(cfg, run_dir=run_dir, resume=resume, task=ParityTask())


if __name__ == "__main__":
    main(sys.argv[1:])
