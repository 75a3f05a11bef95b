"""GRPO loss, forward + backward: naive torch, TRL's formulation, Liger's fused loss, and r3fast's.

    pytest benches/bench_loss.py --benchmark-only                 # small + Qwen2.5-0.5B sizes on CPU
    R3FAST_BENCH_LOSS_SIZES=small pytest benches/bench_loss.py --benchmark-only
    pytest benches/bench_loss.py --benchmark-only -m gpu          # Triton vs Liger on CUDA

Time comes from pytest-benchmark (the Qwen size runs one round: each takes about a minute on
two cores). Peak memory is measured in a fresh process per variant (_loss_peak_rss.py), above a
baseline that already holds the inputs. At the end, a table prints each variant's time and peak
as ratios to TRL's path and the peak as a multiple of the weight-gradient size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _loss_variants import SIZES, VARIANTS, WARMUP, clear_grads, make_inputs, make_variant_inputs

HERE = Path(__file__).resolve().parent
SIZE_NAMES = [s for s in os.environ.get("R3FAST_BENCH_LOSS_SIZES", "small,qwen").split(",") if s]
ROUNDS = {"small": 5, "qwen": 1}
# Each option's variant is compared with TRL's path under the same options (r3fast_tis with trl_tis).
BASELINE = {"r3fast_tis": "trl_tis", "r3fast_gspo": "trl_gspo", "trl_tis": "trl_tis", "trl_gspo": "trl_gspo"}
_results: dict[tuple[str, str], dict] = {}


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _peak_rss(variant: str, size_name: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    child = subprocess.run([sys.executable, str(HERE / "_loss_peak_rss.py"), variant, size_name],
                           env=env, capture_output=True, text=True, timeout=1200)
    if child.returncode != 0:
        raise RuntimeError(f"peak-RSS child for {variant}/{size_name} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", autouse=True)
def ratio_table(report_ratio):
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    yield
    for size_name in SIZE_NAMES:
        rows = {v: _results[(v, size_name)] for v in VARIANTS if (v, size_name) in _results}
        if not rows:
            continue
        grad_mb = SIZES[size_name].weight_grad_mb
        plain = rows.get("r3fast")
        report_ratio(f"GRPO loss fwd+bwd, {size_name} {SIZES[size_name]} (weight grad {grad_mb:.0f} MB); ratios vs "
                     "TRL's path with the same options, and vs plain r3fast")
        report_ratio(f"{'variant':<12} {'time s':>8} {'x TRL':>7} {'peak MB':>9} {'x TRL':>7} {'x wgrad':>8} "
                     f"{'t x r3fast':>10}")
        for v, r in rows.items():
            base = rows.get(BASELINE.get(v, "trl"))
            t_ratio = r["time_s"] / base["time_s"] if base else float("nan")
            m_ratio = r["extra_mb"] / base["extra_mb"] if base else float("nan")
            t_plain = r["time_s"] / plain["time_s"] if plain else float("nan")
            report_ratio(f"{v:<12} {r['time_s']:>8.3f} {t_ratio:>7.2f} {r['extra_mb']:>9.0f} {m_ratio:>7.2f} "
                         f"{r['extra_mb'] / grad_mb:>8.2f} {t_plain:>10.2f}")


@pytest.mark.parametrize("size_name", SIZE_NAMES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_loss_fwd_bwd_cpu(benchmark, variant, size_name):
    if variant.startswith("trl") and not _have("trl"):
        pytest.skip("trl is not installed (pip install 'r3fast[bench]')")
    if variant == "liger" and not _have("liger_kernel"):
        pytest.skip("liger-kernel is not installed (pip install 'r3fast[bench]')")
    run = VARIANTS[variant]
    run(make_variant_inputs(variant, WARMUP[size_name]))  # imports outside the timing
    inputs = make_variant_inputs(variant, SIZES[size_name])
    benchmark.group = f"grpo-loss-cpu-{size_name}"
    benchmark.pedantic(run, args=(inputs,), setup=lambda: clear_grads(inputs), rounds=ROUNDS[size_name],
                       iterations=1, warmup_rounds=0)
    time_s = benchmark.stats.stats.min
    inputs.clear()  # free the big tensors before the peak-memory child starts
    peak = _peak_rss(variant, size_name)
    benchmark.extra_info.update(peak_extra_mb=peak["extra_mb"], weight_grad_mb=peak["weight_grad_mb"])
    _results[(variant, size_name)] = {"time_s": time_s, "extra_mb": peak["extra_mb"]}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the Triton path needs one")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("variant", ["liger", "r3fast"])
def test_loss_fwd_bwd_cuda(benchmark, variant, dtype):
    if variant == "liger" and not _have("liger_kernel"):
        pytest.skip("liger-kernel is not installed")
    size = SIZES["qwen"]
    inputs = {k: v.to("cuda") for k, v in make_inputs(size).items()}
    for k in ("hidden", "weight"):
        inputs[k] = inputs[k].detach().to(dtype).requires_grad_()
    run = VARIANTS[variant]

    def step():
        run(inputs)
        torch.cuda.synchronize()

    step()
    clear_grads(inputs)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    peak_mb = (torch.cuda.max_memory_allocated() - before) / 1e6
    benchmark.group = f"grpo-loss-cuda-{dtype}"
    benchmark.extra_info.update(peak_extra_mb=round(peak_mb, 1))
    benchmark.pedantic(step, setup=lambda: clear_grads(inputs), rounds=10, iterations=1, warmup_rounds=1)
