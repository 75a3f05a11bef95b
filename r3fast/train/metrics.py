"""Where training metrics go: JSONL in the run folder always; TensorBoard when installed; W&B on request.

Nothing here needs a network unless logging.wandb is set.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
EVAL_BEFORE = "eval_before.json"  # held-out evaluation of the initial model, in the run folder
EVAL_AFTER = "eval_after.json"    # the same evaluation of the trained model


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Rows of metrics.jsonl; a torn last line (killed mid-write) is ignored."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a training run folder?")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


class MetricsLogger:
    """Writes on the main rank only; other ranks get a logger that drops everything."""

    def __init__(self, run_dir: str | Path, *, enabled: bool, resume_step: int | None = None,
                 tensorboard: bool = True, wandb: bool = False, wandb_project: str = "r3fast",
                 config: dict | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self._tb = self._wandb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            # Steps after the checkpoint will be redone: drop their rows so each step appears once.
            kept = [r for r in read_metrics(run_dir) if r.get("step", math.inf) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")
        if tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if wandb:
            if importlib.util.find_spec("wandb") is None:
                raise ValueError("logging.wandb=true needs the wandb package (pip install wandb)")
            import wandb as wandb_module

            self._wandb = wandb_module.init(project=wandb_project, dir=str(run_dir), config=config,
                                            resume="allow")

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, **values}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion p out of n (95% at z=1.96); it stays inside [0, 1]."""
    if n == 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 (or 1) the bound is exactly 0 (or 1); rounding would leave ~1e-17 and exclude p itself
    low = 0.0 if p <= 0 else max(0.0, centre - half)
    high = 1.0 if p >= 1 else min(1.0, centre + half)
    return low, high


def paired_difference_interval(both: int, first_only: int, second_only: int, neither: int,
                               z: float = 1.96) -> tuple[float, float]:
    """95% interval (at z=1.96) of p1 - p2 for two proportions measured on the same n items:
    Newcombe's hybrid score interval for paired data (method 10 of Newcombe 1998, no continuity
    correction). Each item counts in one cell: passed under both conditions, under the first only,
    under the second only, or under neither. Built from the two Wilson intervals and the phi
    correlation of the 2x2 table, so it stays inside [-1, 1] and is not degenerate at 0 or n."""
    cells = (both, first_only, second_only, neither)
    if any(c < 0 for c in cells):
        raise ValueError(f"paired counts must be >= 0, got {cells}")
    n = sum(cells)
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    l1, u1 = wilson_interval(p1, n, z)
    l2, u2 = wilson_interval(p2, n, z)
    margins = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    phi = (both * neither - first_only * second_only) / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, p1 - p2 - delta), min(1.0, p1 - p2 + epsilon)


# -- one training step's metrics, over all data ranks ---------------------------------------------


def first_try_metrics(batch, generation: dict, dist) -> dict:
    """A first-try stage step: the sampled attempts' pass rate is its reward and its accuracy.
    `generation`: phase -> GenerationStats of this step."""
    import torch

    rewards = [s.reward for s in batch.samples]
    counts = dist.all_reduce_data_sum(torch.tensor(
        [len(rewards), sum(rewards), batch.groups, batch.flat_groups], dtype=torch.float64)).tolist()
    n, reward_sum, n_groups, n_flat = counts
    return {
        "stage": "first_try",
        "reward_mean": reward_sum / n if n else 0.0,
        "groups_with_signal": (n_groups - n_flat) / n_groups if n_groups else 0.0,
        "first_try_accuracy": reward_sum / n if n else None,  # sampled at the stage's temperature
        "second_try_accuracy": None,
        **group_counts(n_groups, n_flat),
        **generated_tokens(generation, dist),
    }


def r3_metrics(result, generation: dict, attempted: int, first_passed: int, dist) -> dict:
    """An R3 step: rewards of retries, groups with signal, first/second try of the mined attempts.
    `generation`: phase -> GenerationStats of this step, besides the rollout's own (result.stats)."""
    import torch

    counts = dist.all_reduce_data_sum(torch.tensor([
        len(result.episodes), sum(e.reward for e in result.episodes), result.failed, len(result.flat_groups),
        result.retry_passed_groups, sum(len(e.completion_ids) for e in result.episodes), attempted, first_passed,
    ], dtype=torch.float64)).tolist()
    n_eps, reward_sum, n_groups, n_flat, n_rescued, refl_tokens, attempted, first_passed = counts
    first = first_passed / attempted if attempted else None
    rescued = n_rescued / n_groups if n_groups else 0.0
    return {
        "stage": "r3",
        "reward_mean": reward_sum / n_eps if n_eps else 0.0,
        "groups_with_signal": (n_groups - n_flat) / n_groups if n_groups else 0.0,
        "first_try_accuracy": first,
        # first try, or a failure rescued by one of its group's retries (as `r3fast eval` counts it)
        "second_try_accuracy": None if first is None else first + (1 - first) * rescued,
        "rescued_fraction": rescued,
        "reflection_length": refl_tokens / n_eps if n_eps else 0.0,
        **group_counts(n_groups, n_flat),
        **generated_tokens({**generation, **result.stats}, dist),
    }


