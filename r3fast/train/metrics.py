"""Where training metrics go: JSONL in the run folder always; TensorBoard when installed; W&B on request.

Nothing here needs a network unless logging.wandb is set.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import time
from collections import defaultdict
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
EVAL_BEFORE = "eval_before.json"  # held-out evaluation of the initial model, in the run folder
EVAL_AFTER = "eval_after.json"    # the same evaluation of the trained model


class PhaseTimer:
    """Wall seconds per named phase: `with timer("generation"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start


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
