"""The training loop's refactors change no number: a 3-step tiny-model run (first-try stage, then two R3
steps with k = 2 graded retries; tests/train_run_script.py) matches the run recorded before them.

The reference (tests/data/train_3step_reference.json) was written from the trainer as of commit a98c17e,
before the loop was split into state, step and helpers. On that machine the new run's weights are
bit-identical (same sha256); here every logged metric and every weight tensor's sums must agree to
rounding, so a CPU with other vector units does not fail a run that is the same computation.

Write a new reference (only when a change is meant to alter training):
    python tests/test_train_unchanged.py RUN_DIR   # RUN_DIR from: python tests/train_run_script.py RUN_DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_run_script import STEPS

SCRIPT = Path(__file__).with_name("train_run_script.py")
REFERENCE = Path(__file__).parent / "data" / "train_3step_reference.json"
TIMING = ("time_", "tokens_per_second")  # wall-clock: differs from run to run


def summarise(run_dir: Path) -> dict:
    """Every logged metric but wall-clock ones, and per weight tensor its sha256, sum and absolute sum."""
    import torch
    from safetensors.torch import load_file

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]
    weights = load_file(run_dir / "checkpoints" / f"step-{STEPS:08d}" / "model" / "model.safetensors")
    tensors = {name: {"sha256": hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest(),
                      "sum": t.double().sum().item(), "abs_sum": t.double().abs().sum().item()}
               for name, t in sorted(weights.items()) if t.dtype in (torch.float32, torch.float64)}
    return {"metrics": metrics, "weights": tensors}


def test_a_three_step_run_matches_the_recorded_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    now, then = summarise(tmp_path / "run"), json.loads(REFERENCE.read_text())
    assert len(now["metrics"]) == len(then["metrics"]) == STEPS
    for new, old in zip(now["metrics"], then["metrics"], strict=True):
        for key, value in old.items():  # keys added since may appear; none may go or change
            assert key in new, f"step {old['step']}: metric {key!r} is gone"
            expected = pytest.approx(value, rel=1e-6, abs=1e-9) if isinstance(value, float) else value
            assert new[key] == expected, f"step {old['step']}: {key}"
    assert now["weights"].keys() == then["weights"].keys()
    for name, old in then["weights"].items():
        new = now["weights"][name]
        assert new["sum"] == pytest.approx(old["sum"], rel=1e-6, abs=1e-6), name
        assert new["abs_sum"] == pytest.approx(old["abs_sum"], rel=1e-7), name


if __name__ == "__main__":
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(summarise(Path(sys.argv[1])), indent=1) + "\n")
