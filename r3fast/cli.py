"""`r3fast` command line: one subcommand per module in r3fast/commands/.

Each command module exposes `add_parser(subparsers)` and keeps heavy imports (torch,
transformers, vllm) inside its run function, so `r3fast --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in `r3fast --help`.
COMMAND_MODULES = [
    "r3fast.commands.env",
    "r3fast.commands.eval",
    "r3fast.commands.failures",
    "r3fast.commands.train",
    "r3fast.commands.plot",
]


def build_parser() -> argparse.ArgumentParser:
    from r3fast import __version__

    parser = argparse.ArgumentParser(
        prog="r3fast",
        description="Reflect, Retry, Reward: GRPO on self-reflections with binary rewards.",
    )
    parser.add_argument("--version", action="version", version=f"r3fast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        # Bad input is the user's to fix: one clear line, no traceback.
        print(f"r3fast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
