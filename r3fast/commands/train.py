"""`r3fast train`: GRPO on self-reflections (R3). Bare, it runs the countdown-cpu preset.

    r3fast train                                     # countdown-cpu, then a before/after evaluation
    r3fast train --preset countdown-qwen2.5-1.5b model.name=/models/Qwen2.5-1.5B-Instruct
    r3fast train --config run.yaml loss.beta=0.001 rollout.group_size=8
    r3fast train --resume runs/countdown-cpu-20260101-120000
    r3fast train --show-config --preset countdown-cpu   # every key, its value, default and meaning
    torchrun --nproc_per_node=2 -m r3fast train ...
"""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model with reflect-retry-reward GRPO",
                              description="Train with R3. Settings: a preset, a YAML file, then key=value overrides; "
                                          "--show-config lists every key with its value, default and meaning.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. loss.beta=0.001")
    p.add_argument("--config", help="YAML config file (applied over the preset, if one is given)")
    p.add_argument("--preset", help="built-in preset (default countdown-cpu when no --config is given)")
    p.add_argument("--run-dir", help="run folder for metrics and checkpoints (default runs/<preset>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest valid checkpoint, with its saved config (+ overrides)")
    p.add_argument("--show-config", action="store_true",
                   help="list every config key (dotted) with its effective value, its default and a one-line "
                        "comment, for these --preset/--config/--resume/KEY=VALUE settings; then exit, loading no model")
    p.add_argument("--verbose", action="store_true",
                   help="vLLM/transformers/torch logs on the terminal instead of RUN_DIR/engine.log "
                        "(same as logging.verbose=true)")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from r3fast.train.config import load_config, resumable_config

    overrides = [*args.overrides, *(["logging.verbose=true"] if args.verbose else [])]
    if args.resume:
        if args.config or args.preset:
            raise ValueError("--resume takes the run's saved config; give changes as KEY=VALUE overrides")
        if args.run_dir and args.run_dir != args.resume:
            raise ValueError("--resume RUN_DIR already names the run folder; drop --run-dir")
        cfg = resumable_config(args.resume, overrides)
        run_dir = args.resume
    else:
        cfg = load_config(args.config, args.preset, overrides)
        run_dir = args.run_dir
    if args.show_config:
        print(format_config(cfg))
        return 0
    from r3fast.train.trainer import train

    name = args.preset or (Path(args.config).stem if args.config else None)
    train(cfg, run_dir=run_dir, resume=bool(args.resume), name=name)
    return 0


def format_config(cfg) -> str:
    """One line per key: `key = value`, the default where the value differs, then `# comment`."""
    import json

    from r3fast.train.config import describe_config

    rows = []
    for key, value, default, comment in describe_config(cfg):
        setting = f"{key} = {json.dumps(value)}"
        if value != default:
            setting += f"  (default {json.dumps(default)})"
        rows.append((setting, comment))
    width = min(max(len(s) for s, _ in rows), 56)  # align the comments, unless a long value would push them far
    header = "# key = effective value  (default, where it differs)  # meaning; set any with KEY=VALUE"
    return "\n".join([header, *(f"{s:<{width}}  # {c}" for s, c in rows)])
