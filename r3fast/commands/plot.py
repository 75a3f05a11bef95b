"""`r3fast plot RUN_DIR`: PNG plots of a training run (reward, accuracies, KL, tokens/s)."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="write PNG plots of a training run's metrics")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `r3fast train`")
    p.set_defaults(run=run)


def run(args) -> int:
    from r3fast.train.plot import plot_run

    for path in plot_run(args.run_dir):
        print(path)
    return 0
