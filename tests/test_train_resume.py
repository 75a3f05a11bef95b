"""kill -9 during training and during a checkpoint write; the resumed run ends bit-identical.

Runs the real trainer (tiny-random, HFEngine, reflect-retry pipeline with k = 2 sampled retries per
reflection, so rewards are graded) in subprocesses with deterministic settings; see train_run_script.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_run_script import STEPS

from r3fast.train.checkpoint import SLEEP_ENV, checkpoints, verify_checkpoint

SCRIPT = Path(__file__).with_name("train_run_script.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def start(run_dir: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(run_dir), *extra], env=env or ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return out


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {what}:\n{proc.stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}"))


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step-{STEPS:08d}" / "model" / "model.safetensors")


def test_sigkill_in_training_and_in_checkpoint_write_resumes_bit_identical(tmp_path):
    straight_dir, run_dir = tmp_path / "straight", tmp_path / "run"
    straight = start(straight_dir)  # the uninterrupted run, alongside (one thread each)

    # 1. kill -9 in the middle of training: after step 2 is logged
    proc = start(run_dir)
    wait_for(lambda: logged_steps(run_dir) >= 2, proc, "step 2")
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # 2. resume, and kill -9 while the next checkpoint is half written
    proc = start(run_dir, "--resume", env={**ENV, SLEEP_ENV: "120"})
    root = run_dir / "checkpoints"
    wait_for(lambda: any((p / "optimizer.pt").exists() for p in root.glob(".tmp-step-*")), proc,
             "a checkpoint write")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(root.glob(".tmp-step-*"))  # the partial write is there, under a name resume ignores

    # 3. resume to the end
    out = finish(start(run_dir, "--resume"))
    assert "resuming" in out
    assert not list(root.glob(".tmp-step-*"))
    finish(straight)

    # the uninterrupted run trained, and kept its last 2 checkpoints, valid
    rows = [json.loads(line) for line in (straight_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["stage"] for r in rows] == ["first_try"] + ["r3"] * (STEPS - 1)
    assert sum(r.get("trained_sequences", 0) for r in rows) > 0  # some groups carried signal
    assert [step for step, _ in checkpoints(straight_dir)] == [STEPS - 1, STEPS]
    assert all(verify_checkpoint(folder) is None for _, folder in checkpoints(straight_dir))
    from r3fast.models import materialize

    initial = load_file(materialize("tiny-random") / "model.safetensors")
    expected, got = final_weights(straight_dir), final_weights(run_dir)
    assert any(not torch.equal(expected[k], initial[k]) for k in expected)

    # the interrupted run ends bit-identical, each step logged once
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert [r["stage"] for r in rows] == ["first_try"] + ["r3"] * (STEPS - 1)


@pytest.mark.parametrize("override, message", [
    ("rollout.retries_per_reflection=0", "config key 'rollout.retries_per_reflection' must be >= 1"),
    ("rollout.retry_temperature=-0.1", "config key 'rollout.retry_temperature' must be >= 0"),
    ("rollout.reflection_temperature=-1", "config key 'rollout.reflection_temperature' must be > 0"),
    ("rollout.reflection_answer_tags=hide", "config key 'rollout.reflection_answer_tags' must be one of"),
    ("task.quote_attempt=false", "config key 'task.quote_attempt' can be false only with task.retry_layout=fresh"),
])
def test_bad_reflection_protocol_values_are_refused_before_anything_loads(override, message):
    from r3fast.train.config import load_config

    # a model name that cannot load: the config must fail first, on its own check
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(preset="countdown-cpu", overrides=["model.name=/nonexistent", "task.retry_layout=continue", override])


def test_interleaved_stage_spreads_the_first_try_steps():
    from r3fast.train.stages import is_warmup_step

    assert [s for s in range(1, 11) if is_warmup_step(s, first_try_steps=4, steps=10, interleave=False)] == \
        [1, 2, 3, 4]
    warm = [s for s in range(1, 11) if is_warmup_step(s, first_try_steps=4, steps=10, interleave=True)]
    assert warm == [1, 3, 6, 8]  # step 1 warms up: R3 needs an answering policy
    assert all(b - a <= 3 for a, b in zip([0, *warm], warm, strict=False))  # evenly spread, never 3 R3 steps in a row
