"""benches/gpu_check.py on a machine without CUDA: the one-line refusal, and the plumbing of its stages.

The stages themselves need a GPU to mean anything; here they run at tiny shapes on CPU
(`--dry-run`), which proves that each runs in its own process, within its own time limit,
and lands in the JSON report whatever the others do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benches" / "gpu_check.py"
STAGES = ["environment", "build", "gpu_tests", "fused_loss", "train_steps"]


def gpu_check(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_without_cuda_it_says_so_in_one_line_and_exits_nonzero(tmp_path):
    done = gpu_check("--out", str(tmp_path), env={"CUDA_VISIBLE_DEVICES": ""})  # hides a GPU where there is one
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], lines
    assert not (tmp_path / "gpu_check.json").exists()


def test_a_stage_out_of_time_leaves_the_others_results(tmp_path):
    # Every stage but the build stopped at once: the build (in a dry run, an import) still reports.
    limits = [f"--limit={name}=0.001" for name in STAGES if name != "build"]
    done = gpu_check("--dry-run", "--out", str(tmp_path), *limits)
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(report["stages"]) == STAGES
    assert {n: e["status"] for n, e in report["stages"].items()} == {
        n: "ok" if n == "build" else "timeout" for n in STAGES}
    assert report["stages"]["build"]["result"]["native"].endswith(".so")
    assert "===== stage build" in (tmp_path / "gpu_check.log").read_text()
    assert done.stdout.strip().splitlines()[-1].startswith("gpu_check: 1/5 stages ok")


def test_bad_limits_are_refused_by_name(tmp_path):
    done = gpu_check("--dry-run", "--out", str(tmp_path), "--limit", "warp_drive=3")
    assert done.returncode == 2 and "--limit 'warp_drive=3'" in done.stderr


@pytest.mark.slow  # ~45 s on two busy cores; test_a_stage_out_of_time_leaves_the_others_results covers the driver
def test_dry_run_runs_every_stage_at_tiny_shapes(tmp_path):
    done = gpu_check("--dry-run", "--out", str(tmp_path))
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert done.returncode == 0, json.dumps(report, indent=1)[-3000:]
    stages = report["stages"]
    assert all(e["status"] == "ok" for e in stages.values())
    assert stages["environment"]["result"]["torch"] == torch.__version__
    loss = stages["fused_loss"]["result"]
    assert set(loss["variants"]) >= {"r3fast", "naive"} and "naive_time_over_r3fast" in loss["ratios"]
    for step in ("first_try_step", "r3_step"):
        result = stages["train_steps"]["result"][step]
        assert result["generated_tokens"] > 0
        assert {"generation", "old_logprobs", "loss"} <= set(result["seconds"])  # every phase reported
