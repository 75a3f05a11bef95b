"""One R3 training step end to end, split by phase, so the slowest phase is visible.

    pytest benches/bench_train_step.py --benchmark-only -s

Runs `r3fast.train.trainer.train` for a few steps on the tiny random model and on SmolLM2-135M
(few tokens each), and reports the last step's wall time split into generation (mining, reflections,
retries), scoring (templating + verification + advantages), loss (forward/backward of the fused
loss), optimizer (clip + AdamW) and sync (weights into the engine), each as a share of the step.
A random model never solves Countdown, so on tiny-random the reward is a fixed stand-in rule
(even-length answers pass) to give the loss phase real work; SmolLM2 uses the real verifier.
"""

from __future__ import annotations

import json

import pytest

from r3fast.tasks import get_task
from r3fast.train.config import load_config
from r3fast.train.trainer import train

PHASES = ("generation", "scoring", "loss", "optimizer", "sync")
STEPS = 3
COMMON = ["data.eval_size=0", "checkpoint.every=0", "checkpoint.keep_last=1", "logging.progress=false",
          "logging.tensorboard=false", "logging.print_every=1000", f"schedule.steps={STEPS}", "schedule.warmup_steps=0",
          "stage.first_try_steps=0"]  # an R3 step is what is measured
CASES = {
    "tiny-random": ["model.name=tiny-random", "data.prompts_per_step=4", "data.mining_batch=8",
                    # greedy answers of a random model would all pass or all fail
                    "rollout.attempt_temperature=1.0", "rollout.retry_temperature=1.0",
                    "rollout.attempt_max_new_tokens=16", "rollout.reflection_max_new_tokens=16"],
    "smollm2-135m-instruct": ["data.prompts_per_step=2", "data.mining_batch=8",
                              "rollout.attempt_max_new_tokens=24", "rollout.reflection_max_new_tokens=24"],
}


class EvenLengthTask:
    """Countdown prompts; an answer passes when its text has an even length (a stand-in reward)."""

    name = "countdown-easy"

    def __init__(self):
        self.prompts = get_task("countdown-easy")

    def prompt(self, instance):
        return self.prompts.prompt(instance)

    def verify(self, instance, text):
        return len(text) % 2 == 0

    def explain(self, instance, text):
        return type("Verdict", (), {"code": "PASS" if self.verify(instance, text) else "ODD", "reason": ""})()


@pytest.mark.parametrize("model", list(CASES))
def test_train_step_phases(benchmark, tmp_path, report_ratio, model):
    cfg = load_config(preset="countdown-cpu", overrides=COMMON + CASES[model])
    task = EvenLengthTask() if model == "tiny-random" else None
    benchmark.pedantic(lambda: train(cfg, run_dir=tmp_path / "run", task=task), rounds=1, iterations=1)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]  # warm: the first step pays one-time costs
    total = last["time_step"]
    split = "  ".join(f"{p} {last.get(f'time_{p}', 0.0):.2f}s ({last.get(f'time_{p}', 0.0) / total:.0%})"
                      for p in PHASES)
    slowest = max(PHASES, key=lambda p: last.get(f"time_{p}", 0.0))
    report_ratio(f"train step {model}: {total:.2f}s = {split}; slowest: {slowest}; "
                 f"{last['tokens_per_second']:.0f} generated tok/s; trained {last.get('trained_sequences', 0):.0f} seqs")
