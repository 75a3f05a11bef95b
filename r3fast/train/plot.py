"""PNG plots of a training run: its metrics.jsonl over steps, and the held-out evaluation before and after
training with 95% Wilson intervals, the no-reflection control beside the second try (matplotlib, Agg: no
display needed)."""

from __future__ import annotations

import json
from pathlib import Path

from r3fast.train.metrics import EVAL_AFTER, EVAL_BEFORE, read_metrics, wilson_interval

# file name -> (title, [(metric key, legend label)])
PLOTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "reward.png": ("Batch reward (first-try stage: attempts; R3: retries)", [("reward_mean", "reward"),
                                                      ("groups_with_signal", "groups with signal")]),
    "accuracy.png": ("Accuracy on the training batch", [("first_try_accuracy", "first try"),
                                                        ("second_try_accuracy", "second try")]),
    "kl.png": ("KL to the reference (k3)", [("kl", "kl")]),
    "tokens_per_second.png": ("Throughput", [("tokens_per_second", "generated tokens/s")]),
    "loss.png": ("GRPO loss", [("loss", "loss")]),
    "sft_nll.png": ("Supervised stage: gold answers' negative log-likelihood per token", [("sft_nll", "nll")]),
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


CONTROL_KEY = "second_try_without_reflection_accuracy"  # absent from reports older than the control
# the held-out plot's bars: report key -> label
HELD_OUT_BARS = {"first_try_accuracy": "first try", "second_try_accuracy": "second try",
                 CONTROL_KEY: "second try,\nno reflection"}


def plot_held_out(run_dir: Path, path: Path, plt) -> Path | None:
    """Bars of first-try, second-try and no-reflection second-try accuracy before and after training,
    with Wilson intervals, and the reflection lift with its paired interval in the legend; None when
    the run has no held-out evaluation (data.eval_size=0, or a run still training)."""
    reports = {label: read_eval_report(Path(run_dir) / name)
               for label, name in (("before", EVAL_BEFORE), ("after", EVAL_AFTER))
               if (Path(run_dir) / name).is_file()}
    if not reports:
        return None
    keys = [k for k in HELD_OUT_BARS if all(k in values for _, values, _ in reports.values())]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / len(reports)
    for i, (label, (n, values, lift)) in enumerate(reports.items()):
        heights = [values[k] for k in keys]
        bounds = [wilson_interval(v, n) for v in heights]
        errors = [[v - low for v, (low, _) in zip(heights, bounds, strict=True)],
                  [high - v for v, (_, high) in zip(heights, bounds, strict=True)]]
        xs = [x + (i - (len(reports) - 1) / 2) * width for x in range(len(keys))]
        lift_text = "" if lift is None else f", lift {lift[0]:+.3f} [{lift[1]:+.3f}, {lift[2]:+.3f}]"
        ax.bar(xs, heights, width, yerr=errors, capsize=4, label=f"{label} (n={n}{lift_text})")
    ax.set_xticks(range(len(keys)), [HELD_OUT_BARS[k] for k in keys])
    ax.set_ylabel("accuracy")
    ax.set_title("Held-out accuracy, 95% Wilson intervals")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_eval_report(path: Path) -> tuple[int, dict[str, float], tuple[float, float, float] | None]:
    """(instances, {HELD_OUT_BARS key: accuracy}, (lift, low, high) or None) of an evaluation report;
    ValueError naming the file. Reports written before the no-reflection control lack its keys."""
    try:
        report = json.loads(path.read_text())
        n = int(report["counts"]["instances"])
        values = {k: float(report[k]) for k in HELD_OUT_BARS if k != CONTROL_KEY or k in report}
        lift = None
        if "reflection_lift" in report:
            low, high = report["reflection_lift_ci95"]
            lift = (float(report["reflection_lift"]), float(low), float(high))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an r3fast evaluation report: {exc!r}") from None
    if n < 1 or not all(0.0 <= v <= 1.0 for v in values.values()):
        raise ValueError(f"{path} holds {n} instances and accuracies {values}: expected n >= 1 and values in [0, 1]")
    return n, values, lift