def group_counts(groups: float, flat: float) -> dict:
    """Groups of the step: those with signal train the policy; flat ones (all rewards equal) are
    dropped from the compute, though they still count in the loss's normalisation."""
    return {"groups": groups, "groups_trained": groups - flat, "groups_dropped": flat}


def generated_tokens(generation: dict, dist) -> dict:
    """Tokens generated this step, in all and per phase (mining, first_try, attempt, reflection, retry)."""
    import torch

    phases = sorted(generation)
    counts = dist.all_reduce_data_sum(torch.tensor([generation[p].generated_tokens for p in phases],
                                                   dtype=torch.float64)).tolist()
    return {"generated_tokens": sum(counts), **{f"generated_tokens_{p}": c for p, c in zip(phases, counts, strict=True)}}


# -- printing --------------------------------------------------------------------------------------


def format_step(step: int, steps: int, m: dict) -> str:
    first = "-" if m["first_try_accuracy"] is None else f"{m['first_try_accuracy']:.2f}"
    times = " ".join(f"{k[5:]}={m[k]:.1f}s" for k in m if k.startswith("time_") and k != "time_step")
    if m.get("stage") == "sft":  # no rollout: the gold answers' likelihood is the step's news
        return (f"step {step}/{steps}  supervised stage  nll {m['sft_nll']:.3f}  grad {m['grad_norm']:.3f}  "
                f"{m['sft_sequences']:.0f} answers  [{times}]")
    # the loss of an on-policy step is a mean of advantages around 0: its size is in the exponent
    update = f"loss {m['loss']:+.2e}  grad {m['grad_norm']:.3f}" if "loss" in m else "no update"
    stage = "first-try stage  " if m.get("stage") == "first_try" else ""
    refl = f"refl {m['reflection_length']:.0f} tok  " if "reflection_length" in m else ""
    return (f"step {step}/{steps}  {stage}reward {m['reward_mean']:.2f}  signal {m['groups_with_signal']:.2f}  "
            f"first {first}  {update}  kl {m.get('kl', 0.0):.4f}  {refl}"
            f"{m['tokens_per_second']:.0f} tok/s  [{times}]")


def progress_fields(m: dict) -> dict[str, str]:
    """What the progress bar shows after a step: reward, groups with signal, first try; nll when supervised."""
    if m.get("stage") == "sft":
        return {"stage": "sft", "nll": f"{m['sft_nll']:.3f}"}
    first = m["first_try_accuracy"]
    return {"reward": f"{m['reward_mean']:.2f}", "signal": f"{m['groups_with_signal']:.2f}",
            "first": "-" if first is None else f"{first:.2f}"}


def format_before_after(before: dict | None, after: dict, n: int) -> str:
    """The held-out table of a run: first try, second try, the control and the lift, with intervals."""
    rows = [("", "first try", "second try", "second try, no reflection", "reflection lift", "rescued with / without")]
    for label, report in (("before", before), ("after", after)):
        if report is None:
            continue
        c = report["counts"]
        rows.append((label, _accuracy(report, "first_try_accuracy", n), _accuracy(report, "second_try_accuracy", n),
                     _accuracy(report, "second_try_without_reflection_accuracy", n), format_lift(report),
                     f"{c['retry_passed']} / {c['retry_without_reflection_passed']} of {c['first_try_failed']}"))
    lines = [f"held-out accuracy ({n} instances, 95% Wilson intervals; lift: paired 95% interval)"]
    lines += [f"  {r[0]:<7}{r[1]:<24}{r[2]:<24}{r[3]:<27}{r[4]:<26}{r[5]}" for r in rows]
    return "\n".join(lines)


def format_lift(report: dict) -> str:
    """`+0.012 [-0.004, 0.030]`: the reflection lift and its paired 95% interval."""
    low, high = report["reflection_lift_ci95"]
    return f"{report['reflection_lift']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _accuracy(report: dict, key: str, n: int) -> str:
    p = report[key]
    low, high = wilson_interval(p, n)
    return f"{p:.3f} [{low:.3f}, {high:.3f}]"
