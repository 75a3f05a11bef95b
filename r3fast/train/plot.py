"""PNG plots of a training run: its metrics.jsonl over steps, and the held-out evaluation before and after
training with 95% Wilson intervals (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

from r3fast.train.metrics import EVAL_AFTER, EVAL_BEFORE, read_metrics, wilson_interval

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
    held_out = plot_held_out(run_dir, out_dir / "held_out.png", plt)
    return written + ([held_out] if held_out else [])


def plot_held_out(run_dir: Path, path: Path, plt) -> Path | None:
    """Bars of first- and second-try accuracy before and after training, with Wilson intervals; None
    when the run has no held-out evaluation (data.eval_size=0, or a run still training)."""
    reports = {label: read_eval_report(Path(run_dir) / name)
               for label, name in (("before", EVAL_BEFORE), ("after", EVAL_AFTER))
               if (Path(run_dir) / name).is_file()}
    if not reports:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(reports)
    for i, (label, (n, values)) in enumerate(reports.items()):
        bounds = [wilson_interval(v, n) for v in values]
        errors = [[v - low for v, (low, _) in zip(values, bounds, strict=True)],
                  [high - v for v, (_, high) in zip(values, bounds, strict=True)]]
        xs = [x + (i - (len(reports) - 1) / 2) * width for x in range(2)]
        ax.bar(xs, values, width, yerr=errors, capsize=4, label=f"{label} (n={n})")
    ax.set_xticks(range(2), ["first try", "second try"])
    ax.set_ylabel("accuracy")
    ax.set_title("Held-out accuracy, 95% Wilson intervals")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_eval_report(path: Path) -> tuple[int, list[float]]:
    """(instances, [first-try, second-try accuracy]) of an evaluation report; ValueError naming the file."""
    try:
        report = json.loads(path.read_text())
        n = int(report["counts"]["instances"])
        values = [float(report["first_try_accuracy"]), float(report["second_try_accuracy"])]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an r3fast evaluation report: {exc!r}") from None
    if n < 1 or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"{path} holds {n} instances and accuracies {values}: expected n >= 1 and values in [0, 1]")
    return n, values
