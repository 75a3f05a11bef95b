"""Training: GRPO over self-reflections (R3), as `r3fast train` runs it.

    from r3fast.train import load_config, train
    cfg = load_config(preset="countdown-cpu", overrides=["schedule.steps=10", "stage.first_try_steps=5"])
    summary = train(cfg, run_dir="runs/try")

Modules: config (the config tree, presets/, resume), trainer (the loop), state (what a run holds and
checkpoints), stages (which stage a step is), sft (the supervised stage's batches), warmup (the
first-try stage's batches), update (one GRPO update on any batch of
TrainingSamples), optimizer (AdamW and the LR schedule), pool (failed prompts), checkpoint,
distributed, torch_setup, metrics, plot.
"""

from __future__ import annotations

__all__ = ["TrainConfig", "load_config", "train"]


def __getattr__(name: str):
    # Lazy: the rollout code reads its defaults from train.config, which must not pull in the trainer.
    if name in ("TrainConfig", "load_config"):
        from r3fast.train import config

        return getattr(config, name)
    if name == "train":
        from r3fast.train.trainer import train

        return train
    raise AttributeError(f"module 'r3fast.train' has no attribute {name!r}")
