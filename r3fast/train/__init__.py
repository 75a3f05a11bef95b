"""Training: GRPO over self-reflections (R3), as `r3fast train` runs it.

    from r3fast.train import load_config, train
    cfg = load_config(preset="countdown-cpu", overrides=["schedule.steps=10", "stage.first_try_steps=5"])
    summary = train(cfg, run_dir="runs/try")

Modules: config (the config tree, presets/), trainer (the loop), update (one GRPO update on any
(context, completion, advantage) batch), pool (failed prompts), checkpoint, distributed,
metrics, plot.
"""

from r3fast.train.config import TrainConfig, load_config
from r3fast.train.trainer import train

__all__ = ["TrainConfig", "load_config", "train"]
