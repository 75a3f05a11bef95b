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
