"""One R3 training step end to end, split by phase, so the slowest phase is visible.

    pytest benches/bench_train_step.py --benchmark-only -s

Runs `r3fast.train.trainer.train` for a few steps on the tiny random model and on SmolLM2-135M
(few tokens each), and reports the last step's wall time split into generation (mining, reflections,
retries), scoring (templating + verification + advantages), loss (forward/backward of the fused
loss), optimizer (clip + AdamW) and sync (weights into the engine), each as a share of the step.
A random model never solves Countdown, so on tiny-random the reward is a fixed stand-in rule
(even-length answers pass) to give the loss phase real work; SmolLM2 uses the real verifier.

test_shared_prefix_loss_phase compares the loss phase (grpo_update without the optimizer step)
with and without the shared-prefix forward, on SmolLM2-135M at the shapes of bare `r3fast train`:
one micro-batch of 8 sequences, a first-try group (G = 8, prompt 230 tokens, attempts of about
16) and two R3 groups (G = 4, context 300, reflections of about 40). Rounds alternate the two
paths; peak memory is each path's resident high-water mark in a fresh process, run as

    python benches/bench_train_step.py peak SHAPE shared|unshared
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _loss_peak_rss import status_mb  # benches/ is on sys.path: run as a script, or collected by pytest

from r3fast.tasks import get_task
from r3fast.train.config import load_config
from r3fast.train.trainer import train
from r3fast.verify import Verdict

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

    def judge_batch(self, instances, texts):
        return [Verdict("PASS" if len(t) % 2 == 0 else "ODD_LENGTH", "") for t in texts]


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


# (groups, context tokens, completion tokens (min, max)) of one micro-batch of 8
SHAPES = {"first-try": (1, 230, (12, 20)), "r3": (2, 300, (32, 40))}
ROUNDS = 3


def shape_samples(shape: str, vocab: int, seed: int = 0):
    from r3fast.episode import TrainingSample

    groups, context_length, (low, high) = SHAPES[shape]
    rng = random.Random(seed)
    size = 8 // groups
    out = []
    for _ in range(groups):
        context = [rng.randrange(100, vocab) for _ in range(context_length)]
        out += [TrainingSample(context, [rng.randrange(100, vocab) for _ in range(rng.randint(low, high))],
                               rng.uniform(-1, 1)) for _ in range(size)]
    return out


class NoStep(torch.optim.Optimizer):
    """Leaves the weights as they are: every round measures the same update."""

    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        pass


def loss_phase(model, samples, shared: bool) -> float:
    """Seconds of grpo_update's forwards and backwards (no optimizer step, no clipping)."""
    from r3fast.train.distributed import DistContext
    from r3fast.train.update import PolicyLoss, grpo_update

    begin = time.perf_counter()
    grpo_update(PolicyLoss(model), model, NoStep(model.parameters()), samples, loss_type="grpo", beta=0.0,
                eps_low=0.2, eps_high=0.2, num_iterations=1, micro_batch_size=8, old_logp_source="trainer",
                temperature=0.7, max_completion_length=48, max_grad_norm=0.0, pad_id=0, dist=DistContext(),
                shared_prefix=shared)
    return time.perf_counter() - begin


def peak_main(shape: str, mode: str) -> None:
    """Resident memory the loss phase adds at its peak, after the model and one warm-up update exist."""
    from r3fast.models import load

    torch.set_num_threads(1)
    model, tokenizer = load("smollm2-135m-instruct")
    samples = shape_samples(shape, len(tokenizer))
    # a tiny update loads the code and allocates gradients, touching little activation memory
    loss_phase(model, [dataclasses.replace(s, context_ids=s.context_ids[:8], completion_ids=s.completion_ids[:4])
                       for s in samples[:2]], mode == "shared")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    baseline = status_mb("VmRSS")
    loss_phase(model, samples, mode == "shared")
    print(json.dumps({"shape": shape, "mode": mode, "extra_mb": round(status_mb("VmHWM") - baseline, 1)}))


def peak_mb(shape: str, mode: str) -> float:
    out = subprocess.run([sys.executable, __file__, "peak", shape, mode], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).parent, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shared_prefix_loss_phase(benchmark, report_ratio, shape):
    from r3fast.models import load

    torch.set_num_threads(1)
    model, tokenizer = load("smollm2-135m-instruct")
    samples = shape_samples(shape, len(tokenizer))
    loss_phase(model, samples[:2], True)  # warm-up
    seconds = {True: [], False: []}

    def rounds():
        for _ in range(ROUNDS):
            for shared in (False, True):
                seconds[shared].append(loss_phase(model, samples, shared))

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    peak = {shared: peak_mb(shape, "shared" if shared else "unshared") for shared in (False, True)}
    plain, packed = statistics.median(seconds[False]), statistics.median(seconds[True])
    report_ratio(f"loss phase {shape} (8 seqs, SmolLM2-135M, 1 thread, median of {ROUNDS}): unshared {plain:.2f}s, "
                 f"shared {packed:.2f}s, {plain / packed:.2f}x (best rounds {min(seconds[False]) / min(seconds[True]):.2f}x); "
                 f"peak memory added: unshared {peak[False]:.0f} MB, shared {peak[True]:.0f} MB "
                 f"({peak[True] / peak[False]:.2f}x)")


if __name__ == "__main__" and sys.argv[1:2] == ["peak"]:
    peak_main(sys.argv[2], sys.argv[3])
