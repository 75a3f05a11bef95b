"""PNG plots of a training run from its metrics.jsonl (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

from r3fast.train.metrics import read_metrics

# file name -> (title, [(metric key, legend label)])
PLOTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "reward.png": ("Reward of retries (batch mean)", [("reward_mean", "reward"),
                                                      ("groups_with_signal", "groups with signal")]),
    "accuracy.png": ("Accuracy on the training batch", [("first_try_accuracy", "first try"),
                                                        ("second_try_accuracy", "second try")]),
    "kl.png": ("KL to the reference (k3)", [("kl", "kl")]),
    "tokens_per_second.png": ("Throughput", [("tokens_per_second", "generated tokens/s")]),
    "loss.png": ("GRPO loss", [("loss", "loss")]),
}


def plot_run(run_dir: str | Path) -> list[Path]:
    """Writes RUN_DIR/plots/*.png for every plot with data; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(run_dir) if "step" in r]
    if not rows:
        raise ValueError(f"{Path(run_dir) / 'metrics.jsonl'} holds no training steps to plot")
    by_step = {r["step"]: r for r in rows}  # a resumed run may have logged a step twice: the last wins
    steps = sorted(by_step)
    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    for filename, (title, series) in PLOTS.items():
        lines = []
        for key, label in series:
            points = [(s, by_step[s][key]) for s in steps if isinstance(by_step[s].get(key), (int, float))]
            if points:
                lines.append((label, points))
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, points in lines:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2, label=label)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
