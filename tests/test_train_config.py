"""Config tree: presets, YAML files, dotted overrides, and errors that name the key and what it accepts."""

from __future__ import annotations

import pytest
import yaml

from r3fast.cli import main
from r3fast.train.config import (
    DEFAULT_PRESET,
    TrainConfig,
    config_from_dict,
    load_config,
    preset_names,
    resumable_config,
    save_config,
    to_dict,
)
from r3fast.train.metrics import wilson_interval
from r3fast.train.optimizer import lr_factor


def test_presets_ship_and_validate():
    assert {"countdown-cpu", "countdown-qwen2.5-1.5b", "fncall-qwen2-1.5b"} <= set(preset_names())
    for name in preset_names():
        load_config(preset=name)
    bare = load_config()
    assert DEFAULT_PRESET == "countdown-cpu"
    assert bare.model.name == "smollm2-135m-instruct" and bare.task.name == "countdown-easy"


def test_precedence_defaults_preset_file_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  beta: 0.01\nrollout:\n  group_size: 6\n")
    cfg = load_config(path, "countdown-cpu", ["loss.beta=0.001", "optimizer.lr=1e-6", "model.name=123"])
    assert cfg.loss.beta == 0.001                  # override beats the file
    assert cfg.rollout.group_size == 6             # file beats the preset
    assert cfg.optimizer.lr == 1e-6                # YAML reads "1e-6" as a string; floats accept it
    assert cfg.model.name == "123"                 # a name that looks like a number stays a name
    assert cfg.schedule.steps == load_config(preset="countdown-cpu").schedule.steps  # preset beats defaults
    no_preset = load_config(path)                  # a file alone starts from the dataclass defaults
    assert no_preset.optimizer.lr == TrainConfig().optimizer.lr


@pytest.mark.parametrize("override,message", [
    ("loss.betaa=1", r"unknown config key 'loss.betaa'; allowed keys here: loss_type, beta"),
    ("nope.x=1", r"unknown config key 'nope'; allowed keys here: seed, .*model"),
    ("loss.loss_type=ppo", r"'loss.loss_type' must be one of grpo, bnpo, dr_grpo, dapo, cispo; got 'ppo'"),
    ("rollout.group_size=1", r"'rollout.group_size' must be >= 2"),
    ("rollout.group_size=2.5", r"'rollout.group_size' expects int, got 2.5"),
    ("deterministic=maybe", r"'deterministic' expects bool"),
    ("optimizer.lr=-1", r"'optimizer.lr' must be > 0"),
    ("rollout.top_p=0", r"'rollout.top_p' must be in \(0, 1\]"),
    ("loss=3", r"loss must be a mapping"),
    ("loss.beta", r"must look like section.key=value"),
    ("data.source=offline", r"'data.failures_path' must name a failure dataset"),
    ("schedule.warmup_steps=1000", r"'schedule.warmup_steps' must be <= schedule.steps"),
    ("stage.first_try_steps=1000", r"'stage.sft_steps' \+ 'stage.first_try_steps' must be <= schedule.steps \(40\).*lower the stages"),
    ("stage.sft_steps=30", r"got 30 \+ 30 .*lower the stages"),
    ("stage.sft_batch_size=0", r"'stage.sft_batch_size' must be >= 1"),
    ("stage.first_try_group_size=1", r"'stage.first_try_group_size' must be >= 2"),
    ("stage.first_try_temperature=0", r"'stage.first_try_temperature' must be > 0"),
])
def test_bad_values_name_the_key_and_what_it_accepts(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=[override])


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'nope'; presets: countdown-cpu"):
        load_config(preset="nope")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml.*not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("schedule:\n  stepz: 3\n")
    with pytest.raises(ValueError, match=r"config file .*wrong.yaml: unknown config key 'schedule.stepz'"):
        load_config(wrong)


