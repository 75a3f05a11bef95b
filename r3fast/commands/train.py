"""`r3fast train`: GRPO on self-reflections (R3). Bare, it runs the countdown-cpu preset.

    r3fast train                                     # countdown-cpu, then a before/after evaluation
    r3fast train --preset countdown-qwen2.5-1.5b model.name=/models/Qwen2.5-1.5B-Instruct
    r3fast train --config run.yaml loss.beta=0.001 rollout.group_size=8
    r3fast train --resume runs/countdown-cpu-20260101-120000
    torchrun --nproc_per_node=2 -m r3fast train ...
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model with reflect-retry-reward GRPO",
                              description="Train with R3. Settings: a preset, a YAML file, then key=value overrides.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. loss.beta=0.001")
    p.add_argument("--config", help="YAML config file (applied over the preset, if one is given)")
    p.add_argument("--preset", help="built-in preset (default countdown-cpu when no --config is given)")
    p.add_argument("--run-dir", help="run folder for metrics and checkpoints (default runs/<preset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest valid checkpoint, with its saved config (+ overrides)")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from r3fast.train.config import load_config
    from r3fast.train.trainer import resumable_config, train

    if args.resume:
        if args.config or args.preset:
            raise ValueError("--resume takes the run's saved config; give changes as KEY=VALUE overrides")
        if args.run_dir and args.run_dir != args.resume:
            raise ValueError("--resume RUN_DIR already names the run folder; drop --run-dir")
        cfg = resumable_config(args.resume, args.overrides)
        run_dir = args.resume
    else:
        cfg = load_config(args.config, args.preset, args.overrides)
        run_dir = args.run_dir
    name = args.preset or (Path(args.config).stem if args.config else None)
    train(cfg, run_dir=run_dir, resume=bool(args.resume), name=name)
    return 0
