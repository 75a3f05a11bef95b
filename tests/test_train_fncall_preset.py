"""The `fncall-cpu` preset: it loads, declares BFCL as its held-out set, and trains 3 steps (one
supervised step, one first-try step, one R3 step) on the tiny-random model with the held-out
evaluation before and after."""

from __future__ import annotations

import json

import pytest
from markers import needs_bfcl

from r3fast.tasks.selection import task_instances, training_generator
from r3fast.train.config import load_config
from r3fast.train.trainer import train

TINY = [
    "model.name=tiny-random", "rollout.engine=hf", "threads=1", "data.eval_size=2", "data.prompts_per_step=2",
    "data.mining_batch=2", "schedule.steps=3", "schedule.warmup_steps=0", "stage.sft_steps=1",
    "stage.sft_batch_size=2", "stage.first_try_steps=1",
    "stage.first_try_group_size=2", "rollout.group_size=2", "rollout.attempt_max_new_tokens=4",
    "rollout.reflection_max_new_tokens=4", "checkpoint.every=0", "logging.progress=false",
    "logging.tensorboard=false",
]


def test_preset_trains_generated_calls_and_holds_out_bfcl():
    cfg = load_config(preset="fncall-cpu")
    assert (cfg.task.name, cfg.data.eval_task, cfg.data.eval_size) == ("fncall-synthetic", "bfcl", 137)
    assert cfg.model.name == "smollm2-135m-instruct" and cfg.model.device == "cpu"
    stages = cfg.stage  # imitation, then first-try GRPO, then R3
    assert 0 < stages.sft_steps and 0 < stages.first_try_steps and stages.sft_steps + stages.first_try_steps < cfg.schedule.steps
    assert "{feedback}" in cfg.task.reflection_request


def test_eval_task_needs_a_function_calling_task():
    with pytest.raises(ValueError, match="'data.eval_task'.*task.name must be a function-calling task"):
        load_config(preset="fncall-cpu", overrides=["task.name=countdown-easy"])
    with pytest.raises(ValueError, match="'data.eval_task' must be one of"):
        load_config(preset="fncall-cpu", overrides=["data.eval_task=xlam"])


@needs_bfcl
def test_data_loading_checks_disjointness_from_bfcl(monkeypatch):
    cfg = load_config(preset="fncall-cpu")
    heldout, training = task_instances(cfg.task.name, eval_task=cfg.data.eval_task, eval_size=cfg.data.eval_size,
                                       eval_seed=cfg.data.eval_seed)
    assert len(heldout) == 137 and {i.data["category"] for i in heldout} == {"simple_python"}
    assert training == []  # generated: streamed, each batch checked by training_generator
    generate = training_generator(cfg.task.name, cfg.data.eval_task)
    assert len(generate(16, 0)) == 16

    # a generator that drifted onto a BFCL tool is stopped, naming the tool
    import r3fast.tasks as tasks

    leaked = tasks.load_instances("bfcl")[:1]
    monkeypatch.setattr(tasks, "load_instances", lambda name, **kw: leaked)
    with pytest.raises(ValueError, match=rf"task 'fncall-synthetic' overlaps the held-out evaluation in .*"
                                         rf"{leaked[0].data['tools'][0]['name']}"):
        training_generator(cfg.task.name, cfg.data.eval_task)(1, 0)


@needs_bfcl
def test_preset_runs_its_three_stages_on_tiny_random(tmp_path):
    cfg = load_config(preset="fncall-cpu", overrides=TINY)
    summary = train(cfg, run_dir=tmp_path / "run")
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["stage"] for m in steps if "stage" in m] == ["sft", "first_try", "r3"]
    assert (tmp_path / "run" / "eval_before.json").is_file() or summary