def test_saved_config_round_trips_and_resume_takes_overrides(tmp_path):
    cfg = load_config(overrides=["loss.beta=0.001", "schedule.steps=7", "stage.first_try_steps=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert to_dict(config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))) == to_dict(cfg)
    resumed = resumable_config(tmp_path, ["schedule.steps=9"])
    assert resumed.schedule.steps == 9 and resumed.loss.beta == 0.001
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resumable_config(tmp_path / "nothing")


def test_cli_reports_config_errors_in_one_line(capsys):
    assert main(["train", "loss.loss_type=ppo"]) == 2
    err = capsys.readouterr().err
    assert "r3fast train: error: config key 'loss.loss_type' must be one of grpo" in err
    assert main(["train", "--resume", "/nonexistent/run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_lr_schedule_warmup_then_cosine_and_wilson_interval():
    f = lr_factor(steps=10, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    assert f(0) == pytest.approx(1 / 3) and f(1) == pytest.approx(2 / 3) and f(2) == pytest.approx(1.0)
    assert f(10) == pytest.approx(0.1) and f(6) == pytest.approx(0.55)
    constant = lr_factor(steps=100, warmup_steps=0, schedule="constant", min_lr_ratio=0.1)
    assert constant(0) == constant(50) == 1.0
    low, high = wilson_interval(0.5, 100)  # known value: 0.5 +- ~0.096
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


def test_stage_draws_fill_the_batch_outside_the_held_out_set():
    from r3fast.tasks import load_instances
    from r3fast.tasks.selection import draw_excluding

    held_out = {i.id for i in load_instances("countdown-easy", n=500, seed=1_000_003)}

    def draw(k, seed):
        return load_instances("countdown-easy", n=k, seed=seed)

    first = draw(64, 5)
    assert any(i.id in held_out for i in first)  # the small task space overlaps the held-out set
    picked = draw_excluding(draw, 64, 5, held_out)
    assert len(picked) == 64 and not any(i.id in held_out for i in picked)
    assert [i.id for i in picked] == [i.id for i in draw_excluding(draw, 64, 5, held_out)]  # seeded
    with pytest.raises(ValueError, match="lower data.eval_size"):
        draw_excluding(lambda k, seed: first, 3, 0, {i.id for i in first}, max_rounds=5)


def test_one_source_of_rollout_defaults():
    """ReflectConfig, the eval/failures flags and the training config agree, because they read one tree."""
    import argparse

    from r3fast.commands import eval as eval_command
    from r3fast.reflect import ReflectConfig
    from r3fast.train.config import RolloutConfig, TaskConfig

    rollout, reflect = RolloutConfig(), ReflectConfig()
    for name in ("group_size", "attempt_max_new_tokens", "attempt_temperature", "reflection_max_new_tokens",
                 "reflection_temperature", "retry_temperature", "retries_per_reflection", "top_p"):
        assert getattr(reflect, name) == getattr(rollout, name), name
    parser = argparse.ArgumentParser()
    eval_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", "--task", "countdown", "--out", "x.json"])
    assert (args.engine, args.batch_size, args.max_new_tokens) == \
        (rollout.engine, rollout.batch_size, rollout.attempt_max_new_tokens)
    assert (args.reflection_max_new_tokens, args.retry_temperature, args.retries_per_reflection,
            args.reflection_answer_tags, args.retry_layout) == \
        (rollout.reflection_max_new_tokens, rollout.retry_temperature, rollout.retries_per_reflection,
         rollout.reflection_answer_tags, TaskConfig().retry_layout)


def test_reflect_config_from_the_tree_maps_every_rollout_and_task_key():
    from r3fast.prompts import answer_tags
    from r3fast.reflect import ReflectConfig

    cfg = load_config(overrides=["rollout.group_size=6", "rollout.retries_per_reflection=3", "rollout.top_p=0.9",
                                 "rollout.retry_temperature=0.5", "rollout.reflection_answer_tags=ban",
                                 "task.retry_layout=fresh", "task.quote_attempt=false",
                                 "task.reflection_request=Why? {feedback}"])
    r = ReflectConfig.from_config(cfg.rollout, cfg.task, scale_rewards=False, seed=11)
    assert (r.group_size, r.retries_per_reflection, r.top_p, r.retry_temperature) == (6, 3, 0.9, 0.5)
    assert (r.attempt_max_new_tokens, r.reflection_max_new_tokens) == \
        (cfg.rollout.attempt_max_new_tokens, cfg.rollout.reflection_max_new_tokens)
    assert r.reflection_bad_words == answer_tags(cfg.task.name) and r.reflection_stop == ()
    assert (r.scale_rewards, r.seed) == (False, 11)
    assert r.prompts.retry_layout == "fresh" and not r.prompts.quote_attempt
    assert r.prompts.reflection_request == "Why? {feedback}"
