"""What a run leaves behind: metrics rows whose counts add up, and no checkpoint with checkpoint.every=0."""

from __future__ import annotations

import json

import pytest
from train_run_script import OVERRIDES, ParityTask

from r3fast.train.config import load_config
from r3fast.train.trainer import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("records") / "run"
    overrides = [*OVERRIDES, "checkpoint.every=0", "schedule.steps=2"]
    train(load_config(preset="countdown-cpu", overrides=overrides), run_dir=run_dir, task=ParityTask())
    return run_dir, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_checkpoint_every_zero_writes_no_checkpoint(run):
    run_dir, _ = run
    assert not (run_dir / "checkpoints").exists()
    assert (run_dir / "summary.json").is_file() and (run_dir / "engine.log").is_file()


def test_each_step_records_its_groups_and_generated_tokens(run):
    _, rows = run
    assert [r["stage"] for r in rows] == ["first_try", "r3"]
    for r in rows:
        assert r["groups"] == r["groups_trained"] + r["groups_dropped"] > 0
        assert r["groups_with_signal"] == pytest.approx(r["groups_trained"] / r["groups"])
        phases = {k[len("generated_tokens_"):]: v for k, v in r.items() if k.startswith("generated_tokens_")}
        assert r["generated_tokens"] == sum(phases.values()) > 0
        assert {"time_generation", "time_scoring", "time_loss", "time_sync", "time_step"} <= set(r)
    first_try, r3 = rows
    assert {"generated_tokens_mining", "generated_tokens_reflection", "generated_tokens_retry"} <= set(r3)
    # the warm-up stage: 2 tasks, 3 sampled attempts each (train_run_script's settings)
    assert first_try["groups"] == 2 and first_try["generated_tokens"] == first_try["generated_tokens_first_try"]
    # R3 trains on the reflections only: their tokens are the trained span
    assert r3["trained_tokens"] <= r3["generated_tokens_reflection"]
